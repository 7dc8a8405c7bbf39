"""Plain-PyTorch specification of the diffusion sampler steps: the textbook formulas, op by op.

These are written independently of the coefficient algebra in genengine/ops/diffusion.py (which folds
each step into a few per-step coefficients for the fused kernels), so testing one against the other
checks the algebra too. Everything is computed in float64 (or the inputs' dtype when `dtype` says
so, which is how the benchmark times "the plain PyTorch expression"), then cast to x's dtype.

Conventions (as genengine.ops): `model_out` is the model's prediction for x (or, when `uncond` is
given, the conditional one; guidance gives uncond + w * (model_out - uncond)); `noise` is the standard
normal tensor the stochastic steps add (the ops draw it from Philox; here it is an argument).
VP steps (ddpm, ddim) take cumulative alphas; sigma-space steps (euler, euler_ancestral, dpmpp_2m)
take Karras sigmas with x = x0 + sigma * eps.
"""

from __future__ import annotations

import math

import torch


def _f(t, dtype):
    return None if t is None else t.to(dtype)


def guide(model_out, uncond, guidance_scale):
    if uncond is None:
        return model_out
    w = guidance_scale
    if isinstance(w, torch.Tensor):
        w = w.to(model_out.dtype).reshape(-1, *([1] * (model_out.dim() - 1)))
    return uncond + w * (model_out - uncond)


def clip(x0, clip_x0):
    if clip_x0 is None:
        return x0
    lo, hi = (-clip_x0, clip_x0) if not isinstance(clip_x0, tuple) else clip_x0
    return x0.clamp(lo, hi)


def dynamic_threshold(x0, ratio, max_value):
    """Dynamic thresholding (Saharia et al. 2022; diffusers' `_threshold_sample`): per sample b,
    s_b = clamp(quantile(|x0_b|, ratio), 1, max_value) over all its elements, and x0 -> clamp(x0, -s_b, s_b) / s_b.
    Computed in x0's dtype (float64 here); a NaN in a sample makes its s_b, and so its x0, NaN."""
    s = torch.quantile(x0.abs().reshape(x0.shape[0], -1), ratio, dim=1).clamp(1.0, max_value)
    s = s.reshape(-1, *([1] * (x0.dim() - 1)))
    return torch.clamp(x0, -s, s) / s


def _limit(x0, clip_x0, threshold):
    x0 = clip(x0, clip_x0)
    return x0 if threshold is None else dynamic_threshold(x0, *threshold)


_ALIASES = {"v_prediction": "v", "sample": "x0"}


def vp_x0_eps(x, pred, alpha_bar, prediction):
    """(x0, eps) from a model prediction in the variance-preserving parameterisation."""
    prediction = _ALIASES.get(prediction, prediction)
    a = alpha_bar
    if prediction == "epsilon":
        return (x - math.sqrt(1 - a) * pred) / math.sqrt(a), pred
    if prediction == "v":
        return math.sqrt(a) * x - math.sqrt(1 - a) * pred, math.sqrt(a) * pred + math.sqrt(1 - a) * x
    return pred, (x - math.sqrt(a) * pred) / math.sqrt(1 - a)


