"""Noise schedules: the training-time betas and what the samplers derive from them.

A schedule is T betas (t = 0 .. T-1, little noise to much noise). Everything else follows:
    alphas_cumprod[t] = prod_{s <= t} (1 - betas[s])        (alpha_bar in Ho et al. 2020)
    sigmas[t]         = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])   (the noise level in sigma
                        space, where x_sigma = x_vp * sqrt(sigma^2 + 1); Karras et al. 2022)

The named constructors compute the betas exactly as the diffusers library does (float32 linspace,
float32 cumulative product), so a schedule ported from a `scheduler_config.json` gives bit-identical
tables and therefore identical timesteps; they are then held as float64 CPU tensors.
"""

from __future__ import annotations

import math

import torch

from .._checks import positive_int as _positive_int

_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _beta_range(beta_start, beta_end):
    for name, v in (("beta_start", beta_start), ("beta_end", beta_end)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
            raise ValueError(f"{name}: expected a number in (0, 1), got {v!r}")


def _check_alphas_cumprod(acp, source):
    """Every alpha_bar must lie strictly in (0, 1): at 1 the noise level sigma is 0, at 0 it is
    infinite, and either breaks every sampler later with a message about alpha_bar or sigma."""
    if not bool(torch.isfinite(acp).all()):
        raise ValueError(f"{source}: alphas_cumprod must be finite")
    at_one = (acp >= 1).nonzero()
    if at_one.numel():
        raise ValueError(f"{source}: alphas_cumprod rounds to 1 up to t={int(at_one[-1])} (noise level 0): the betas "
                         "are too small for the precision of the cumulative product (float32 for float32 betas)")
    at_zero = (acp <= 0).nonzero()
    if at_zero.numel():
        raise ValueError(f"{source}: alphas_cumprod underflows to 0 from t={int(at_zero[0])} (infinite noise "
                         "level): too many timesteps or too large betas")


class NoiseSchedule:
    """T training noise levels. Build with `.linear`, `.scaled_linear`, `.cosine` or `.from_betas`.

    Attributes (float64, CPU, length T): betas, alphas_cumprod, sigmas; num_train_timesteps = T.
    """

    def __init__(self, betas, *, kind="custom", alphas_cumprod=None, source="betas"):
        if not isinstance(betas, torch.Tensor):
            try:
                betas = torch.as_tensor(betas, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"betas: expected a 1-D sequence or tensor of numbers, got {type(betas).__name__}") from None
        if betas.dim() != 1 or betas.numel() < 2:
            raise ValueError(f"betas: expected a 1-D tensor with at least 2 entries, got shape {tuple(betas.shape)}")
        if not betas.is_floating_point():
            betas = betas.to(torch.float64)
        b = betas.detach().to("cpu", torch.float64)
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas: every beta must lie in (0, 1)")
        if alphas_cumprod is None:
            alphas_cumprod = torch.cumprod(1.0 - betas.detach().cpu(), dim=0)
        alphas_cumprod = alphas_cumprod.to(torch.float64)
        _check_alphas_cumprod(alphas_cumprod, source)
        self.kind = kind
        self.betas = b
        self.alphas_cumprod = alphas_cumprod
        self.sigmas = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def linear(cls, num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02):
        """Betas linear in t (Ho et al. 2020; diffusers' "linear")."""
        _positive_int("num_train_timesteps", num_train_timesteps)
        _beta_range(beta_start, beta_end)
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        return cls._from_float32(betas, "linear", "num_train_timesteps, beta_start, beta_end")

    @classmethod
    def scaled_linear(cls, num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012):
        """Square roots of the betas linear in t (latent diffusion; diffusers' "scaled_linear")."""
        _positive_int("num_train_timesteps", num_train_timesteps)
        _beta_range(beta_start, beta_end)
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        return cls._from_float32(betas, "scaled_linear", "num_train_timesteps, beta_start, beta_end")

    @classmethod
    def cosine(cls, num_train_timesteps=1000, max_beta=0.999):
        """The squared-cosine schedule of Nichol & Dhariwal 2021, betas capped at `max_beta`
        (diffusers' "squaredcos_cap_v2")."""
        _positive_int("num_train_timesteps", num_train_timesteps)
        if isinstance(max_beta, bool) or not isinstance(max_beta, (int, float)) or not 0.0 < max_beta < 1.0:
            raise ValueError(f"max_beta: expected a number in (0, 1), got {max_beta!r}")

        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        n = num_train_timesteps
        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
        return cls._from_float32(torch.tensor(betas, dtype=torch.float32), "cosine", "num_train_timesteps, max_beta")

    @classmethod
    def from_betas(cls, betas):
        """Any betas (a 1-D tensor or sequence in (0, 1)); the cumulative product is taken in float64
        unless the betas are float32 (then in float32, as diffusers does with `trained_betas`)."""
        if isinstance(betas, torch.Tensor) and betas.dtype == torch.float32:
            return cls._from_float32(betas.detach().cpu(), "custom")
        return cls(betas)

    @classmethod
    def from_diffusers_config(cls, config):
        """The schedule a diffusers scheduler builds from its config dict (missing keys take
        diffusers' defaults)."""
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict (a scheduler_config.json), got {type(config).__name__}")
        if config.get("rescale_betas_zero_snr", False):
            raise ValueError("config['rescale_betas_zero_snr']: zero-terminal-SNR schedules are not supported")
        n = config.get("num_train_timesteps", 1000)
        if config.get("trained_betas") is not None:
            return cls._from_float32(torch.tensor(config["trained_betas"], dtype=torch.float32), "custom")
        kind = config.get("beta_schedule", "linear")
        start, end = config.get("beta_start", 0.0001), config.get("beta_end", 0.02)
        if kind == "linear":
            return cls.linear(n, start, end)
        if kind == "scaled_linear":
            return cls.scaled_linear(n, start, end)
        if kind == "squaredcos_cap_v2":
            return cls.cosine(n)
        raise ValueError(f"config['beta_schedule']: expected one of {_BETA_SCHEDULES}, got {kind!r}")

    @classmethod
    def _from_float32(cls, betas32, kind, source="betas"):
        return cls(betas32.to(torch.float64), kind=kind, alphas_cumprod=torch.cumprod(1.0 - betas32, dim=0), source=source)

    # -- queries --------------------------------------------------------------------------------

    @property
    def num_train_timesteps(self):
        return self.betas.numel()

    def add_noise(self, x0, noise, t):
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, for training; t is an int64 tensor
        (B,) of timesteps in 0 .. T-1 on x0's device."""
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t: expected an integer tensor of timesteps, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
        T = self.num_train_timesteps
        if t.numel():
            # read back even from a GPU (one sync, at training time): indexing with t < 0 silently wraps
            # around and t >= T is an out-of-bounds read
            lo, hi = (int(v) for v in torch.aminmax(t))
            if lo < 0 or hi >= T:
                raise ValueError(f"t: expected timesteps in 0..{T - 1}, got values in {lo}..{hi}")
        a = self.alphas_cumprod.to(device=x0.device, dtype=torch.float32)[t]
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return (a.sqrt().reshape(shape) * x0 + (1.0 - a).sqrt().reshape(shape) * noise).to(x0.dtype)

    def __len__(self):
        return self.num_train_timesteps

    def __repr__(self):
        return f"NoiseSchedule({self.kind}, T={self.num_train_timesteps})"

    def __eq__(self, other):
        return isinstance(other, NoiseSchedule) and torch.equal(self.alphas_cumprod, other.alphas_cumprod)

    __hash__ = None
