"""Test setup: on a machine without a GPU the Triton kernels run on CPU tensors under the Triton
interpreter (TRITON_INTERPRET=1 must be set before triton is first imported), so they are tested,
never skipped. Tests marked `gpu` run with `pytest -m gpu` on a CUDA machine."""

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from genengine import _backends  # noqa: E402

_backends.clear_cache()

CPU_BACKENDS = ["torch", "cpp", "triton"]
GPU_BACKENDS = ["torch", "triton", "cuda"]


@pytest.fixture
def gen(request):
    """A torch.Generator with a fresh seed per test; the seed is shown if the test fails."""
    seed = random.SystemRandom().randrange(2**31)
    request.node.user_properties.append(("seed", seed))
    g = torch.Generator().manual_seed(seed)
    return g


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            report.sections.append(("random seed", f"fresh inputs were drawn with seed {seeds[0]}"))
