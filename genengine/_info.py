"""genengine.info(): what was built, what is available here, versions and devices."""

from __future__ import annotations

import platform
import sys

from . import _backends

# op -> backends that implement it (the README's support table says the same)
OPS = {
    "ddpm_step": ("torch", "cpp", "triton", "cuda"),
    "ddim_step": ("torch", "cpp", "triton", "cuda"),
    "euler_step": ("torch", "cpp", "triton", "cuda"),
    "euler_ancestral_step": ("torch", "cpp", "triton", "cuda"),
    "dpmpp_2m_step": ("torch", "cpp", "triton", "cuda"),
    "dynamic thresholding (the steps' dynamic_threshold=)": ("torch", "cpp", "triton", "cuda"),
    "group_norm_silu": ("torch", "cpp", "triton", "cuda"),
    "philox_words / philox_uniform / philox_normal": ("torch", "cpp", "triton", "cuda"),
    "decode_attention": ("torch", "cpp", "triton", "cuda"),
    "prefill_attention": ("torch", "cpp", "triton"),
    "rope_append_kv": ("torch", "cpp", "triton"),
    "rbm_gibbs / rbm_cd_stats / rbm_parallel_tempering": ("torch", "cpp", "triton", "cuda"),
    "ising_sweep": ("torch", "cpp", "triton", "cuda"),
    "boltzmann_gibbs": ("torch", "cpp", "triton", "cuda"),
    "langevin_step": ("torch", "cpp", "triton", "cuda"),
    "sample_tokens": ("torch", "cpp", "triton"),
    "hmm_forward / hmm_posteriors / hmm_viterbi": ("torch", "cpp", "triton"),
    "gaussian_nb_log_likelihood / bernoulli_nb_log_likelihood / multinomial_nb_log_likelihood": ("torch", "cpp", "triton"),
    "nb_class_stats": ("torch", "cpp"),
    "gmm_e_step": ("torch", "cpp", "triton"),
    "reparameterize / reparameterize_kl / gaussian_kl": ("torch", "cpp", "triton"),
    "rq_spline (forward, inverse, fused backward)": ("torch", "cpp", "triton", "cuda"),
    "affine_coupling (forward, inverse, fused backward)": ("torch", "cpp", "triton", "cuda"),
    "made_affine_inverse (MAF sampling: the D steps in one call)": ("torch", "cpp"),
}


def _versions():
    import torch

    v = {"genengine": _version(), "python": sys.version.split()[0], "torch": torch.__version__}
    try:
        import triton

        v["triton"] = triton.__version__
    except Exception:
        v["triton"] = None
    v["torch_cuda"] = torch.version.cuda
    return v


def _version():
    from . import __version__

    return __version__


def _devices():
    import torch

    devs = [{"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devs.append({"type": "cuda", "index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                         "memory_gib": round(p.total_memory / 2**30, 1)})
    return devs


def _built():
    cpp = _backends.load_cpp()
    built = {"_C": not isinstance(cpp, Exception), "_cuda": _backends.cuda_built()}
    if built["_C"]:
        built["_C_isa"] = cpp.isa()
        built["_C_flags"] = cpp.build_flags()
        built["_C_threads"] = cpp.get_num_threads()
        built["_C_threading"] = cpp.threading()
    if built["_cuda"]:
        try:
            from . import _cuda

            built["_cuda_info"] = dict(_cuda.build_info())
        except Exception as e:  # built but not loadable here
            built["_cuda_info"] = f"not loadable: {e}"
    return built


def _available():
    res = {}
    for b in _backends.BACKENDS:
        res[b] = {dev: (_backends.unavailable_reason(b, dev) or "yes") for dev in ("cpu", "cuda")}
    return res


def info(verbose=True):
    """Returns (and, with verbose, prints) what was built, which backends run on which device, versions."""
    report = {"versions": _versions(), "built": _built(), "backends": _available(), "devices": _devices(),
              "ops": {op: list(b) for op, b in OPS.items()}}
    if verbose:
        print(format_info(report))
    return report


def format_info(report):
    lines = ["genengine " + report["versions"]["genengine"]]
    lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if k != "genengine"))
    b = report["built"]
    lines.append(f"  built: _C={'yes' if b['_C'] else 'no'}" + (f" ({b['_C_isa']}, {b['_C_threads']} threads)" if b["_C"] else ""))
    if b["_C"]:
        lines.append(f"         _C threads: {b['_C_threading']}")
    lines.append(f"         _cuda={'yes' if b['_cuda'] else 'no'}" + (f" ({b['_cuda_info']})" if b.get("_cuda_info") else ""))
    lines.append("  backends (cpu | cuda):")
    for name, per in report["backends"].items():
        lines.append(f"    {name:7s} cpu: {per['cpu']}")
        lines.append(f"    {'':7s} cuda: {per['cuda']}")
    lines.append("  devices: " + "; ".join(
        d["name"] + (f" ({d['threads']} threads)" if d["type"] == "cpu" else f" sm_{d['capability']}, {d['memory_gib']} GiB")
        for d in report["devices"]))
    lines.append("  ops: " + "; ".join(f"{op} [{', '.join(bs)}]" for op, bs in report["ops"].items()))
    return "\n".join(lines)
