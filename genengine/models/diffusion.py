"""Denoising diffusion models: train a denoiser on data, then sample with any genengine.diffusion sampler.

    x, y = ge.data.ring_of_gaussians(4000)
    model = ge.models.DiffusionModel(ge.models.MLPDenoiser(2)).fit(x, epochs=200, batch_size=256)
    samples = model.sample(1000, sampler="dpmpp_2m", steps=25)

Shapes: data samples have shape (N, *sample_shape) (e.g. (N, 2) points, (N, C, H, W) images,
(N, C, L) audio); sample(n) returns (n, *sample_shape) float32. Class labels are int64 (N,) in
[0, num_classes); the denoiser's extra class index num_classes is the "null" class: training drops
labels to it with probability cond_drop_prob, and classifier-free guidance uses it as the
unconditional branch. The denoiser is called as denoiser(x, t, cond) with t (B,) timesteps in
[0, num_train_timesteps) and returns the prediction (epsilon, v or x0, per `prediction`) of x's shape.

Training: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with t uniform over the training steps, and
the mean squared error against eps ("epsilon"), v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 ("v") or
x0 ("x0"). An exponential moving average (EMA) of the weights is kept in `ema_denoiser` and used for
sampling; it is part of the state dict, as are the schedule's betas, the sample shape and the
loss history (extra state).
"""

from __future__ import annotations

import copy
import math
import numbers

import torch
from torch import nn

from .._checks import positive_int as _positive_int
from .._progress import Progress
from .base import FitRecord, GenerativeModel

__all__ = ["DiffusionModel"]

_PREDICTIONS = ("epsilon", "v", "x0")


def _diffusion():
    # imported on first use: genengine.diffusion and genengine.models import each other's package
    from .. import diffusion

    return diffusion


