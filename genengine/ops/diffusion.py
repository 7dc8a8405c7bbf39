"""Fused diffusion sampler steps: one pass over the latent per step.

Each public step folds its sampler's formula into per-step coefficients (computed here, in float64,
from the scalars) and runs one generic fused kernel that does, per element:
    p   = uncond + w * (model_out - uncond)          classifier-free guidance (p = model_out without)
    x0  = kx * x + kp * p, clamped when clipping     prediction conversion (epsilon / v / x0)
          or dynamically thresholded (see below)
    out = ax * x + ap * p + a0 * x0 + aprev * prev_x0 + anoise * z,  z ~ N(0, 1) (Philox, in-kernel)
(see csrc/common/step.h). A zero coefficient drops its term, so an inf in an input the sampler's
formula does not read stays out of the result (a clipped DDPM step reads the prediction only through
the clamped x0). The plain-PyTorch formulas these must equal live in genengine/reference/diffusion.py.

Dynamic thresholding (Saharia et al. 2022, `dynamic_threshold=(ratio, max_value)`, diffusers'
`dynamic_thresholding_ratio` and `sample_max_value`): per sample b, over all its elements,
    s_b = clamp(quantile(|x0_b|, ratio), 1, max_value)      (torch.quantile, linear interpolation)
    x0  = clamp(x0, -s_b, s_b) / s_b
A first kernel selects the two order statistics per sample (radix select over the bits of |x0|,
x0 recomputed on the fly, never stored, no sort) and returns s (float32 [B]); the step kernel then
reads s per sample. A NaN in a sample's x0 makes s_b NaN, hence the sample's whole x0 and output
NaN (torch.quantile's rule); an inf among the interpolated order statistics does the same (torch.lerp).
Autograd differentiates through s_b (the two selected elements carry its gradient, as for
torch.quantile).

noise_key: instead of `generator`, an int64 tensor of shape (2,) on x's device holding the Philox
(seed, offset) as the signed int64 bit patterns of the two uint64 words. The kernels read it when
they run (the torch backend reads it with .tolist()), so a CUDA graph captured around a step
replays with whatever key was written into the tensor; the noise equals the noise of a generator
that draws the same (seed, offset) (see genengine.ops.draw_key).

Shapes: x is any shape whose first dimension is the batch B (latents (B, C, H, W), video
(B, C, T, H, W), audio (B, C, L), or even 1-D). model_out is x's shape, or (2B, ...) with the
unconditional half first (`torch.cat([uncond, cond])`, the order diffusers' `.chunk(2)` expects);
uncond, prev_x0 and out are x's shape. guidance_scale is a number or a tensor with one weight per
sample (shape (), (1,), (B,) or (B, 1, ..., 1)). x, model_out, uncond and prev_x0 share one dtype
(float32, bfloat16 or float16 on every backend; float64 too on the torch reference) and one
device; the math runs in float32.

Scalars (alpha_bar_t, sigma, ...) are Python numbers or one-element tensors (a CUDA tensor here
costs a device sync: precompute schedules on the host).
"""

from __future__ import annotations

import math

import torch

from .. import _backends
from .._checks import byte_span, to_float
from ..reference import diffusion as ref
from . import rng

_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_PREDICTIONS = {"epsilon": "epsilon", "v": "v", "v_prediction": "v", "x0": "x0", "sample": "x0"}
_SUPPORTED = ("torch", "cpp", "triton", "cuda")


# ----------------------------------------------------------------------------------------------
# argument checks


def _scalar(name, v):
    if type(v) is float:
        f = v
    elif isinstance(v, (bool, str, bytes)) or v is None:
        raise TypeError(f"{name}: expected a real number, got {v!r}")
    elif isinstance(v, (int, float)):
        f = to_float(name, v)
    elif isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name}: expected a number or a one-element tensor, got a tensor of shape {tuple(v.shape)}")
        f = float(v)
    else:
        try:
            f = float(v)  # numpy scalars
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a real number, got {type(v).__name__}") from None
    if f != f or f in (math.inf, -math.inf):
        raise ValueError(f"{name}: expected a finite number, got {f}")
    return f


def _prediction(prediction):
    p = _PREDICTIONS.get(prediction) if isinstance(prediction, str) else None
    if p is None:
        raise ValueError(f"prediction: expected 'epsilon', 'v' or 'x0' (or 'v_prediction', 'sample'), got {prediction!r}")
    return p


def _clip_range(clip_x0):
    """(clip?, lo, hi) from None, a positive bound c (meaning [-c, c]) or a (lo, hi) pair."""
    if clip_x0 is None or clip_x0 is False:
        return False, 0.0, 0.0
    if isinstance(clip_x0, (tuple, list)):
        if len(clip_x0) != 2:
            raise ValueError(f"clip_x0: expected a bound c or a (lo, hi) pair, got {clip_x0!r}")
        lo, hi = _scalar("clip_x0", clip_x0[0]), _scalar("clip_x0", clip_x0[1])
    else:
        c = _scalar("clip_x0", clip_x0)
        if c <= 0:
            raise ValueError(f"clip_x0: a single bound must be positive (the range is [-c, c]), got {c}")
        lo, hi = -c, c
    if not lo < hi:
        raise ValueError(f"clip_x0: expected lo < hi, got ({lo}, {hi})")
    return True, lo, hi


