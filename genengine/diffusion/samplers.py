"""Whole denoising loops: DDPM, DDIM, Euler, Euler ancestral and DPM-Solver++(2M).

    sampler = DDIM(schedule, steps=50, prediction="epsilon")
    x0 = sampler.sample(model, x_T, guidance_scale=7.5, cond=c, uncond=u, generator=g)

Shapes: x_T is unit-variance noise (B, *sample_shape), any rank (latents, audio, video); the
sampler scales it itself (diffusers' `init_noise_sigma`). `model(x, t, cond)` returns the
prediction (epsilon, v or x0) for x; t has shape (B,) on x's device, int64 timesteps for DDPM,
DDIM and DPM-Solver++, float32 ones (fractional with Karras sigmas) for Euler and Euler ancestral,
exactly as the matching diffusers scheduler hands them to its UNet. Sigma-space samplers keep x in
sigma space and call the model on x / sqrt(sigma^2 + 1), so a model trained for DDPM works unchanged
with every sampler. With guidance the model is called once per step on the stacked batch
(cat([x, x]), cat([t, t]), cat([uncond, cond])) and the fused step combines the two halves.

Every schedule quantity is computed once, on the host, when the sampler is built (the timestep
rules replicate diffusers' numpy code, so ported configs give the same timesteps): a step is one
model call and one fused step kernel whose coefficients are launch arguments. The loop never reads
device memory from the host, so on CUDA it queues all steps without waiting, and
`sample(..., cuda_graph=True)` captures the whole loop (model included) once per input signature
and replays it; per-step noise keys then live in a device table written before each replay.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .._progress import progress_bar
from ..ops import diffusion as steps_ops
from ..ops import rng
from .schedule import NoiseSchedule

_SPACINGS = ("leading", "trailing", "linspace")
_PREDICTION_ALIASES = {"epsilon": "epsilon", "v": "v", "v_prediction": "v", "x0": "x0", "sample": "x0"}


# ----------------------------------------------------------------------------------------------
# timestep rules (numpy, as diffusers computes them, so the integers and float32 values agree)


def _spaced_timesteps(rule, T, n, spacing, steps_offset):
    """The inference timesteps, most noisy first. rule "discrete" (DDPM, DDIM) gives int64,
    "sigma" (Euler family) float32 before interpolation."""
    if spacing == "linspace":
        if rule == "discrete":
            return np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
        return np.linspace(0, T - 1, n, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        ratio = T // n
        t = (np.arange(0, n) * ratio).round()[::-1].copy()
        t = t.astype(np.int64 if rule == "discrete" else np.float32)
        return t + steps_offset
    ratio = T / n
    t = np.round(np.arange(T, 0, -ratio))
    return t.astype(np.int64 if rule == "discrete" else np.float32) - 1


def _dpm_timesteps(T, n, spacing, steps_offset, last_timestep):
    if spacing == "linspace":
        return np.linspace(0, last_timestep - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = last_timestep // (n + 1)
        return (np.arange(0, n + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64) + steps_offset
    return np.arange(last_timestep, 0, -T / n).round().copy().astype(np.int64) - 1


def _train_sigmas32(schedule):
    acp = schedule.alphas_cumprod.to(torch.float32)
    return (((1 - acp) / acp) ** 0.5).numpy()


def _sigma_to_t(sigma, log_sigmas):
    """Fractional timestep whose log-sigma interpolates linearly to log(sigma)."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
    return ((1 - w) * low + w * high).reshape(np.shape(sigma))


