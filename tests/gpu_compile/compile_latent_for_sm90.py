"""Compiles the VAE sampling-step Triton kernel (kernels/latent.py) for an H100 (sm_90) without a
GPU, for float32 / bfloat16 / float16 and each of z-only, KL-only and both. Run by
tests/test_triton_gpu_compile.py."""

import itertools

from aot import compile_variant, finish  # noqa: I001  (clears TRITON_INTERPRET before triton loads)
from genengine.kernels import latent


def types(dt):
    def t(name):
        if name == "kl_ptr":
            return "*fp32"
        if name.endswith("_ptr"):
            return f"*{dt}"
        return "i32"
    return t


for dt, (want_z, want_kl) in itertools.product(("fp32", "bf16", "fp16"), ((True, True), (True, False), (False, True))):
    compile_variant(f"reparameterize_kl {dt} z={want_z} kl={want_kl}", latent._reparam_kl_kernel, types(dt),
                    {"WANT_Z": want_z, "WANT_KL": want_kl, "BLOCK": latent.BLOCK})

finish()