def _dynamic_threshold(dynamic_threshold, clip):
    """None or (ratio, max_value), checked; clip is _clip_range's result."""
    if dynamic_threshold is None or dynamic_threshold is False:
        return None
    if not isinstance(dynamic_threshold, (tuple, list)) or len(dynamic_threshold) != 2:
        raise TypeError(f"dynamic_threshold: expected None or a (ratio, max_value) pair, got {dynamic_threshold!r}")
    ratio = _scalar("dynamic_threshold", dynamic_threshold[0])
    max_value = _scalar("dynamic_threshold", dynamic_threshold[1])
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"dynamic_threshold: the ratio (a quantile) must be in (0, 1], got {ratio}")
    if not max_value >= 1.0:
        raise ValueError(f"dynamic_threshold: max_value must be >= 1 (thresholds are clamped to [1, max_value]), "
                         f"got {max_value}")
    if clip[0]:
        raise ValueError("clip_x0, dynamic_threshold: pass one or the other (both would clamp x0)")
    return ratio, max_value


def _noise_key(noise_key, x, generator):
    """None, or noise_key checked: an int64 (2,) tensor on x's device (contiguous; an offset view is fine)."""
    if noise_key is None:
        return None
    if generator is not None:
        raise ValueError("noise_key, generator: pass one or the other (noise_key holds the (seed, offset) to draw with)")
    if not isinstance(noise_key, torch.Tensor):
        raise TypeError(f"noise_key: expected an int64 tensor of shape (2,), got {type(noise_key).__name__}")
    if noise_key.dtype != torch.int64:
        raise TypeError(f"noise_key: expected dtype torch.int64 (seed, offset), got {noise_key.dtype}")
    if tuple(noise_key.shape) != (2,):
        raise ValueError(f"noise_key: expected shape (2,) (seed, offset), got {tuple(noise_key.shape)}")
    if noise_key.device != x.device:
        raise ValueError(f"noise_key: on device {noise_key.device}, but x is on {x.device}")
    return _contig(noise_key)


def _check_tensor(name, t, x):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != x.dtype:
        raise TypeError(f"{name}: dtype {t.dtype} does not match x's dtype {x.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name}: on device {t.device}, but x is on {x.device}")


def _check_same_shape(name, t, x):
    _check_tensor(name, t, x)
    if t.shape != x.shape:
        raise ValueError(f"{name}: expected shape {tuple(x.shape)} (x's shape), got {tuple(t.shape)}")


def _guidance(guidance_scale, x, batch):
    """(scalar weight, per-sample float32 [B] tensor or None)."""
    if not isinstance(guidance_scale, torch.Tensor):
        return _scalar("guidance_scale", guidance_scale), None
    g = guidance_scale
    if g.device != x.device:
        raise ValueError(f"guidance_scale: on device {g.device}, but x is on {x.device}")
    if not (g.is_floating_point() or g.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"guidance_scale: expected a floating-point tensor, got {g.dtype}")
    shape = tuple(g.shape)
    per_sample = (
        g.dim() == 0
        or shape == (1,)
        or (g.dim() <= x.dim() and shape[0] in (1, batch) and all(s == 1 for s in shape[1:]))
    )
    if not per_sample:
        raise ValueError(
            f"guidance_scale: expected a number or one weight per sample, shape (), (1,), ({batch},) or "
            f"({batch}, 1, ...); got shape {shape}, which does not broadcast per sample over x {tuple(x.shape)}"
        )
    wdtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # kernels read float32
    return 1.0, g.reshape(-1).to(wdtype).expand(batch).contiguous()


def _contig(t):
    return t if t is None or t.is_contiguous() else t.contiguous()


# ----------------------------------------------------------------------------------------------
# the generic fused step: argument plumbing, backend dispatch, torch.library registration


class _Step:
    """Per-step coefficients (see the module docstring) and what the kernel must read and write."""

    __slots__ = ("kx", "kp", "ax", "ap", "a0", "aprev", "anoise", "clip", "lo", "hi", "want_x0", "uses_prev",
                 "thresh")

    def __init__(self, kx, kp, ax, ap, a0, aprev=0.0, anoise=0.0, clip=(False, 0.0, 0.0), want_x0=False, thresh=None):
        self.clip, self.lo, self.hi = clip
        self.want_x0 = want_x0
        self.thresh = thresh  # None or (ratio, max_value)
        if not self.clip and not want_x0 and thresh is None and a0 != 0.0:
            # x0 is linear in (x, p): fold it into their coefficients, in float64
            ax, ap, a0, kx, kp = ax + a0 * kx, ap + a0 * kp, 0.0, 0.0, 0.0
        self.kx, self.kp, self.ax, self.ap, self.a0, self.aprev, self.anoise = kx, kp, ax, ap, a0, aprev, anoise
        self.uses_prev = aprev != 0.0

    @classmethod
    def from_coefs(cls, coefs, clip, want_x0, thresh=None):
        """Exactly these coefficients (no folding): what the registered op receives."""
        step = cls.__new__(cls)
        step.kx, step.kp, step.ax, step.ap, step.a0, step.aprev, step.anoise = coefs
        step.clip, step.lo, step.hi = clip
        step.want_x0 = want_x0
        step.thresh = tuple(thresh) if thresh is not None else None
        step.uses_prev = step.aprev != 0.0
        return step

    def coefs(self):
        return [self.kx, self.kp, self.ax, self.ap, self.a0, self.aprev, self.anoise]


def _check_out(name, out, x, model_out, uncond, prev):
    """A preallocated output: x's shape, dtype and device, contiguous, and either x itself (an
    in-place step) or memory no input uses (the kernels read and write element by element)."""
    _check_same_shape(name, out, x)
    if not out.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor")
    out_storage = out.untyped_storage().data_ptr()
    for other, t in (("model_out", model_out), ("uncond", uncond), ("prev_x0", prev)):
        if t is not None and t.untyped_storage().data_ptr() == out_storage:
            raise ValueError(f"{name}: must not share memory with {other} (it may be x itself, for an in-place step)")
    if x.untyped_storage().data_ptr() == out_storage and not (x.data_ptr() == out.data_ptr() and x.is_contiguous()):
        raise ValueError(f"{name}: overlaps x without being x itself; pass x itself (contiguous) or separate memory")


