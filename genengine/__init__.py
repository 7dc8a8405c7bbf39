"""genengine: a kernel-optimized engine for generative models.

    import genengine as ge
    ge.info()                       # what was built, which backends run here, versions, devices
    x = ge.ops.ddim_step(x, eps, alpha_bar_t, alpha_bar_prev, uncond=eps_u, guidance_scale=7.5)
"""

from __future__ import annotations

from . import data, diffusion, metrics, models, nn, ops
from ._backends import BACKENDS, BackendUnavailableError
from ._info import info

__version__ = "0.1.0"
__all__ = ["ops", "nn", "diffusion", "models", "data", "metrics", "info", "BACKENDS", "BackendUnavailableError", "__version__"]