def sigma_x0(x, pred, sigma, prediction):
    """x0 from a model prediction in sigma space (the model saw x / sqrt(sigma^2 + 1))."""
    prediction = _ALIASES.get(prediction, prediction)
    if prediction == "epsilon":
        return x - sigma * pred
    if prediction == "v":
        return pred * (-sigma / math.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
    return pred


def ddpm_step(x, model_out, alpha_bar_t, alpha_bar_prev, *, uncond=None, guidance_scale=1.0, prediction="epsilon",
              clip_x0=None, variance_type="fixed_small", noise=None, dtype=torch.float64,
              dynamic_threshold=None):
    x, model_out, uncond, noise = (_f(t, dtype) for t in (x, model_out, uncond, noise))
    pred = guide(model_out, uncond, guidance_scale)
    x0, _ = vp_x0_eps(x, pred, alpha_bar_t, prediction)
    x0 = _limit(x0, clip_x0, dynamic_threshold)
    a_t, a_prev = alpha_bar_t, alpha_bar_prev
    alpha_t = a_t / a_prev
    beta_t = 1 - alpha_t
    mean = (math.sqrt(a_prev) * beta_t / (1 - a_t)) * x0 + (math.sqrt(alpha_t) * (1 - a_prev) / (1 - a_t)) * x
    if a_prev < 1 and noise is not None:
        var = (1 - a_prev) / (1 - a_t) * beta_t if variance_type == "fixed_small" else beta_t
        mean = mean + math.sqrt(max(var, 1e-20)) * noise
    return mean


def ddim_step(x, model_out, alpha_bar_t, alpha_bar_prev, *, eta=0.0, uncond=None, guidance_scale=1.0,
              prediction="epsilon", clip_x0=None, use_clipped_model_output=False, noise=None, dtype=torch.float64,
              dynamic_threshold=None):
    x, model_out, uncond, noise = (_f(t, dtype) for t in (x, model_out, uncond, noise))
    pred = guide(model_out, uncond, guidance_scale)
    x0, eps = vp_x0_eps(x, pred, alpha_bar_t, prediction)
    x0 = _limit(x0, clip_x0, dynamic_threshold)
    a_t, a_prev = alpha_bar_t, alpha_bar_prev
    std = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) if eta > 0 else 0.0
    if use_clipped_model_output:
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    out = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - std**2) * eps
    if std > 0 and noise is not None:
        out = out + std * noise
    return out


def euler_step(x, model_out, sigma, sigma_next, *, uncond=None, guidance_scale=1.0, prediction="epsilon",
               clip_x0=None, dtype=torch.float64,
               dynamic_threshold=None):
    x, model_out, uncond = (_f(t, dtype) for t in (x, model_out, uncond))
    x0 = _limit(sigma_x0(x, guide(model_out, uncond, guidance_scale), sigma, prediction), clip_x0,
                dynamic_threshold)
    derivative = (x - x0) / sigma
    return x + derivative * (sigma_next - sigma)


def euler_ancestral_step(x, model_out, sigma, sigma_next, *, uncond=None, guidance_scale=1.0,
                         prediction="epsilon", clip_x0=None, noise=None, dtype=torch.float64,
                         dynamic_threshold=None):
    x, model_out, uncond, noise = (_f(t, dtype) for t in (x, model_out, uncond, noise))
    x0 = _limit(sigma_x0(x, guide(model_out, uncond, guidance_scale), sigma, prediction), clip_x0,
                dynamic_threshold)
    sigma_up = math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
    out = x + (x - x0) / sigma * (sigma_down - sigma)
    if sigma_up > 0 and noise is not None:
        out = out + noise * sigma_up
    return out


def dpmpp_2m_step(x, model_out, sigma, sigma_next, *, prev_x0=None, sigma_prev=None, uncond=None,
                  guidance_scale=1.0, prediction="epsilon", clip_x0=None, dtype=torch.float64,
                  dynamic_threshold=None):
    """DPM-Solver++(2M) in sigma space (Lu et al. 2022), first order without a previous x0 or to sigma 0."""
    x, model_out, uncond, prev_x0 = (_f(t, dtype) for t in (x, model_out, uncond, prev_x0))
    x0 = _limit(sigma_x0(x, guide(model_out, uncond, guidance_scale), sigma, prediction), clip_x0,
                dynamic_threshold)
    if sigma_next == 0:
        return x0.clone(), x0
    t, t_next = -math.log(sigma), -math.log(sigma_next)
    h = t_next - t
    denoised = x0
    if prev_x0 is not None:
        r = (t - (-math.log(sigma_prev))) / h
        denoised = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
    return (sigma_next / sigma) * x - math.expm1(-h) * denoised, x0