def _check_out_dup(out_dup, x, tensors):
    """out_dup: a second output with out's values (sampling loops write the halves of [x; x] with it).
    Unlike out it may share a storage with out (the two halves of one buffer), but no byte with it,
    x0_out or any input: the kernels read and write element by element."""
    if not isinstance(out_dup, torch.Tensor):
        raise TypeError(f"out_dup: expected a torch.Tensor, got {type(out_dup).__name__}")
    if out_dup.shape != x.shape or out_dup.dtype != x.dtype or out_dup.device != x.device:
        raise ValueError(f"out_dup: expected x's shape, dtype and device {tuple(x.shape)}/{x.dtype}/{x.device}, "
                         f"got {tuple(out_dup.shape)}/{out_dup.dtype}/{out_dup.device}")
    if not out_dup.is_contiguous():
        raise ValueError("out_dup: expected a contiguous tensor")
    lo, hi = byte_span(out_dup)
    for name, t in tensors:
        if t is None or t.numel() == 0 or hi == lo:
            continue
        if t.untyped_storage().data_ptr() == out_dup.untyped_storage().data_ptr():
            t_lo, t_hi = byte_span(t)
            if t_lo < hi and lo < t_hi:
                raise ValueError(f"out_dup: overlaps {name}; it must be memory of its own")


def _split_model_out(x, model_out, uncond):
    """(cond, uncond) views: model_out may hold [uncond; cond] stacked along the batch."""
    if not isinstance(model_out, torch.Tensor):
        raise TypeError(f"model_out: expected a torch.Tensor, got {type(model_out).__name__}")
    _check_tensor("model_out", model_out, x)
    if model_out.shape == x.shape:
        if uncond is not None:
            _check_same_shape("uncond", uncond, x)
        return model_out, uncond
    b = x.shape[0] if x.dim() else 0
    if x.dim() and model_out.dim() == x.dim() and model_out.shape[0] == 2 * b and model_out.shape[1:] == x.shape[1:]:
        if uncond is not None:
            raise ValueError("uncond: model_out is already stacked [uncond; cond] (2x x's batch); do not pass uncond too")
        return model_out[b:], model_out[:b]
    raise ValueError(
        f"model_out: expected x's shape {tuple(x.shape)} or the stacked [uncond; cond] shape "
        f"({2 * b}, {', '.join(map(str, x.shape[1:]))}), got {tuple(model_out.shape)}"
    )


def _prepare(x, model_out, uncond, prev, guidance_scale, out, backend):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("x: expected at least one dimension (the batch), got a 0-d tensor")
    cond, uncond = _split_model_out(x, model_out, uncond)
    if prev is not None:
        _check_same_shape("prev_x0", prev, x)
    batch = x.shape[0]
    w, w_per_sample = _guidance(guidance_scale, x, batch)
    if uncond is None and (w_per_sample is not None or w != 1.0):
        raise ValueError("guidance_scale: guidance needs the unconditional output (pass uncond, or a stacked model_out)")
    if out is not None:
        _check_out("out", out, x, model_out, uncond, prev)
    dtype_ok = x.dtype in _DTYPE_CODE
    if not dtype_ok and x.dtype != torch.float64:
        raise TypeError(f"x: expected float32, bfloat16, float16 (or float64 on the torch backend), got {x.dtype}")
    name = _backends.resolve(backend, _backends.device_type(x), _SUPPORTED, dtype_ok)
    return name, _contig(x), _contig(cond), _contig(uncond), _contig(prev), w, w_per_sample


def _ptr(t):
    return t.data_ptr() if t is not None else 0


def _select_rank(ratio, inner):
    """(rank, frac): torch.quantile's linear interpolation between order statistics rank and rank + 1."""
    r = ratio * (inner - 1)
    k = math.floor(r)
    return k, r - k


def _thresholds(name, step, x, cond, uncond, w, w_per_sample):
    """Per-sample dynamic thresholds s (float32 [B]; float64 on the torch backend with float64 x)."""
    batch = x.shape[0]
    inner = x.numel() // batch
    ratio, max_value = step.thresh
    if name == "torch":
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        xf, p = x.to(ct), cond.to(ct)
        if uncond is not None:
            u = uncond.to(ct)
            wt = w_per_sample.to(ct).reshape((-1,) + (1,) * (x.dim() - 1)) if w_per_sample is not None else w
            p = u + wt * (p - u)
        x0 = _affine((step.kx, xf), (step.kp, p))
        return torch.quantile(x0.abs().reshape(batch, -1), ratio, dim=1).clamp(1.0, max_value)
    if inner >= 2**31:
        raise ValueError(f"dynamic_threshold: samples of up to 2^31 - 1 elements on the {name} backend, got {inner}")
    s = torch.empty(batch, dtype=torch.float32, device=x.device)
    rank, frac = _select_rank(ratio, inner)
    if name == "cpp":
        _backends.load_cpp().dynamic_thresholds(_DTYPE_CODE[x.dtype], batch, inner, x.data_ptr(), cond.data_ptr(),
                                                _ptr(uncond), _ptr(w_per_sample), w, step.kx, step.kp, rank, frac,
                                                max_value, s.data_ptr())
    elif name == "cuda":
        mod = _backends.load_cuda()
        with torch.cuda.device(x.device):
            # zeroed histograms and counters (the kernels leave them zeroed, but a fresh buffer
            # from torch's caching allocator keeps this graph-capturable without host syncs)
            ws = torch.zeros(batch * mod.threshold_workspace_words(), dtype=torch.int64, device=x.device)
            mod.dynamic_thresholds(_DTYPE_CODE[x.dtype], batch, inner, x.data_ptr(), cond.data_ptr(), _ptr(uncond),
                                   _ptr(w_per_sample), w, step.kx, step.kp, rank, frac, max_value, s.data_ptr(),
                                   ws.data_ptr(), torch.cuda.current_stream(x.device).cuda_stream)
    else:
        _backends.load_kernels("threshold").dynamic_thresholds(s, x, cond, uncond, w_per_sample, w, step.kx, step.kp,
                                                               rank, frac, max_value)
    return s


