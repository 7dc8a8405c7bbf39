"""Builds genengine._C (C++/pybind11, CPU kernels) and, where nvcc is found, genengine._cuda.

Environment switches:
  GENENGINE_CUDA=0|1    skip / require the CUDA extension (default: build it when nvcc is found)
  GENENGINE_NATIVE=1    build the CPU kernels for this machine (-march=native) instead of baseline
                        x86-64 with a run-time-dispatched Haswell (AVX2) clone of the hot loops
  GENENGINE_CUDA_ARCHS  override the CUDA targets, e.g. "80;90a" (default: sm_80, sm_90a + PTX 80)
  GENENGINE_BUILD_JOBS  parallel compiler processes (default: one per CPU; pip install -e . passes no -j)
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"
# one compiler process per CPU for the C++ sources (serial, the build took ~9 of CI's ~14 minutes)
JOBS = int(os.environ.get("GENENGINE_BUILD_JOBS", "0") or 0) or os.cpu_count() or 1
ParallelCompile(default=JOBS).install()


def _rel(paths):
    return sorted(str(p.relative_to(ROOT)) for p in paths)


def _flag(name):
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    return value not in ("0", "false", "no", "off")


NATIVE = bool(_flag("GENENGINE_NATIVE"))
CXX_FLAGS = ["-O3", "-std=c++17", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden", "-pthread"]
if NATIVE:
    CXX_FLAGS += ["-march=native", "-DGE_NATIVE"]
_shown_flags = " ".join(f for f in CXX_FLAGS if not f.startswith("-DGE_"))
CXX_FLAGS.append(f'-DGE_BUILD_FLAGS="{_shown_flags}"')


def _find_nvcc():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _cuda_home(nvcc):
    return Path(os.path.realpath(nvcc)).parent.parent


def _cuda_gencode():
    archs = os.environ.get("GENENGINE_CUDA_ARCHS", "80;90a").replace(",", ";").split(";")
    flags = []
    for arch in filter(None, (a.strip() for a in archs)):
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    # PTX for the oldest target, so newer GPUs can still JIT the kernels
    oldest = sorted(a for a in archs if a.strip())[0].rstrip("a")
    flags += ["-gencode", f"arch=compute_{oldest},code=compute_{oldest}"]
    shown = ",".join(f"sm_{a.strip()}" for a in archs if a.strip()) + f",compute_{oldest}"
    return flags + [f'-DGE_CUDA_ARCHS="{shown}"']


class BuildExt(build_ext):
    """Compiles .cu sources of an extension with nvcc, everything else with the C++ compiler."""

    def build_extension(self, ext):
        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        if cu_sources:
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            nvcc = ext.nvcc
            obj_dir = Path(self.build_temp) / "cuda"
            obj_dir.mkdir(parents=True, exist_ok=True)
            objects, stale = [], []
            for src in cu_sources:
                obj = obj_dir / (Path(src).stem + ".o")
                cmd = [nvcc, "-c", src, "-o", str(obj), "-O3", "-std=c++17",
                       "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden", f"-I{CSRC}",
                       "-lineinfo", *_cuda_gencode()]
                # rebuild when a source or header is newer, or the command line changed
                stamp = obj.with_suffix(".cmd")
                deps = [ROOT / src, *CSRC.glob("common/*.h"), *CSRC.glob("cuda/*.cuh")]
                if (not obj.exists() or not stamp.exists() or stamp.read_text() != " ".join(cmd)
                        or obj.stat().st_mtime < max(p.stat().st_mtime for p in deps)):
                    stale.append((cmd, stamp))
                objects.append(str(obj))

            def compile_one(job):
                cmd, stamp = job
                print(" ".join(cmd), flush=True)
                subprocess.check_call(cmd, cwd=ROOT)
                stamp.write_text(" ".join(cmd))

            with ThreadPoolExecutor(max_workers=JOBS) as pool:
                list(pool.map(compile_one, stale))  # re-raises the first failure
            ext.extra_objects = objects + list(ext.extra_objects or [])
            ext.depends = list(ext.depends or []) + objects  # relink when an object was rebuilt
        super().build_extension(ext)


ext_modules = [
    Pybind11Extension(
        "genengine._C",
        sources=_rel([CSRC / "bindings.cpp", *CSRC.glob("cpu/*.cpp")]),
        depends=_rel([*CSRC.glob("common/*.h"), *CSRC.glob("cpu/*.h")]),
        include_dirs=[str(CSRC)],
        extra_compile_args=CXX_FLAGS,
        extra_link_args=["-pthread"],
        cxx_std=17,
    )
]

_cuda_wanted = _flag("GENENGINE_CUDA")
_nvcc = _find_nvcc() if _cuda_wanted is not False else None
if _cuda_wanted and not _nvcc:
    sys.exit("GENENGINE_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
if _nvcc and list(CSRC.glob("cuda/*.cu")):
    cuda_home = _cuda_home(_nvcc)
    lib_dirs = [str(p) for p in (cuda_home / "lib64", cuda_home / "targets/x86_64-linux/lib") if p.exists()]
    cuda_ext = Pybind11Extension(
        "genengine._cuda",
        sources=_rel([CSRC / "bindings_cuda.cpp", *CSRC.glob("cuda/*.cu"), *CSRC.glob("cuda/*_bind.cpp")]),
        depends=_rel([*CSRC.glob("common/*.h"), *CSRC.glob("cuda/*.cuh")]),
        include_dirs=[str(CSRC), str(cuda_home / "include")],
        library_dirs=lib_dirs,
        # static cudart: the module loads without a driver; libcuda is only opened on first use
        libraries=["cudart_static", "dl", "rt"],
        extra_compile_args=["-O2", "-std=c++17", "-fvisibility=hidden"],
        extra_link_args=["-pthread"],
        cxx_std=17,
    )
    cuda_ext.nvcc = _nvcc
    ext_modules.append(cuda_ext)

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    packages=["genengine", "genengine.ops", "genengine.reference", "genengine.bench", "genengine.kernels", "genengine.diffusion",
              "genengine.models"],
    package_dir={"genengine.kernels": "kernels"},
)