def _karras(sigma_min, sigma_max, n, rho=7.0):
    """Karras et al. 2022, eq. 5: sigmas evenly spaced in sigma^(1/rho)."""
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_number(name, v, lo=None, hi=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise TypeError(f"{name}: expected a real number, got {v!r}")
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        raise ValueError(f"{name}: expected a value in {'(' if lo_open else '['}{lo}, {hi}], got {v}")
    return float(v)


def _check_guidance(guidance_scale, batch, device):
    if guidance_scale is None:
        return None
    if isinstance(guidance_scale, torch.Tensor):
        if guidance_scale.numel() not in (1, batch):
            raise ValueError(f"guidance_scale: expected a number or one weight per sample ({batch}), "
                             f"got a tensor of shape {tuple(guidance_scale.shape)}")
        if guidance_scale.device.type == "cpu":  # a device tensor is not read back: that would sync
            if not bool(torch.isfinite(guidance_scale).all()):  # NaN / inf would silently turn samples NaN
                raise ValueError("guidance_scale: expected finite weights, got NaN or inf")
            if bool((guidance_scale < 0).any()):
                raise ValueError("guidance_scale: expected weights >= 0")
            if guidance_scale.device != device:
                guidance_scale = guidance_scale.to(device)
        return guidance_scale.reshape(-1) if guidance_scale.numel() == batch else guidance_scale.reshape(())
    w = _check_number("guidance_scale", guidance_scale)
    if w < 0:
        raise ValueError(f"guidance_scale: expected a weight >= 0 (1 = conditional only), got {w}")
    return w


# ----------------------------------------------------------------------------------------------
# the samplers


class Sampler:
    """The shared loop. Subclasses fill in the per-step plan in `_plan_steps`."""

    name = "sampler"
    #: "vp": x is the VP sample (model input x); "sigma": x = x_vp * sqrt(sigma^2 + 1)
    space = "vp"
    _default_spacing = "leading"
    _model_timestep_dtype = torch.int64
    #: the matching diffusers scheduler's config keys and their defaults (from_diffusers_config)
    _diffusers_defaults: dict = {}
    #: config keys we read; every other known key must keep its default
    _diffusers_supported: tuple = ()

    def __init__(self, schedule, steps=50, *, prediction="epsilon", prediction_type=None, timestep_spacing=None,
                 steps_offset=0, clip_sample=False, clip_sample_range=1.0, thresholding=False,
                 dynamic_thresholding_ratio=0.995, sample_max_value=1.0, backend="auto"):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule: expected a genengine.diffusion.NoiseSchedule, got {type(schedule).__name__}")
        T = schedule.num_train_timesteps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        if steps > T:
            raise ValueError(f"steps: {steps} exceeds the schedule's {T} training timesteps")
        if prediction_type is not None:
            prediction = prediction_type
        if prediction not in _PREDICTION_ALIASES:
            raise ValueError(f"prediction: expected 'epsilon', 'v' or 'x0' (or 'v_prediction', 'sample'), got {prediction!r}")
        spacing = self._default_spacing if timestep_spacing is None else timestep_spacing
        _check_choice("timestep_spacing", spacing, _SPACINGS)
        if isinstance(steps_offset, bool) or not isinstance(steps_offset, int) or steps_offset < 0:
            raise ValueError(f"steps_offset: expected an int >= 0, got {steps_offset!r}")
        self.schedule, self.steps, self.prediction = schedule, steps, _PREDICTION_ALIASES[prediction]
        self.timestep_spacing, self.steps_offset, self.backend = spacing, steps_offset, backend
        self.clip_x0 = None
        self.dynamic_threshold = None
        if thresholding:
            ratio = _check_number("dynamic_thresholding_ratio", dynamic_thresholding_ratio, 0.0, 1.0, lo_open=True)
            max_value = _check_number("sample_max_value", sample_max_value, 1.0)
            self.dynamic_threshold = (ratio, max_value)
        elif clip_sample:
            self.clip_x0 = _check_number("clip_sample_range", clip_sample_range, 0.0, lo_open=True)
        self._graphs = {}
        self._device_timesteps = {}
        self._plan_steps()
        if self.timesteps.numel() != self.steps:
            raise ValueError(f"steps: the {spacing!r} spacing gave {self.timesteps.numel()} timesteps for {steps} steps")

    # -- configuration -------------------------------------------------------------------------

    @classmethod
    def from_diffusers_config(cls, config, steps, **overrides):
        """The sampler a diffusers scheduler with this saved config (the dict of a
        scheduler_config.json) runs for `steps` steps: same schedule, timesteps and trajectory.

        Keys starting with "_" and keys the matching diffusers scheduler does not have are ignored;
        a key it has that changes the trajectory in a way not supported here raises ValueError
        unless it holds the default. Missing keys take that scheduler's defaults (note: diffusers'
        DDPM and DDIM clip x0 to [-1, 1] by default). `overrides` are constructor arguments.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict (a scheduler_config.json), got {type(config).__name__}")
        cfg = dict(cls._diffusers_defaults)
        cfg.update({k: v for k, v in config.items() if not k.startswith("_") and k in cls._diffusers_defaults})
        for key, value in cfg.items():
            if key not in cls._diffusers_supported and key not in _SCHEDULE_KEYS:
                default = cls._diffusers_defaults[key]
                if value != default and not (value is None and default is None):
                    raise ValueError(f"config[{key!r}]: {value!r} is not supported by genengine.diffusion.{cls.__name__} "
                                     f"(only the default {default!r})")
        schedule = NoiseSchedule.from_diffusers_config(cfg)
        kwargs = {k: cfg[k] for k in cls._diffusers_supported if k in cfg}
        kwargs.update(overrides)
        return cls(schedule, steps, **kwargs)

    def _plan_steps(self):
        """Sets self.timesteps and self._steps (one _Step per step); each concrete sampler defines it."""
        raise NotImplementedError(f"{type(self).__name__}: Sampler is the shared base; use DDPM, DDIM, Euler, "
                                  "EulerAncestral or DPMSolverPP2M")

    def __repr__(self):
        return (f"{type(self).__name__}({self.schedule!r}, steps={self.steps}, prediction={self.prediction!r}, "
                f"timestep_spacing={self.timestep_spacing!r})")

    # -- the loop ------------------------------------------------------------------------------

    @property
    def init_noise_sigma(self):
        """How much x_T (unit variance) is scaled by before the first step (diffusers' attribute)."""
        return 1.0

    @property
    def _init_scale(self):
        """x_T's factor into the loop's variable (sigma samplers carry the model input x / c)."""
        return self.init_noise_sigma

    _final_scale = 1.0

    def _timesteps_on(self, device):
        ts = self._device_timesteps.get(device)
        if ts is None:
            ts = self.timesteps.to(self._model_timestep_dtype).to(device)
            self._device_timesteps[device] = ts
        return ts

    def sample(self, model, x_T, *, guidance_scale=None, cond=None, uncond=None, generator=None, progress=False,
               cuda_graph=False):
        """Runs all steps from unit-variance noise x_T (B, ...) and returns the final sample.

        guidance_scale: None (no guidance), a number >= 0 or one weight per sample; with it, `cond`
        and `uncond` (same shape, batch first) are required and the model sees them stacked
        [uncond; cond]. Without guidance `cond` (or None) is passed to the model as is.
        generator: a torch.Generator on x_T's device for the stochastic samplers' noise.
        cuda_graph: capture the whole loop (model included) in a CUDA graph and replay it (CUDA
        tensors only; the first call per input signature captures). Gives the same result as the
        eager loop for the same generator state.
        """
        if not callable(model):
            raise TypeError(f"model: expected a callable model(x, t, cond), got {type(model).__name__}")
        if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point():
            raise TypeError(f"x_T: expected a floating-point torch.Tensor, got {getattr(x_T, 'dtype', type(x_T).__name__)}")
        if x_T.dim() == 0 or x_T.shape[0] == 0:
            raise ValueError(f"x_T: expected a batch-first tensor with at least one sample, got shape {tuple(x_T.shape)}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        batch = x_T.shape[0]
        w = _check_guidance(guidance_scale, batch, x_T.device)
        if isinstance(w, float) and w == 1.0:
            w = None  # uncond + 1 * (cond - uncond) = cond: the unconditional half is not needed
            if uncond is not None and cond is None:
                raise ValueError("cond: guidance needs the conditioning (cond) as well as uncond")
        model_cond = cond
        if w is not None:
            if cond is None or uncond is None:
                raise ValueError("uncond: guidance needs both cond and uncond (the unconditional input of the model)")
            for name, c in (("cond", cond), ("uncond", uncond)):
                if not isinstance(c, torch.Tensor):
                    raise TypeError(f"{name}: expected a torch.Tensor, got {type(c).__name__}")
                if c.dim() == 0 or c.shape[0] != batch:
                    raise ValueError(f"{name}: expected a batch of {batch} first, got shape {tuple(c.shape)}")
            if cond.shape != uncond.shape:
                raise ValueError(f"uncond: expected cond's shape {tuple(cond.shape)}, got {tuple(uncond.shape)}")
            model_cond = torch.cat([uncond, cond.to(uncond.dtype)])
        if cuda_graph:
            if x_T.device.type != "cuda":
                raise ValueError(f"cuda_graph: needs CUDA tensors, x_T is on {x_T.device}")
            return self._sample_graphed(model, x_T, w, model_cond, generator)
        x = x_T * self._init_scale
        return self._loop(model, x, w, model_cond, generator, None, progress)

    def _loop(self, model, x, w, model_cond, generator, noise_keys, progress):
        ts = self._timesteps_on(x.device)
        guided = w is not None
        batch = x.shape[0]
        n_model = 2 * batch if guided else batch
        stepper = steps_ops.LoopStepper(self.backend, w)
        prev_x0 = None
        # with guidance the model sees [x; x]: each step writes its result into both halves of a
        # fresh buffer (the kernel's second store), so no step pays for a torch.cat
        x_in = torch.cat([x, x]) if guided else x
        for i in progress_bar(range(self.steps), total=self.steps, desc=self.name, enabled=progress):
            out = model(x_in, ts[i].expand(n_model), model_cond)
            if not isinstance(out, torch.Tensor) or out.shape != x_in.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"model: returned {got} for an input of shape {tuple(x_in.shape)}; expected the same shape")
            if out.dtype != x.dtype:
                out = out.to(x.dtype)
            step = self._steps[i]
            key = noise_keys[i] if noise_keys is not None and step.anoise != 0.0 else None
            kw = {}
            if guided and i + 1 < self.steps:
                nxt = torch.empty_like(x_in)
                kw = {"out": nxt[:batch], "out_dup": nxt[batch:]}
            prev = prev_x0 if step.uses_prev else None
            x, x0 = stepper(step, x, out, prev=prev, generator=generator, key=key, **kw)
            if step.want_x0:  # DPM-Solver++ keeps the previous x0
                prev_x0 = x0
            x_in = nxt if kw else x
        return x * self._final_scale if self._final_scale != 1.0 else x

    # -- CUDA graphs ---------------------------------------------------------------------------

    def _sample_graphed(self, model, x_T, w, model_cond, generator):
        if isinstance(model_cond, torch.Tensor):
            cond_sig = (tuple(model_cond.shape), model_cond.dtype)
        else:  # any other conditioning object is captured as it is, by identity
            cond_sig = ("object", id(model_cond))
        signature = (id(model), tuple(x_T.shape), x_T.dtype, x_T.device,
                     None if w is None else (w if isinstance(w, float) else (tuple(w.shape), w.dtype)), cond_sig)
        if signature not in self._graphs:
            self._graphs[signature] = self._capture(model, x_T, w, model_cond, generator)
        entry = self._graphs[signature]
        if entry is None:  # this model could not be captured (a warning said why): run eagerly
            return self._loop(model, x_T * self._init_scale, w, model_cond, generator, None, False)
        graph, static, out, _ = entry
        static["x"].copy_(x_T)
        if "cond" in static:
            static["cond"].copy_(model_cond)
        if "w" in static:
            static["w"].copy_(w)
        self._write_keys(static["keys"], generator, x_T.device)
        graph.replay()
        return out.clone()

    def _key_table(self, generator, device):
        """This run's per-step noise keys (steps, 2) int64 on the host, drawn exactly as the eager
        loop draws them (one per noisy step, in order)."""
        table = torch.zeros(self.steps, 2, dtype=torch.int64)
        for i, step in enumerate(self._steps):
            if step.anoise != 0.0:
                seed, offset = rng.draw_key(generator, device)
                table[i, 0] = seed - (1 << 64) if seed >= 1 << 63 else seed
                table[i, 1] = offset - (1 << 64) if offset >= 1 << 63 else offset
        return table

    def _write_keys(self, keys, generator, device):
        """Copies the keys into the device table the captured kernels read (asynchronously)."""
        keys.copy_(self._key_table(generator, device).pin_memory(), non_blocking=True)

    def release_graphs(self):
        """Drops the captured CUDA graphs (and the models and buffers they keep alive)."""
        self._graphs.clear()

    def _capture(self, model, x_T, w, model_cond, generator):
        device = x_T.device
        static = {"x": x_T.clone(), "keys": torch.zeros(self.steps, 2, dtype=torch.int64, device=device)}
        if isinstance(model_cond, torch.Tensor):
            static["cond"] = model_cond.clone()
        else:
            static["cond_object"] = model_cond  # kept alive with the graph: its id() is in the signature
        if isinstance(w, torch.Tensor):
            static["w"] = w.clone()

        def run():
            x = static["x"] * self._init_scale
            cond = static["cond"] if "cond" in static else static["cond_object"]
            return self._loop(model, x, static.get("w", w), cond, None, static["keys"], False)

        # warm up on a side stream first (lazy initialisation, autotuning) as graph capture requires
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = run()
        except Exception as e:  # a model that synchronises or allocates on the host side
            warnings.warn(f"cuda_graph: the loop could not be captured ({type(e).__name__}: {e}); "
                          "running it without a graph", RuntimeWarning, stacklevel=3)
            return None
        return graph, static, out, model  # the model stays referenced, so its id() is not reused


# per-sampler configuration keys that only shape the schedule (read by NoiseSchedule.from_diffusers_config)
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr")

_COMMON_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                    "trained_betas": None, "prediction_type": "epsilon", "steps_offset": 0, "rescale_betas_zero_snr": False}


class _VPSampler(Sampler):
    """Samplers on the discrete timesteps in VP space (DDPM, DDIM)."""

    def _vp_timesteps(self):
        T = self.schedule.num_train_timesteps
        t = _spaced_timesteps("discrete", T, self.steps, self.timestep_spacing, self.steps_offset)
        if t.size and (t.max() > T - 1 or t.min() < 0):
            raise ValueError(f"steps_offset: timesteps {t.min()}..{t.max()} leave the schedule's 0..{T - 1}")
        self.timesteps = torch.from_numpy(t.copy())
        return t.tolist()

    def _acp(self, t):
        return float(self.schedule.alphas_cumprod[t])

    def _limits(self):
        return {"prediction": self.prediction, "clip_x0": self.clip_x0, "dynamic_threshold": self.dynamic_threshold}


class DDPM(_VPSampler):
    """Ancestral sampling of Ho et al. 2020 on a subsequence of the training timesteps.

    Each step goes from timestep t to the next one in `timesteps` (alpha_bar = 1 after the last),
    with the posterior variance ("fixed_small") or beta_t ("fixed_large"). Diffusers adds noise of
    std 1e-10 at a final step whose t > 0 ("fixed_small"; beta_t with "fixed_large"); this adds none.
    """

    name = "ddpm"
    _diffusers_defaults = {**_COMMON_DEFAULTS, "variance_type": "fixed_small", "clip_sample": True, "thresholding": False,
                           "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
                           "timestep_spacing": "leading"}
    _diffusers_supported = ("prediction_type", "variance_type", "clip_sample", "clip_sample_range", "thresholding",
                            "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing", "steps_offset")

    def __init__(self, schedule, steps=50, *, variance_type="fixed_small", **kwargs):
        if variance_type == "fixed_small_log":  # the same standard deviation, stored as a log
            variance_type = "fixed_small"
        self.variance_type = _check_choice("variance_type", variance_type, ("fixed_small", "fixed_large"))
        super().__init__(schedule, steps, **kwargs)

    def _plan_steps(self):
        t = self._vp_timesteps()
        prev = t[1:] + [-1]
        self._steps = [steps_ops.ddpm_plan(self._acp(ti), self._acp(tp) if tp >= 0 else 1.0, variance_type=self.variance_type,
                                           **self._limits()) for ti, tp in zip(t, prev)]


class DDIM(_VPSampler):
    """Song et al. 2021: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z, s = eta * sigma_t.

    As in diffusers, the previous timestep is t - T // steps whatever the spacing, and after the
    last step alpha_bar is 1 (`set_alpha_to_one`) or alpha_bar[0].
    """

    name = "ddim"
    _diffusers_defaults = {**_COMMON_DEFAULTS, "clip_sample": True, "set_alpha_to_one": True, "thresholding": False,
                           "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
                           "timestep_spacing": "leading"}
    _diffusers_supported = ("prediction_type", "clip_sample", "set_alpha_to_one", "clip_sample_range", "thresholding",
                            "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing", "steps_offset")

    def __init__(self, schedule, steps=50, *, eta=0.0, set_alpha_to_one=True, use_clipped_model_output=False, **kwargs):
        self.eta = _check_number("eta", eta, 0.0)
        self.set_alpha_to_one = bool(set_alpha_to_one)
        self.use_clipped_model_output = bool(use_clipped_model_output)
        super().__init__(schedule, steps, **kwargs)

    def _plan_steps(self):
        t = self._vp_timesteps()
        T = self.schedule.num_train_timesteps
        final = 1.0 if self.set_alpha_to_one else self._acp(0)
        prev = [ti - T // self.steps for ti in t]
        self._steps = [steps_ops.ddim_plan(self._acp(ti), self._acp(tp) if tp >= 0 else final, eta=self.eta,
                                           use_clipped_model_output=self.use_clipped_model_output, **self._limits())
                       for ti, tp in zip(t, prev)]


def _in_vp_space(step, c, c_next):
    """The same sigma-space step acting on y = x / c and returning y_next = x_next / c_next, with
    c = sqrt(sigma^2 + 1): y is exactly the model input, so the loop never rescales x."""
    kx, kp, ax, ap, a0, aprev, anoise = step.coefs()
    coefs = [kx * c, kp, ax * c / c_next, ap / c_next, a0 / c_next, aprev / c_next, anoise / c_next]
    return steps_ops._Step.from_coefs(coefs, (step.clip, step.lo, step.hi), step.want_x0, step.thresh)


class _SigmaSampler(Sampler):
    """Samplers in sigma space (x = x_vp * sqrt(sigma^2 + 1)): Euler, Euler ancestral, DPM-Solver++.

    The loop carries y = x / sqrt(sigma^2 + 1), the model's input, with each step's coefficients
    rescaled accordingly (_in_vp_space); the result is converted back at the end.
    """

    space = "sigma"
    _default_spacing = "linspace"
    _model_timestep_dtype = torch.float32

    def __init__(self, schedule, steps=50, *, use_karras_sigmas=False, sigma_min=None, sigma_max=None,
                 final_sigmas_type="zero", **kwargs):
        self.use_karras_sigmas = bool(use_karras_sigmas)
        self.sigma_min = None if sigma_min is None else _check_number("sigma_min", sigma_min, 0.0, lo_open=True)
        self.sigma_max = None if sigma_max is None else _check_number("sigma_max", sigma_max, 0.0, lo_open=True)
        self.final_sigmas_type = _check_choice("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min"))
        super().__init__(schedule, steps, **kwargs)

    def _set_sigmas(self, sigmas, timesteps):
        """sigmas: the `steps` noise levels (float32 values); appends the final one."""
        train = _train_sigmas32(self.schedule)
        last = float(train[0]) if self.final_sigmas_type == "sigma_min" else 0.0
        sig = np.concatenate([np.asarray(sigmas, dtype=np.float64), [last]]).astype(np.float32)
        t = np.asarray(timesteps)
        T = self.schedule.num_train_timesteps
        if t.size and (t.max() > T - 1 or t.min() < 0):
            raise ValueError(f"steps_offset: timesteps {t.min()}..{t.max()} leave the schedule's 0..{T - 1}")
        self.sigmas = torch.from_numpy(sig)
        self.timesteps = torch.from_numpy(t.astype(np.float32))
        self._sig = [float(s) for s in sig]  # host copies: the loop never indexes a device table
        self._c = [math.sqrt(s * s + 1.0) for s in self._sig]

    def _karras_range(self, default_min, default_max):
        lo = self.sigma_min if self.sigma_min is not None else float(default_min)
        hi = self.sigma_max if self.sigma_max is not None else float(default_max)
        # sigma_min > sigma_max would give an increasing (noise-adding) schedule
        if not lo < hi:
            raise ValueError(f"sigma_min, sigma_max: Karras sigmas need sigma_min < sigma_max, got sigma_min={lo}, "
                             f"sigma_max={hi}" + ("" if self.sigma_min is not None and self.sigma_max is not None
                                                   else " (the other one is the schedule's)"))
        return lo, hi

    def _euler_sigmas(self):
        T = self.schedule.num_train_timesteps
        t = _spaced_timesteps("sigma", T, self.steps, self.timestep_spacing, self.steps_offset)
        train = _train_sigmas32(self.schedule)
        if t.size and (t.max() > T - 1 or t.min() < 0):
            raise ValueError(f"steps_offset: timesteps {t.min()}..{t.max()} leave the schedule's 0..{T - 1}")
        sig = np.interp(t, np.arange(0, len(train)), train)
        if self.use_karras_sigmas:
            lo, hi = self._karras_range(sig[-1], sig[0])
            sig = _karras(lo, hi, self.steps)
            t = np.array([_sigma_to_t(s, np.log(train)) for s in sig])
        self._set_sigmas(sig, t)

    @property
    def init_noise_sigma(self):
        top = max(self._sig)
        return top if self.timestep_spacing in ("linspace", "trailing") else math.sqrt(top * top + 1.0)

    @property
    def _init_scale(self):
        return self.init_noise_sigma / self._c[0]

    @property
    def _final_scale(self):
        return self._c[-1]  # back to sigma space (diffusers' Euler returns x, not x_vp)

    def _limits(self):
        return {"prediction": self.prediction, "clip_x0": self.clip_x0, "dynamic_threshold": self.dynamic_threshold}

    def _vp(self, i, step):
        return _in_vp_space(step, self._c[i], self._c[i + 1])


_SIGMA_DEFAULTS = {**_COMMON_DEFAULTS, "timestep_spacing": "linspace"}


class Euler(_SigmaSampler):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn)."""

    name = "euler"
    _diffusers_defaults = {**_SIGMA_DEFAULTS, "interpolation_type": "linear", "use_karras_sigmas": False,
                           "use_exponential_sigmas": False, "use_beta_sigmas": False, "sigma_min": None, "sigma_max": None,
                           "timestep_type": "discrete", "final_sigmas_type": "zero"}
    _diffusers_supported = ("prediction_type", "use_karras_sigmas", "sigma_min", "sigma_max", "timestep_spacing",
                            "steps_offset", "final_sigmas_type")

    def _plan_steps(self):
        self._euler_sigmas()
        self._steps = [self._vp(i, steps_ops.euler_plan(self._sig[i], self._sig[i + 1], **self._limits()))
                       for i in range(self.steps)]


class EulerAncestral(_SigmaSampler):
    """Euler ancestral: an Euler step down to sigma_down, then fresh noise of std sigma_up (eta = 1)."""

    name = "euler_ancestral"
    _diffusers_defaults = dict(_SIGMA_DEFAULTS)
    _diffusers_supported = ("prediction_type", "timestep_spacing", "steps_offset")

    def _plan_steps(self):
        self._euler_sigmas()
        self._steps = [self._vp(i, steps_ops.euler_ancestral_plan(self._sig[i], self._sig[i + 1], **self._limits()))
                       for i in range(self.steps)]


class DPMSolverPP2M(_SigmaSampler):
    """DPM-Solver++(2M) (Lu et al. 2022), multistep second order in log-SNR, as diffusers'
    DPMSolverMultistepScheduler with algorithm_type="dpmsolver++", solver_type="midpoint".

    The first step is first order (no history); the last step is first order when
    `lower_order_final` and steps < 15, or `euler_at_final`, or the final sigma is zero
    (`final_sigmas_type="zero"`). `solver_order=1` gives DPM-Solver++(1) (DDIM-like) throughout.
    Returns the VP sample (x / sqrt(sigma_last^2 + 1)), as diffusers does. Model timesteps are
    int64 (Karras timesteps rounded, except for the cosine schedule).
    """

    name = "dpmpp_2m"
    _model_timestep_dtype = torch.int64
    _diffusers_defaults = {**_SIGMA_DEFAULTS, "solver_order": 2, "thresholding": False, "dynamic_thresholding_ratio": 0.995,
                           "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint",
                           "lower_order_final": True, "euler_at_final": False, "use_karras_sigmas": False,
                           "use_exponential_sigmas": False, "use_beta_sigmas": False, "use_lu_lambdas": False,
                           "use_flow_sigmas": False, "flow_shift": 1.0, "final_sigmas_type": "zero",
                           "lambda_min_clipped": -math.inf, "variance_type": None, "use_dynamic_shifting": False,
                           "time_shift_type": "exponential"}
    _diffusers_supported = ("prediction_type", "solver_order", "thresholding", "dynamic_thresholding_ratio",
                            "sample_max_value", "lower_order_final", "euler_at_final", "use_karras_sigmas",
                            "final_sigmas_type", "lambda_min_clipped", "timestep_spacing", "steps_offset")

    def __init__(self, schedule, steps=50, *, solver_order=2, lower_order_final=True, euler_at_final=False,
                 lambda_min_clipped=-math.inf, **kwargs):
        self.solver_order = _check_choice("solver_order", solver_order, (1, 2))
        self.lower_order_final = bool(lower_order_final)
        self.euler_at_final = bool(euler_at_final)
        self.lambda_min_clipped = float(lambda_min_clipped)
        super().__init__(schedule, steps, **kwargs)

    def _plan_steps(self):
        T = self.schedule.num_train_timesteps
        acp = self.schedule.alphas_cumprod.to(torch.float32)
        lambdas = torch.log(acp.sqrt()) - torch.log((1 - acp).sqrt())
        clipped = int(torch.searchsorted(torch.flip(lambdas, [0]), self.lambda_min_clipped))
        t = _dpm_timesteps(T, self.steps, self.timestep_spacing, self.steps_offset, T - clipped)
        train = _train_sigmas32(self.schedule)
        if self.use_karras_sigmas:
            flipped = np.flip(train).copy()
            lo, hi = self._karras_range(flipped[-1], flipped[0])
            sig = _karras(lo, hi, self.steps)
            t = np.array([_sigma_to_t(s, np.log(train)) for s in sig])
            if self.schedule.kind != "cosine":
                t = t.round()
        else:
            sig = np.interp(t, np.arange(0, len(train)), train)
        self._set_sigmas(sig, t.astype(np.int64))
        self.timesteps = self.timesteps.to(torch.int64)
        n, plans = self.steps, []
        for i in range(n):
            last = i == n - 1
            first_order = (self.solver_order == 1 or i == 0 or (last and (
                self.euler_at_final or (self.lower_order_final and n < 15) or self.final_sigmas_type == "zero")))
            sigma_prev = None if first_order else self._sig[i - 1]
            if sigma_prev is not None and sigma_prev == self._sig[i]:
                # a repeated timestep (more steps than the spacing has distinct timesteps, e.g. steps == T):
                # the step after it has no log-SNR gap to its history (diffusers divides by zero there)
                raise ValueError(f"steps: {n} steps with timestep_spacing={self.timestep_spacing!r} repeat timestep "
                                 f"{int(self.timesteps[i])} of the schedule's {T}; DPM-Solver++(2M) needs distinct "
                                 "timesteps (use fewer steps or solver_order=1)")
            plans.append(self._vp(i, steps_ops.dpmpp_2m_plan(self._sig[i], self._sig[i + 1], sigma_prev, **self._limits())))
        self._steps = plans

    @property
    def init_noise_sigma(self):
        return 1.0  # diffusers' DPM-Solver works on the VP sample: x_T is the unit-variance noise itself

    @property
    def _init_scale(self):
        return 1.0  # the loop's variable y is the VP sample

    @property
    def _final_scale(self):
        return 1.0  # y is the VP sample diffusers returns


SAMPLERS = {"ddpm": DDPM, "ddim": DDIM, "euler": Euler, "euler_ancestral": EulerAncestral, "dpmpp_2m": DPMSolverPP2M}