def _launch(name, step, x, cond, uncond, prev, w, w_per_sample, seed, offset, out, x0=None, key=None, out_dup=None):
    n = x.numel()
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x0 is None and step.want_x0:
        x0 = torch.empty_like(out)
    if n == 0:
        return out, x0
    thr = _thresholds(name, step, x, cond, uncond, w, w_per_sample) if step.thresh is not None else None
    if key is not None and step.anoise == 0.0:
        key = None  # nothing to draw
    if name in ("cpp", "cuda"):  # the two extension modules share one signature (+ stream for cuda)
        args = (_DTYPE_CODE[x.dtype], n, n // x.shape[0], out.data_ptr(), _ptr(x0), x.data_ptr(), cond.data_ptr(),
                _ptr(uncond), _ptr(prev), _ptr(w_per_sample), w, step.kx, step.kp, step.ax, step.ap, step.a0,
                step.aprev, step.anoise, step.clip, step.lo, step.hi, seed, offset)
        if name == "cpp":
            if thr is None and key is None and out_dup is None:
                _backends.load_cpp().sampler_step(*args)
            else:
                _backends.load_cpp().sampler_step(*args, thresholds=_ptr(thr), noise_key=_ptr(key), out_dup=_ptr(out_dup))
        else:
            with torch.cuda.device(x.device):
                stream = torch.cuda.current_stream(x.device).cuda_stream
                if thr is None and key is None and out_dup is None:
                    _backends.load_cuda().sampler_step(*args, stream)
                else:
                    _backends.load_cuda().sampler_step(*args, stream, thresholds=_ptr(thr), noise_key=_ptr(key),
                                                       out_dup=_ptr(out_dup))
    elif name == "triton":
        _backends.load_kernels("diffusion").sampler_step(
            out, x0, x, cond, uncond, prev, w_per_sample, w, *step.coefs(), step.clip, step.lo, step.hi,
            seed, offset, n // x.shape[0], thresholds=thr, noise_key=key, out_dup=out_dup,
        )
    else:
        if key is not None:
            seed, offset = (_unsigned64(v) for v in key.tolist())
        _torch_step(step, x, cond, uncond, prev, w, w_per_sample, seed, offset, out, x0, thr)
        if out_dup is not None:
            out_dup.copy_(out)
    return out, x0


def _affine(*terms):
    """sum of a * t over (a, t) pairs, left to right, where a zero coefficient drops its term
    (csrc/common/step.h's term): an inf in an input the sampler's formula does not read (DDPM's
    mean reads the clipped x0, not the prediction) must not become 0 * inf = NaN."""
    r = None
    for a, t in terms:
        if a != 0.0:
            r = a * t if r is None else r + a * t
    return r if r is not None else torch.zeros_like(terms[0][1])


def _torch_step(step, x, cond, uncond, prev, w, w_per_sample, seed, offset, out, x0_out, thr=None):
    """The generic step in plain PyTorch (float64 math when x is float64, else float32)."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    shape = (-1,) + (1,) * (x.dim() - 1)
    xf, p = x.to(ct), cond.to(ct)
    if uncond is not None:
        u = uncond.to(ct)
        wt = w_per_sample.to(ct).reshape(shape) if w_per_sample is not None else w
        p = u + wt * (p - u)
    x0 = _affine((step.kx, xf), (step.kp, p))
    if step.clip:
        x0 = x0.clamp(step.lo, step.hi)
    if thr is not None:
        s = thr.to(ct).reshape(shape)
        x0 = torch.clamp(x0, -s, s) / s
    r = _affine((step.ax, xf), (step.ap, p), (step.a0, x0))
    if prev is not None and step.uses_prev:
        r = r + step.aprev * prev.to(ct)  # uses_prev: aprev != 0
    if step.anoise != 0.0:
        z = rng.ref.philox_stream("normal", x.numel(), seed, offset, device=x.device, dtype=ct).reshape(x.shape)
        r = r + step.anoise * z
    out.copy_(r)
    if x0_out is not None:
        x0_out.copy_(x0)


def _signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _unsigned64(v):
    return v + (1 << 64) if v < 0 else v


@torch.library.custom_op("genengine::sampler_step", mutates_args=())
def _sampler_step_op(
    x: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    prev: torch.Tensor | None,
    guidance: torch.Tensor | None,
    guidance_scale: float,
    coefs: list[float],
    clip: bool,
    clip_lo: float,
    clip_hi: float,
    write_x0: bool,
    seed: int,
    offset: int,
    backend: str,
    dynamic_threshold: list[float] | None = None,
    noise_key: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The generic fused step as a torch.library op (what torch.compile and CUDA graphs see).
    dynamic_threshold: None or [ratio, max_value]; noise_key: None or int64 (2,) (seed, offset),
    read in place of seed and offset."""
    step = _Step.from_coefs(coefs, (clip, clip_lo, clip_hi), write_x0, dynamic_threshold)
    out, x0 = _launch(backend, step, x.contiguous(), cond.contiguous(), _contig(uncond), _contig(prev),
                      guidance_scale, guidance, _unsigned64(seed), _unsigned64(offset), None, key=_contig(noise_key))
    return out, (x0 if x0 is not None else x.new_empty(0))