def _real(name, v, lo, hi, lo_open=False, hi_open=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    v = float(v)
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ValueError(f"{name}: expected a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {v}")
    return v


class DiffusionModel(FitRecord, GenerativeModel):
    """A diffusion model around a denoiser (e.g. genengine.models.UNet or MLPDenoiser).

    DiffusionModel(denoiser, schedule=None, *, prediction="epsilon", sample_shape=None, num_classes=None,
                   cond_drop_prob=0.1)
        schedule: a genengine.diffusion.NoiseSchedule (None: NoiseSchedule.linear(1000))
        prediction: what the denoiser predicts, "epsilon", "v" or "x0"
        sample_shape: the shape of one sample (None: taken from the data in fit)
        num_classes: classes for conditioning (None: the denoiser's num_classes)
        cond_drop_prob: probability that a training label is replaced by the null class

    fit(data, ...) trains and returns self; sample(n, ...) draws (n, *sample_shape) samples.
    """

    _fit_record = {"history": []}  # plain-Python fit results (FitRecord)

    def __init__(self, denoiser: nn.Module, schedule=None, *, prediction: str = "epsilon", sample_shape=None,
                 num_classes: int | None = None, cond_drop_prob: float = 0.1):
        super().__init__()
        if not isinstance(denoiser, nn.Module):
            raise TypeError(f"denoiser: expected a torch.nn.Module called as denoiser(x, t, cond), got {type(denoiser).__name__}")
        if schedule is None:
            schedule = _diffusion().NoiseSchedule.linear(1000)
        elif isinstance(schedule, dict):  # the plain-data form get_config() saves (see there)
            try:
                schedule = _diffusion().NoiseSchedule(schedule["betas"], kind=schedule.get("kind", "custom"),
                                                      alphas_cumprod=schedule["alphas_cumprod"])
            except KeyError as e:
                raise ValueError(f"schedule: a dict schedule needs 'betas' and 'alphas_cumprod' (missing {e})") from None
        for attr in ("betas", "alphas_cumprod", "num_train_timesteps"):
            if not hasattr(schedule, attr):
                raise TypeError(f"schedule: expected a genengine.diffusion.NoiseSchedule (no .{attr} on {type(schedule).__name__})")
        if prediction not in _PREDICTIONS:
            raise ValueError(f"prediction: expected one of {', '.join(map(repr, _PREDICTIONS))}, got {prediction!r}")
        den_classes = getattr(denoiser, "num_classes", None)
        if num_classes is None:
            num_classes = den_classes
        else:
            num_classes = _positive_int("num_classes", num_classes)
            if hasattr(denoiser, "num_classes") and den_classes != num_classes:
                raise ValueError(f"num_classes: {num_classes} does not match the denoiser's num_classes {den_classes}")
        self.denoiser = denoiser
        self.schedule = schedule
        self.prediction = prediction
        self.num_classes = num_classes
        self.cond_drop_prob = _real("cond_drop_prob", cond_drop_prob, 0.0, 1.0)
        self.history: list[float] = []

        # the EMA copy never trains by gradient; ema_steps counts its updates (0: no EMA, sample with
        # the raw weights); both live in the state dict so a reloaded model samples identically
        self.ema_denoiser = copy.deepcopy(denoiser).requires_grad_(False)
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("betas", schedule.betas.detach().to(torch.float64).cpu().clone())
        self.register_buffer("_sample_shape", torch.zeros(0, dtype=torch.long))
        # the samplers' own table (float32 products, as diffusers computes them), so training and
        # sampling see the same noise levels; derived from betas, hence not saved
        self.register_buffer("_abar", schedule.alphas_cumprod.detach().to(torch.float32).clone(), persistent=False)
        self._has_shape = False
        if sample_shape is not None:
            self._set_sample_shape(self._shape_arg("sample_shape", sample_shape))

    def get_config(self) -> dict:
        """The constructor arguments; the schedule as plain data (its float64 betas and alphas_cumprod,
        both exactly as the samplers use them), so save() can store it and load() rebuilds the identical
        schedule (bit-identical samples)."""
        cfg = super().get_config()
        s = cfg.get("schedule")
        if s is not None and not isinstance(s, dict):
            cfg["schedule"] = {"betas": s.betas.detach().cpu().clone(), "alphas_cumprod": s.alphas_cumprod.detach().cpu().clone(),
                               "kind": str(getattr(s, "kind", "custom"))}
        return cfg

    # ------------------------------------------------------------------------------------------
    # sample shape (a buffer of variable length, so it rides in the state dict)

    @staticmethod
    def _shape_arg(name, shape):
        if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
            shape = (shape,)
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(f"{name}: expected a tuple of positive ints, got {type(shape).__name__}") from None
        if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0 for s in shape):
            raise ValueError(f"{name}: expected a non-empty tuple of positive ints, got {shape!r}")
        return tuple(int(s) for s in shape)

    def _set_sample_shape(self, shape):
        self._sample_shape = torch.tensor(shape, dtype=torch.long, device=self._sample_shape.device)
        self._has_shape = True

    @property
    def sample_shape(self) -> tuple | None:
        """The shape of one sample, or None before fit (when not given to the constructor)."""
        return tuple(int(s) for s in self._sample_shape.tolist()) if self._has_shape else None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "_sample_shape"
        if key in state_dict:
            incoming = tuple(int(s) for s in state_dict[key].tolist())
            if incoming:
                if self._has_shape and incoming != self.sample_shape:
                    raise ValueError(
                        f"state_dict: sample_shape {incoming} does not match this model's sample_shape {self.sample_shape}"
                    )
                self._set_sample_shape(incoming)
        bkey = prefix + "betas"
        if bkey in state_dict:
            theirs = state_dict[bkey]
            if theirs.shape != self.betas.shape or not torch.equal(theirs.to(self.betas), self.betas):
                raise ValueError(
                    "state_dict: its noise schedule (betas) differs from this model's schedule; build the model with the "
                    "schedule it was trained with"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ------------------------------------------------------------------------------------------
    # training

    def _device(self):
        p = next(self.denoiser.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _batches(self, data, labels, batch_size, generator):
        """One epoch of (x, y-or-None) batches."""
        if isinstance(data, torch.Tensor):
            n = data.shape[0]
            perm = torch.randperm(n, generator=generator, device=generator.device if generator is not None else "cpu")
            perm = perm.to(data.device)
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                yield data[idx], (labels[idx.to(labels.device)] if labels is not None else None)
            return
        for item in data:
            if isinstance(item, torch.Tensor):
                yield item, None
            elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor):
                yield item[0], item[1]
            elif isinstance(item, (tuple, list)) and len(item) == 1 and isinstance(item[0], torch.Tensor):
                yield item[0], None
            else:
                raise TypeError(
                    f"data: each batch must be a tensor or an (x, y) pair of tensors, got {type(item).__name__}"
                    + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
                )

    def _check_batch(self, x, y, where):
        if not x.is_floating_point():
            raise TypeError(f"data: expected floating-point samples, got {x.dtype}{where}")
        if x.dim() < 2 or x.shape[0] == 0:
            raise ValueError(f"data: expected a batch of shape (N, *sample_shape) with N > 0, got {tuple(x.shape)}{where}")
        # before any weight changes: one NaN would turn every weight into NaN; float64 data is checked as
        # the float32 it is trained in (values beyond float32's range become inf)
        wide = x.dtype == torch.float64
        if not bool(torch.isfinite(x.float() if wide else x).all()):
            raise ValueError("data: contains NaN or infinite values" + (" (once converted to float32, the dtype "
                             "training uses)" if wide else "") + where)
        shape = tuple(x.shape[1:])
        if not self._has_shape:
            self._set_sample_shape(shape)
        elif shape != self.sample_shape:
            raise ValueError(f"data: samples of shape {shape}, but this model's sample_shape is {self.sample_shape}{where}")
        if self.num_classes is None:
            if y is not None:
                raise ValueError("labels: this model is unconditional (num_classes=None), so it takes no labels")
            return
        if y is None:
            raise ValueError(
                f"labels: this model is class-conditional (num_classes={self.num_classes}); pass labels=, or (x, y) batches"
            )
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"labels: expected an int64 tensor, got {type(y).__name__}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"labels: expected integer class labels, got {y.dtype}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels: expected shape ({x.shape[0]},) (one per sample), got {tuple(y.shape)}{where}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"labels: expected class labels in [0, {self.num_classes}), got values in [{lo}, {hi}]{where}")

    def loss(self, x0: torch.Tensor, labels: torch.Tensor | None = None, *, generator=None) -> torch.Tensor:
        """The training loss on one batch x0 (B, *sample_shape): mean squared error of the denoiser's
        prediction at uniformly drawn timesteps (labels dropped to the null class with cond_drop_prob)."""
        b = x0.shape[0]
        dev = x0.device
        gdev = generator.device if generator is not None else dev
        t = torch.randint(0, self.betas.shape[0], (b,), generator=generator, device=gdev).to(dev)
        eps = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(dev)
        abar = self._abar.to(dev)[t].reshape(b, *(1,) * (x0.dim() - 1))
        a, s = abar.sqrt(), (1 - abar).sqrt()
        xt = a * x0 + s * eps
        cond = None
        if self.num_classes is not None:
            cond = labels.to(device=dev, dtype=torch.long)
            if self.cond_drop_prob > 0:
                drop = torch.rand(b, generator=generator, device=gdev).to(dev) < self.cond_drop_prob
                cond = torch.where(drop, torch.full_like(cond, self.num_classes), cond)
        target = eps if self.prediction == "epsilon" else (a * eps - s * x0 if self.prediction == "v" else x0)
        return torch.mean((self.denoiser(xt, t, cond) - target) ** 2)


    @torch.no_grad()
    def _ema_update(self, decay):
        # warm-up (as in TF's ExponentialMovingAverage): early on the average would be dominated by
        # the random initial weights, so the effective decay starts small and approaches `decay`
        k = int(self.ema_steps)
        d = 0.0 if k == 0 else min(decay, (1 + k) / (10 + k))
        for pe, p in zip(self.ema_denoiser.parameters(), self.denoiser.parameters()):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.ema_denoiser.buffers(), self.denoiser.buffers()):
            be.copy_(b)
        self.ema_steps += 1

    def fit(self, data, *, epochs: int = 10, lr: float = 1e-3, batch_size: int = 128, ema: float | None = 0.999,
            labels=None, weight_decay: float = 0.0, grad_clip: float | None = 1.0, progress: bool = True,
            generator=None, callback=None):
        """Train the denoiser; returns self. `history` gets one mean loss per epoch.

        data: a tensor (N, *sample_shape) (shuffled each epoch into batches of batch_size, with
            labels (N,) for a class-conditional model), or a re-iterable (DataLoader, list) of
            tensors or (x, y) pairs (batch_size and labels unused).
        ema: decay of the weight average used for sampling, in (0, 1); None trains without one (and
            sampling then uses the raw weights).
        grad_clip: maximum gradient norm (None: no clipping).
        generator: a torch.Generator for the shuffling, timesteps, noise and label dropout.
        callback: called as callback(model, {"epoch": epoch, "loss": mean loss}) after each epoch
            (the genengine.models.base protocol); returning True stops.
        """
        epochs = _positive_int("epochs", epochs)
        batch_size = _positive_int("batch_size", batch_size)
        lr = _real("lr", lr, 0.0, math.inf, lo_open=True, hi_open=True)
        weight_decay = _real("weight_decay", weight_decay, 0.0, math.inf, hi_open=True)
        if ema is not None:
            ema = _real("ema", ema, 0.0, 1.0, lo_open=True, hi_open=True)
        if grad_clip is not None:
            grad_clip = _real("grad_clip", grad_clip, 0.0, math.inf, lo_open=True, hi_open=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
        if isinstance(data, torch.Tensor):
            self._check_batch(data, labels, "")
            total = epochs * math.ceil(data.shape[0] / batch_size)
        else:
            if labels is not None:
                raise ValueError("labels: pass labels with a data tensor; an iterable of batches carries (x, y) pairs")
            if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
                raise TypeError(f"data: expected a tensor (N, *sample_shape) or an iterable of batches, got {type(data).__name__}")
            try:
                total = epochs * len(data)
            except TypeError:
                total = None

        if ema is None:
            self.ema_steps.zero_()
        device = self._device()
        opt = torch.optim.AdamW(self.denoiser.parameters(), lr=lr, weight_decay=weight_decay)
        was_training = self.training
        self.train()
        bar = Progress(total, "fit", progress)
        try:
            for epoch in range(epochs):
                total_loss, count = 0.0, 0
                for i, (x, y) in enumerate(self._batches(data, labels, batch_size, generator)):
                    if not isinstance(data, torch.Tensor):
                        self._check_batch(x, y, f" (batch {i} of epoch {epoch})")
                    x = x.to(device=device, dtype=torch.float32)
                    loss = self.loss(x, y, generator=generator)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(self.denoiser.parameters(), grad_clip)
                    opt.step()
                    if ema is not None:
                        self._ema_update(ema)
                    total_loss += float(loss.detach()) * x.shape[0]
                    count += x.shape[0]
                    bar.update(1, epoch=epoch + 1, loss=f"{total_loss / count:.4f}")
                if count == 0:
                    raise ValueError(
                        f"data: epoch {epoch} yielded no batches (an iterator is used up after one pass; pass a "
                        "DataLoader, a list or a tensor)"
                    )
                self.history.append(total_loss / count)
                if callback is not None and callback(self, {"epoch": epoch, "loss": self.history[-1]}):
                    break
        finally:
            bar.close()
            self.train(was_training)
        return self

    # ------------------------------------------------------------------------------------------
    # sampling

    def forward(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """The denoiser used for sampling (the EMA weights once trained with EMA) on (x, t, cond)."""
        return self._sampling_denoiser()(x, t, cond)

    def _sampling_denoiser(self):
        return self.ema_denoiser if int(self.ema_steps) > 0 else self.denoiser

    def _cond_arg(self, cond, n, device):
        if cond is None:
            return None
        if isinstance(cond, numbers.Integral) and not isinstance(cond, bool):
            cond = torch.full((n,), int(cond), dtype=torch.long)
        if not isinstance(cond, torch.Tensor):
            raise TypeError(f"cond: expected a class label (int) or an int64 tensor of shape ({n},), got {type(cond).__name__}")
        if cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
            raise TypeError(f"cond: expected integer class labels, got {cond.dtype}")
        if cond.dim() == 0:
            cond = cond.reshape(1).expand(n)
        if cond.shape != (n,):
            raise ValueError(f"cond: expected a class label or shape ({n},) (one per sample), got {tuple(cond.shape)}")
        lo, hi = int(cond.min()), int(cond.max())
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"cond: expected class labels in [0, {self.num_classes}), got values in [{lo}, {hi}]")
        return cond.to(device=device, dtype=torch.long)

    def sample(self, n: int, *, sampler: str = "ddim", steps: int = 50, guidance_scale=None, cond=None, generator=None,
               progress: bool = False, **sampler_kwargs) -> torch.Tensor:
        """Draw n samples (n, *sample_shape) float32 with the named genengine.diffusion sampler
        ("ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m"), built as
        SAMPLERS[sampler](schedule, steps, prediction=..., **sampler_kwargs).

        cond: a class label or (n,) labels (class-conditional models; None samples the null class,
            i.e. unconditionally). guidance_scale: classifier-free guidance weight (needs cond).
        generator: a torch.Generator for the initial noise and the sampler's noise.
        """
        n = _positive_int("n", n)
        steps = _positive_int("steps", steps)
        samplers = _diffusion().SAMPLERS
        if not isinstance(sampler, str) or sampler not in samplers:
            raise ValueError(f"sampler: expected one of {', '.join(map(repr, samplers))}, got {sampler!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if not self._has_shape:
            raise RuntimeError("sample: the sample shape is unknown; call fit(data) first or pass sample_shape= to the constructor")
        if self.num_classes is None and cond is not None:
            raise ValueError("cond: this model is unconditional (num_classes=None), so it takes no class labels")
        if guidance_scale is not None:
            if self.num_classes is None:
                raise ValueError("guidance_scale: classifier-free guidance needs a class-conditional model (num_classes)")
            if cond is None:
                raise ValueError("guidance_scale: guidance needs cond (the class labels to guide towards)")
        device = self._device()
        cond = self._cond_arg(cond, n, device)
        uncond = None
        if guidance_scale is not None:
            uncond = torch.full((n,), self.num_classes, dtype=torch.long, device=device)

        gdev = generator.device if generator is not None else device
        x_t = torch.randn((n, *self.sample_shape), generator=generator, device=gdev, dtype=torch.float32).to(device)
        runner = samplers[sampler](self.schedule, steps, prediction=self.prediction, **sampler_kwargs)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return runner.sample(self._sampling_denoiser(), x_t, guidance_scale=guidance_scale, cond=cond,
                                     uncond=uncond, generator=generator, progress=progress)
        finally:
            self.train(was_training)
