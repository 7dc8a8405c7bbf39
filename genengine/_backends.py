"""Backend discovery and selection.

Four backends, as DESIGN.md specifies:
  torch   the plain-PyTorch reference, on every device and dtype (float64 included)
  cpp     genengine._C, CPU tensors
  triton  genengine.kernels, CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)
  cuda    genengine._cuda, CUDA tensors

`backend="auto"` picks the fastest available backend for the tensors' device; a name (argument, or
the GENENGINE_BACKEND environment variable) forces one, and an unavailable forced backend raises
BackendUnavailableError instead of falling back silently.
"""

from __future__ import annotations

import functools
import importlib
import os

BACKENDS = ("torch", "cpp", "triton", "cuda")
KERNEL_DTYPES = ("float32", "bfloat16", "float16")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here."""


def _import_cpp():
    try:
        from genengine import _C
    except ImportError as e:  # not built (e.g. a source tree without build_ext)
        return e
    import torch

    _C.set_num_threads(max(1, torch.get_num_threads()))  # follow torch's thread setting
    return _C


# loaded at import so that nothing on the dispatch path imports or calls torch (torch.compile
# traces the dispatch code)
_CPP = _import_cpp()


def load_cpp():
    """The CPU extension module, or the ImportError that prevented loading it."""
    return _CPP


@functools.cache
def load_cuda():
    """The CUDA extension module if it was built and a GPU is usable, else the reason why not."""
    try:
        from genengine import _cuda
    except ImportError as e:
        return ImportError(f"genengine._cuda was not built or does not load ({e})")
    try:
        count = _cuda.device_count()
    except Exception as e:  # defensive: the module must never break `import genengine`
        return RuntimeError(f"genengine._cuda cannot query devices ({e})")
    if count <= 0:
        return RuntimeError("genengine._cuda is built but no CUDA device/driver is present")
    return _cuda


def cuda_built():
    return importlib.util.find_spec("genengine._cuda") is not None


def triton_interpret():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _import_triton():
    try:
        import triton  # noqa: F401
    except Exception as e:
        return e
    return None


def load_kernels(name):
    """Imports genengine.kernels.<name> (Triton); the caller has checked availability."""
    return importlib.import_module(f"genengine.kernels.{name}")


_reasons = {}


def unavailable_reason(backend, device_type):
    """None when `backend` can run on tensors of `device_type` here, else a sentence saying why not."""
    key = (backend, device_type, triton_interpret())
    if key not in _reasons:
        _reasons[key] = _unavailable_reason(backend, device_type)
    return _reasons[key]


def _unavailable_reason(backend, device_type):
    if backend == "torch":
        if device_type == "cuda":
            import torch

            return None if torch.cuda.is_available() else "torch sees no CUDA device"
        return None
    if backend == "cpp":
        if device_type != "cpu":
            return f"the cpp backend runs on CPU tensors, these are on {device_type}"
        mod = load_cpp()
        return None if not isinstance(mod, Exception) else f"genengine._C is not built ({mod})"
    if backend == "triton":
        err = _import_triton()
        if err is not None:
            return f"triton is not installed ({err}); pip install triton"
        if device_type == "cuda":
            import torch

            return None if torch.cuda.is_available() else "torch sees no CUDA device"
        if device_type == "cpu":
            return None if triton_interpret() else "triton runs on CPU tensors only under TRITON_INTERPRET=1"
        return f"triton does not run on {device_type} tensors"
    if backend == "cuda":
        if device_type != "cuda":
            return f"the cuda backend runs on CUDA tensors, these are on {device_type}"
        mod = load_cuda()
        return None if not isinstance(mod, Exception) else str(mod)
    return f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)} or 'auto'"


_AUTO_ORDER = {"cpu": ("cpp", "torch"), "cuda": ("cuda", "triton", "torch")}
_resolved = {}
# os.environ.get costs ~0.5 us (it encodes the key on every call), a noticeable part of a ~5 us op
# call; os.environ keeps its encoded mapping in _data, updated by every os.environ assignment
_environ_bytes = getattr(os.environ, "_data", None)


def forced_backend():
    """GENENGINE_BACKEND, or None."""
    if isinstance(_environ_bytes, dict):
        v = _environ_bytes.get(b"GENENGINE_BACKEND")
        return v.decode() if v is not None else None
    return os.environ.get("GENENGINE_BACKEND")


def device_type(t):
    """t.device.type, without building a torch.device for the common cases."""
    return "cuda" if t.is_cuda else ("cpu" if t.is_cpu else t.device.type)


def resolve(backend, device_type, supported=BACKENDS, dtype_ok=True):
    """The backend to run: `backend` is "auto", None or a name.

    `supported` lists the backends the op implements; `dtype_ok` is False when the inputs' dtype
    is one only the reference handles (e.g. float64), in which case auto picks torch.
    """
    if backend is None or backend == "auto":
        forced = forced_backend()
        if forced and forced != "auto":
            backend = forced
        else:
            if not dtype_ok:
                return "torch"
            key = (device_type, supported)
            choice = _resolved.get(key)
            if choice is None:
                order = _AUTO_ORDER.get(device_type, ("torch",))
                choice = next(b for b in order if b in supported and unavailable_reason(b, device_type) is None)
                _resolved[key] = choice
            return choice
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string ('auto' or one of {BACKENDS}), got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected 'auto' or one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend not in supported:
        raise BackendUnavailableError(f"backend {backend!r} does not implement this op (it has: {', '.join(supported)})")
    reason = unavailable_reason(backend, device_type)
    if reason is not None:
        raise BackendUnavailableError(f"backend {backend!r} is unavailable: {reason}")
    if not dtype_ok and backend != "torch":
        raise TypeError(f"backend {backend!r} supports {', '.join(KERNEL_DTYPES)} tensors only; use backend='torch'")
    return backend


def clear_cache():
    """Forget cached availability and auto choices (after changing devices or installs in-process)."""
    _resolved.clear()
    _reasons.clear()