@_sampler_step_op.register_fake
def _(x, cond, uncond, prev, guidance, guidance_scale, coefs, clip, clip_lo, clip_hi, write_x0, seed, offset, backend,
      dynamic_threshold=None, noise_key=None):
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    return out, (torch.empty_like(out) if write_x0 else x.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, cond, uncond, prev, guidance, guidance_scale, coefs, clip, clip_lo, clip_hi = inputs[:10]
    ctx.save_for_backward(x, cond, uncond, guidance)
    ctx.coefs, ctx.clip, ctx.clip_lo, ctx.clip_hi = coefs, clip, clip_lo, clip_hi
    ctx.guidance_scale, ctx.has_prev = guidance_scale, prev is not None
    ctx.thresh = inputs[14] if len(inputs) > 14 else None


def _backward(ctx, grad_out, grad_x0):
    """The step is affine in (x, p, prev_x0) but for the clamp of x0, whose gradient passes inside
    [lo, hi]; p = uncond + w (cond - uncond). Computed in plain PyTorch (training is not a hot path).
    Dynamic thresholding: x0 = clamp(r, -s, s) / s with r the raw x0 and s per sample; s depends on
    r through the two order statistics torch.quantile interpolates (and not where the clamp to
    [1, max_value] is active)."""
    x, cond, uncond, guidance = ctx.saved_tensors
    kx, kp, ax, ap, a0, aprev, _ = ctx.coefs
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    g = grad_out.to(ct)
    g_x0 = a0 * g
    if grad_x0 is not None and grad_x0.numel():
        g_x0 = g_x0 + grad_x0.to(ct)
    c = cond.to(ct)
    w = 1.0
    if uncond is not None:
        u = uncond.to(ct)
        w = guidance.to(ct).reshape((-1,) + (1,) * (x.dim() - 1)) if guidance is not None else ctx.guidance_scale
        p = u + w * (c - u)
    else:
        p = c
    if ctx.clip:
        x0 = kx * x.to(ct) + kp * p
        g_x0 = g_x0 * ((x0 >= ctx.clip_lo) & (x0 <= ctx.clip_hi))
    elif ctx.thresh is not None:
        g_x0 = _threshold_backward(kx * x.to(ct) + kp * p, g_x0, *ctx.thresh)
    grad_x = ax * g + kx * g_x0
    grad_p = ap * g + kp * g_x0
    grad_cond = (grad_p * w).to(cond.dtype)
    grad_uncond = (grad_p * (1 - w)).to(uncond.dtype) if uncond is not None else None
    grad_guidance = None
    if guidance is not None and uncond is not None:
        grad_guidance = (grad_p * (c - u)).reshape(x.shape[0], -1).sum(1).to(guidance.dtype)
    grad_prev = (aprev * g).to(x.dtype) if ctx.has_prev else None
    return (grad_x.to(x.dtype), grad_cond, grad_uncond, grad_prev, grad_guidance) + (None,) * 11


def _threshold_backward(r, g, ratio, max_value):
    """Gradient wrt the raw x0 r of x0 = clamp(r, -s, s) / s, s = clamp(quantile(|r_b|, ratio), 1, max_value),
    given the gradient g wrt x0."""
    b = r.shape[0]
    rf, gf = r.reshape(b, -1), g.reshape(b, -1)
    a = rf.abs()
    q = torch.quantile(a, ratio, dim=1, keepdim=True)
    s = q.clamp(1.0, max_value)
    inside = (rf >= -s) & (rf <= s)
    grad = gf * inside / s
    # through s: d(r / s)/ds = -r / s^2 inside the clamp, 0 outside (x0 = +-1 there)
    gs = -(gf * inside * rf).sum(1, keepdim=True) / (s * s)
    gq = gs * ((q > 1.0) & (q < max_value))
    rank, frac = _select_rank(ratio, a.shape[1])
    order = a.argsort(dim=1, stable=True)
    lo, hi = order[:, rank:rank + 1], order[:, min(rank + 1, a.shape[1] - 1):][:, :1]
    ga = torch.zeros_like(a)
    ga.scatter_add_(1, lo, gq * (1.0 - frac))
    ga.scatter_add_(1, hi, gq * frac)
    return (grad + ga * torch.sign(rf)).reshape(r.shape)


torch.library.register_autograd("genengine::sampler_step", _backward, setup_context=_setup_context)


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _run(x, model_out, uncond, prev, guidance_scale, step, generator, out, backend, x0_out=None, noise_key=None,
         out_dup=None):
    """Checks, backend choice, noise key, launch of one step with coefficients `step` (a _Step).

    The eager path calls the kernel directly; tracing (torch.compile) and autograd go through the
    registered op, which carries the fake implementation and the backward formula.
    out_dup (sampling loops): a second output that receives out's values (see _check_out_dup).
    """
    if out_dup is not None and isinstance(x, torch.Tensor):
        _check_out_dup(out_dup, x, (("x", x), ("model_out", model_out), ("uncond", uncond), ("prev_x0", prev),
                                    ("out", out), ("x0_out", x0_out)))
    name, x, cond, uncond, prev, w, w_per_sample = _prepare(x, model_out, uncond, prev, guidance_scale, out, backend)
    if x0_out is not None:
        _check_out("x0_out", x0_out, x, model_out, uncond, prev)
        if out is not None and out.untyped_storage().data_ptr() == x0_out.untyped_storage().data_ptr():
            raise ValueError("x0_out: must not share memory with out")
    key = _noise_key(noise_key, x, generator)
    seed = offset = 0
    if step.anoise != 0.0 and key is None:
        seed, offset = rng.draw_key(generator, x.device)
    if torch.compiler.is_compiling() or _needs_grad(x, cond, uncond, prev, w_per_sample):
        res, x0 = _sampler_step_op(x, cond, uncond, prev if step.uses_prev else None, w_per_sample, w, step.coefs(),
                                   step.clip, step.lo, step.hi, step.want_x0, _signed64(seed), _signed64(offset), name,
                                   list(step.thresh) if step.thresh is not None else None,
                                   key if step.anoise != 0.0 else None)
        if out is not None:
            out.copy_(res)
            res = out
        if out_dup is not None:
            # out_dup may be a view of the buffer out just made require grad; reading grad_fn
            # refreshes the view's autograd metadata, without which torch takes it for a leaf
            # and refuses the in-place copy
            _ = out_dup.grad_fn
            out_dup.copy_(res)
        if x0_out is not None and step.want_x0:
            x0_out.copy_(x0)
            x0 = x0_out
        return res, (x0 if step.want_x0 else None)
    return _launch(name, step, x, cond, uncond, prev if step.uses_prev else None, w, w_per_sample, seed, offset, out,
                   x0_out, key, out_dup)


class LoopStepper:
    """Runs the precomputed steps of one sampling loop (genengine.diffusion) with the checks done once.

    The first call goes through the full checks of the public ops (shapes, dtypes, device, guidance,
    backend); later calls reuse the backend and guidance weights and launch the kernel directly:
    about 5 us less per step, the difference between a loop that costs a few diffusers ops and one
    that costs a single pass. Calls that need autograd or run under torch.compile take the
    registered-op path every time.

    out_dup: a second output, written with out's values in the same pass; a guided loop passes the
    two halves of a fresh (2B, ...) buffer as out and out_dup and feeds that buffer to the model
    next, instead of torch.cat([x, x]). Checked on the first call only (like out): later calls must
    keep it apart from every input and from out.
    """

    __slots__ = ("backend", "guidance_scale", "name", "w", "w_per_sample")

    def __init__(self, backend, guidance_scale):
        self.backend, self.guidance_scale, self.name = backend, guidance_scale, None

    def __call__(self, step, x, model_out, *, prev=None, generator=None, key=None, out=None, x0_out=None, out_dup=None):
        guidance = 1.0 if self.guidance_scale is None else self.guidance_scale
        if self.name is None or torch.compiler.is_compiling() or _needs_grad(x, model_out, prev):
            if self.name is None:
                name, _, _, _, _, self.w, self.w_per_sample = _prepare(x, model_out, None, prev, guidance, out, self.backend)
                self.name = name
            return _run(x, model_out, None, prev, guidance, step, generator, out, self.name, x0_out, key, out_dup)
        if model_out.dtype != x.dtype or model_out.device != x.device:
            _check_tensor("model_out", model_out, x)
        b = x.shape[0]
        if self.guidance_scale is not None:
            cond, uncond = _contig(model_out[b:]), _contig(model_out[:b])
        else:
            cond, uncond = _contig(model_out), None
        seed = offset = 0
        if step.anoise != 0.0 and key is None:
            seed, offset = rng.draw_key(generator, x.device)
        return _launch(self.name, step, _contig(x), cond, uncond, prev if step.uses_prev else None, self.w,
                       self.w_per_sample, seed, offset, out, x0_out, key, out_dup)


# ----------------------------------------------------------------------------------------------
# per-sampler coefficients


def _vp_conversion(prediction, a):
    """(kx, kp, ex, ep): x0 = kx x + kp p and eps = ex x + ep p, at cumulative alpha a."""
    sa, sb = math.sqrt(a), math.sqrt(1.0 - a)
    if prediction == "epsilon":
        return 1.0 / sa, -sb / sa, 0.0, 1.0
    if prediction == "v":
        return sa, -sb, sb, sa
    return 0.0, 1.0, 1.0 / sb, -sa / sb


def _sigma_conversion(prediction, sigma):
    """(kx, kp): x0 = kx x + kp p in sigma space (the model saw x / sqrt(sigma^2 + 1))."""
    if prediction == "epsilon":
        return 1.0, -sigma
    if prediction == "v":
        return 1.0 / (sigma * sigma + 1.0), -sigma / math.sqrt(sigma * sigma + 1.0)
    return 0.0, 1.0


def _alphas(alpha_bar_t, alpha_bar_prev):
    a_t = _scalar("alpha_bar_t", alpha_bar_t)
    a_prev = _scalar("alpha_bar_prev", alpha_bar_prev)
    if not 0.0 < a_t < 1.0:
        raise ValueError(f"alpha_bar_t: expected a cumulative alpha in (0, 1), got {a_t}")
    if not 0.0 < a_prev <= 1.0:
        raise ValueError(f"alpha_bar_prev: expected a cumulative alpha in (0, 1], got {a_prev}")
    return a_t, a_prev


def ddpm_step(x, model_out, alpha_bar_t, alpha_bar_prev, *, uncond=None, guidance_scale=1.0, prediction="epsilon",
              clip_x0=None, variance_type="fixed_small", generator=None, out=None, backend="auto",
              dynamic_threshold=None, noise_key=None):
    """One ancestral DDPM step (Ho et al. 2020) from cumulative alpha `alpha_bar_t` to `alpha_bar_prev`.

    x_prev = c0 * x0 + cx * x + sigma * z with the posterior mean coefficients c0, cx and the posterior
    variance ("fixed_small", or beta_t with "fixed_large"); no noise when alpha_bar_prev == 1 (the last
    step), as in diffusers. Returns x_prev, shaped like x.
    """
    step = ddpm_plan(alpha_bar_t, alpha_bar_prev, prediction, clip_x0, dynamic_threshold, variance_type)
    return _run(x, model_out, uncond, None, guidance_scale, step, generator, out, backend, None, noise_key)[0]


def ddpm_plan(alpha_bar_t, alpha_bar_prev, prediction="epsilon", clip_x0=None, dynamic_threshold=None,
              variance_type="fixed_small"):
    """ddpm_step's checked scalars as the fused kernel's coefficients (a _Step)."""
    a_t, a_prev = _alphas(alpha_bar_t, alpha_bar_prev)
    if a_prev < a_t:
        raise ValueError(f"alpha_bar_prev: a DDPM step goes to less noise, so it must be >= alpha_bar_t ({a_t}), got {a_prev}")
    pred = _prediction(prediction)
    clip = _clip_range(clip_x0)
    thresh = _dynamic_threshold(dynamic_threshold, clip)
    if variance_type not in ("fixed_small", "fixed_large"):
        raise ValueError(f"variance_type: expected 'fixed_small' or 'fixed_large', got {variance_type!r}")
    kx, kp, _, _ = _vp_conversion(pred, a_t)
    alpha_t = a_t / a_prev
    beta_t = 1.0 - alpha_t
    c0 = math.sqrt(a_prev) * beta_t / (1.0 - a_t)
    cx = math.sqrt(alpha_t) * (1.0 - a_prev) / (1.0 - a_t)
    std = 0.0
    if a_prev < 1.0:
        var = (1.0 - a_prev) / (1.0 - a_t) * beta_t if variance_type == "fixed_small" else beta_t
        std = math.sqrt(max(var, 1e-20))
    return _Step(kx, kp, cx, 0.0, c0, anoise=std, clip=clip, thresh=thresh)


def ddim_step(x, model_out, alpha_bar_t, alpha_bar_prev, *, eta=0.0, uncond=None, guidance_scale=1.0,
              prediction="epsilon", clip_x0=None, use_clipped_model_output=False, generator=None, out=None,
              backend="auto", dynamic_threshold=None, noise_key=None):
    """One DDIM step (Song et al. 2021) from cumulative alpha `alpha_bar_t` to `alpha_bar_prev`.

    x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z with s = eta * sqrt(posterior variance);
    eta = 0 is deterministic (and may go to more noise, for inversion). With clipping, eps is the
    model's own unless `use_clipped_model_output`, which re-derives it from the clipped x0 (diffusers'
    flag of the same name; it applies to dynamic thresholding too). Returns x_prev, shaped like x.
    `dynamic_threshold=(ratio, max_value)` and `noise_key` (all five steps): see the module docstring.
    """
    step = ddim_plan(alpha_bar_t, alpha_bar_prev, prediction, clip_x0, dynamic_threshold, eta, use_clipped_model_output)
    return _run(x, model_out, uncond, None, guidance_scale, step, generator, out, backend, None, noise_key)[0]


def ddim_plan(alpha_bar_t, alpha_bar_prev, prediction="epsilon", clip_x0=None, dynamic_threshold=None, eta=0.0,
              use_clipped_model_output=False):
    """ddim_step's checked scalars as the fused kernel's coefficients (a _Step)."""
    a_t, a_prev = _alphas(alpha_bar_t, alpha_bar_prev)
    eta = _scalar("eta", eta)
    if eta < 0:
        raise ValueError(f"eta: expected eta >= 0, got {eta}")
    pred = _prediction(prediction)
    clip = _clip_range(clip_x0)
    thresh = _dynamic_threshold(dynamic_threshold, clip)
    std = 0.0
    if eta > 0:
        if a_prev < a_t:
            raise ValueError(f"alpha_bar_prev: with eta > 0 it must be >= alpha_bar_t ({a_t}), got {a_prev}")
        std = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
    direction_sq = 1.0 - a_prev - std * std
    if direction_sq < 0:
        raise ValueError(f"eta: {eta} makes the noise exceed the step's variance (1 - alpha_bar_prev - std^2 < 0)")
    kx, kp, ex, ep = _vp_conversion(pred, a_t)
    d = math.sqrt(direction_sq)
    if use_clipped_model_output and (clip[0] or thresh is not None):
        sb = math.sqrt(1.0 - a_t)
        return _Step(kx, kp, d / sb, 0.0, math.sqrt(a_prev) - d * math.sqrt(a_t) / sb, anoise=std, clip=clip, thresh=thresh)
    return _Step(kx, kp, d * ex, d * ep, math.sqrt(a_prev), anoise=std, clip=clip, thresh=thresh)


def _sigmas(sigma, sigma_next):
    s = _scalar("sigma", sigma)
    sn = _scalar("sigma_next", sigma_next)
    if s <= 0:
        raise ValueError(f"sigma: expected a noise level > 0, got {s}")
    if sn < 0:
        raise ValueError(f"sigma_next: expected a noise level >= 0, got {sn}")
    return s, sn


def euler_step(x, model_out, sigma, sigma_next, *, uncond=None, guidance_scale=1.0, prediction="epsilon",
               clip_x0=None, out=None, backend="auto", dynamic_threshold=None, noise_key=None):
    """One Euler step of the probability-flow ODE in sigma space (Karras et al. 2022, Algorithm 2 without churn).

    x_next = x + (x - x0) / sigma * (sigma_next - sigma). Returns x_next, shaped like x.
    """
    step = euler_plan(sigma, sigma_next, prediction, clip_x0, dynamic_threshold)
    return _run(x, model_out, uncond, None, guidance_scale, step, None, out, backend, None, noise_key)[0]


def euler_plan(sigma, sigma_next, prediction="epsilon", clip_x0=None, dynamic_threshold=None):
    """euler_step's checked scalars as the fused kernel's coefficients (a _Step)."""
    s, sn = _sigmas(sigma, sigma_next)
    pred = _prediction(prediction)
    clip = _clip_range(clip_x0)
    thresh = _dynamic_threshold(dynamic_threshold, clip)
    kx, kp = _sigma_conversion(pred, s)
    r = sn / s
    return _Step(kx, kp, r, 0.0, 1.0 - r, clip=clip, thresh=thresh)


def euler_ancestral_step(x, model_out, sigma, sigma_next, *, uncond=None, guidance_scale=1.0, prediction="epsilon",
                         clip_x0=None, generator=None, out=None, backend="auto", dynamic_threshold=None, noise_key=None):
    """One Euler ancestral step: an Euler step to sigma_down, then fresh noise of std sigma_up.

    sigma_up = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2), sigma_down = sqrt(sigma_next^2 -
    sigma_up^2) (eta = 1, as in diffusers and k-diffusion). Returns x_next, shaped like x.
    """
    step = euler_ancestral_plan(sigma, sigma_next, prediction, clip_x0, dynamic_threshold)
    return _run(x, model_out, uncond, None, guidance_scale, step, generator, out, backend, None, noise_key)[0]


def euler_ancestral_plan(sigma, sigma_next, prediction="epsilon", clip_x0=None, dynamic_threshold=None):
    """euler_ancestral_step's checked scalars as the fused kernel's coefficients (a _Step)."""
    s, sn = _sigmas(sigma, sigma_next)
    if sn > s:
        raise ValueError(f"sigma_next: an ancestral step goes to less noise, so it must be <= sigma ({s}), got {sn}")
    pred = _prediction(prediction)
    clip = _clip_range(clip_x0)
    thresh = _dynamic_threshold(dynamic_threshold, clip)
    kx, kp = _sigma_conversion(pred, s)
    sigma_up = math.sqrt(sn * sn * (s * s - sn * sn) / (s * s))
    sigma_down = math.sqrt(max(sn * sn - sigma_up * sigma_up, 0.0))
    r = sigma_down / s
    return _Step(kx, kp, r, 0.0, 1.0 - r, anoise=sigma_up, clip=clip, thresh=thresh)


def dpmpp_2m_step(x, model_out, sigma, sigma_next, *, prev_x0=None, sigma_prev=None, uncond=None,
                  guidance_scale=1.0, prediction="epsilon", clip_x0=None, out=None, x0_out=None, backend="auto",
                  dynamic_threshold=None, noise_key=None):
    """One DPM-Solver++(2M) step in sigma space (Lu et al. 2022; the multistep midpoint form).

    With the previous step's x0 (`prev_x0`, at noise level `sigma_prev`) the step is second order;
    without it, or when sigma_next == 0, it is first order (then x_next = x0 at sigma 0).
    Returns (x_next, x0): pass x0 back as `prev_x0` (and this sigma as `sigma_prev`) next step.
    `out` and `x0_out` are optional preallocated outputs (a loop can ping-pong two x0 buffers).
    """
    if prev_x0 is not None and sigma_prev is None:
        raise ValueError("sigma_prev: required with prev_x0 (the noise level prev_x0 was predicted at)")
    step = dpmpp_2m_plan(sigma, sigma_next, sigma_prev if prev_x0 is not None else None, prediction, clip_x0,
                         dynamic_threshold)
    return _run(x, model_out, uncond, prev_x0, guidance_scale, step, None, out, backend, x0_out, noise_key)


def dpmpp_2m_plan(sigma, sigma_next, sigma_prev=None, prediction="epsilon", clip_x0=None, dynamic_threshold=None):
    """dpmpp_2m_step's checked scalars as the fused kernel's coefficients (a _Step); second order when
    sigma_prev (the noise level of the previous x0) is given and 0 < sigma_next < sigma; a zero-size
    step (sigma_next == sigma) returns x unchanged."""
    s, sn = _sigmas(sigma, sigma_next)
    pred = _prediction(prediction)
    clip = _clip_range(clip_x0)
    thresh = _dynamic_threshold(dynamic_threshold, clip)
    kx, kp = _sigma_conversion(pred, s)
    r = sn / s
    if sigma_prev is not None:
        sp = _scalar("sigma_prev", sigma_prev)
        if not sp > s:
            raise ValueError(f"sigma_prev: expected a noise level above sigma ({s}), got {sp}")
        if sn > s:
            raise ValueError(f"sigma_next: a second-order step needs sigma_next <= sigma ({s}), got {sn}")
    # sigma_next == sigma (h = 0; e.g. Karras sigmas ending at sigma_min with final_sigmas_type="sigma_min"):
    # the second-order update is the identity there (diffusers' too), so take the first-order form,
    # whose coefficients are exactly x_next = 1 * x + 0 * x0 on every backend
    if sigma_prev is None or sn == 0 or sn == s:
        return _Step(kx, kp, r, 0.0, 1.0 - r, clip=clip, want_x0=True, thresh=thresh)
    h = math.log(s / sn)
    ratio = math.log(sp / s) / h
    a0 = (1.0 - r) * (1.0 + 1.0 / (2.0 * ratio))
    aprev = -(1.0 - r) / (2.0 * ratio)
    return _Step(kx, kp, r, 0.0, a0, aprev=aprev, clip=clip, want_x0=True, thresh=thresh)


__all__ = ["ddpm_step", "ddim_step", "euler_step", "euler_ancestral_step", "dpmpp_2m_step"]
# the textbook formulas (genengine.reference.diffusion) are the specification; re-exported for users
reference = ref
