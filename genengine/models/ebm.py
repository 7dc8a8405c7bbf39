"""Energy-based models p(x) ~ exp(-E(x)) with E a neural network, sampled by Langevin dynamics on the
fused step genengine.ops.langevin_step and trained by persistent contrastive divergence with a
replay buffer (Du & Mordatch 2019, "Implicit generation and modeling with energy-based models").

    ebm = ge.models.EBM(energy_net, sample_shape=(2,)).fit(x, epochs=20)   # energy_net(x) -> (N,) or (N, 1)
    xs = ebm.sample(500, steps=100, step_size=0.01)                        # (500, 2)

Shapes: x (N, *sample_shape). The Langevin step is x <- x - step_size / 2 * dE/dx + sqrt(step_size) *
noise_scale * N(0, 1), optionally clamped (e.g. to the data range); noise_scale = 1 samples exp(-E)
itself, smaller values (common when training) sample a sharpened law.
"""

from __future__ import annotations

import collections

import torch
from torch import nn

from .. import ops
from .._progress import Progress
from .base import GenerativeModel, check_data

__all__ = ["EBM"]


class EBM(GenerativeModel):
    """An energy-based model around `energy_net` (any nn.Module mapping (N, *sample_shape) to N energies)."""

    likelihood = None

    def __init__(self, energy_net, *, sample_shape=None, buffer_size=10000, reinit_prob=0.05, init_range=(-1.0, 1.0),
                 clamp=None, noise_scale=1.0, backend="auto"):
        super().__init__()
        if not isinstance(energy_net, nn.Module):
            raise TypeError(f"energy_net: expected an nn.Module, got {type(energy_net).__name__}")
        self.energy_net = energy_net
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else None
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 0:
            raise ValueError(f"buffer_size: expected an int >= 0, got {buffer_size!r}")
        if not 0.0 <= float(reinit_prob) <= 1.0:
            raise ValueError(f"reinit_prob: expected a probability in [0, 1], got {reinit_prob!r}")
        self.buffer_size, self.reinit_prob = buffer_size, float(reinit_prob)
        self.init_range = (float(init_range[0]), float(init_range[1]))
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))
        self.noise_scale, self.backend = float(noise_scale), backend
        self._buffer = collections.deque(maxlen=buffer_size) if buffer_size else None

    def log_prob(self, x):
        raise NotImplementedError("EBM has no normalised likelihood: its partition function is intractable; "
                                  "use energy(x), which is -log p(x) up to a constant")

    def energy(self, x):
        """E(x), (N,)."""
        e = self.energy_net(x)
        return e.reshape(e.shape[0]) if e.dim() > 1 else e

    def _device(self):
        for p in self.energy_net.parameters():
            return p.device
        return torch.device("cpu")

    def _noise(self, n, generator):
        if self.sample_shape is None:
            raise ValueError("sample_shape: unknown; pass it to EBM(...) or call fit() first, or give init=")
        lo, hi = self.init_range
        return (lo + (hi - lo) * torch.rand((n, *self.sample_shape), generator=generator)).to(self._device())

    def _init(self, n, init, replay_buffer, generator):
        if isinstance(init, torch.Tensor):
            if init.shape[0] != n:
                raise ValueError(f"init: expected {n} rows (n), got {init.shape[0]}")
            return init.detach().to(self._device(), torch.float32).clone()
        if init not in ("buffer", "noise"):
            raise ValueError(f"init: expected a tensor, 'buffer' or 'noise', got {init!r}")
        x = self._noise(n, generator)
        if init == "buffer" and replay_buffer and self._buffer:
            buf = torch.stack(list(self._buffer))
            take = torch.rand(n, generator=generator) >= self.reinit_prob
            idx = torch.randint(0, buf.shape[0], (n,), generator=generator)
            x[take.to(x.device)] = buf[idx[take]].to(x.device)
        return x

    def langevin(self, x, *, steps=60, step_size=0.01, noise_scale=None, generator=None):
        """`steps` Langevin steps from x (a new tensor is returned; the network's gradients are untouched)."""
        _check_steps(steps)
        ns = self.noise_scale if noise_scale is None else noise_scale
        # only dE/dx is needed: freeze the network meanwhile, then give each parameter back its own flag
        # (the user may have frozen some of them)
        params = list(self.energy_net.parameters())
        trainable = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            for _ in range(steps):
                xg = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    grad = torch.autograd.grad(self.energy(xg).sum(), xg)[0]
                x = ops.langevin_step(x.detach(), grad, step_size, noise_scale=ns, clamp=self.clamp, generator=generator,
                                      backend=self.backend)
        finally:
            for p, flag in zip(params, trainable):
                p.requires_grad_(flag)
        return x

    def sample(self, n, *, generator=None, steps=60, step_size=0.01, init="buffer", replay_buffer=True, noise_scale=None):
        """n samples by Langevin dynamics from `init`: "buffer" (the replay buffer, each chain re-drawn from
        uniform noise over init_range with probability reinit_prob), "noise", or a tensor (n, *sample_shape).
        replay_buffer=True stores the results in the buffer (persistent chains across calls)."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        _check_steps(steps)
        x = self._init(n, init, replay_buffer, generator)
        x = self.langevin(x, steps=steps, step_size=step_size, noise_scale=noise_scale, generator=generator)
        if replay_buffer and self._buffer is not None:
            self._buffer.extend(x.detach().cpu().unbind(0))
        return x

    def fit(self, data, *, epochs=20, batch_size=128, lr=1e-3, steps=20, step_size=0.01, noise_scale=None, alpha=0.1,
            progress=True, callback=None, generator=None):
        """Persistent contrastive divergence: per batch, negatives from `steps` Langevin steps started from the
        replay buffer; loss = mean E(data) - mean E(negatives) + alpha (mean E(data)^2 + mean E(negatives)^2)
        (the regulariser keeps energies near 0), Adam. callback(model, {"epoch", "loss", "energy_gap"})."""
        x = check_data(data, "data", dtype=torch.float32, min_rows=1)
        _check_steps(steps)
        if self.sample_shape is None:
            self.sample_shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"data: expected samples of shape {self.sample_shape}, got {tuple(x.shape[1:])}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        dev = self._device()
        x = x.to(dev)
        opt = torch.optim.Adam(self.energy_net.parameters(), lr=lr)
        bar = Progress(epochs, "ebm fit", enabled=progress)
        try:
            for epoch in range(epochs):
                perm = torch.randperm(x.shape[0], generator=g).to(dev)
                tot, gap, nb = 0.0, 0.0, 0
                for s0 in range(0, x.shape[0], batch_size):
                    xb = x[perm[s0:s0 + batch_size]]
                    neg = self.sample(xb.shape[0], generator=g, steps=steps, step_size=step_size, noise_scale=noise_scale)
                    e_pos, e_neg = self.energy(xb), self.energy(neg.detach())
                    loss = e_pos.mean() - e_neg.mean() + alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += loss.item()
                    gap += (e_neg.mean() - e_pos.mean()).item()
                    nb += 1
                bar.update(1, loss=f"{tot / nb:.4f}")
                if callback is not None and callback(self, {"epoch": epoch, "loss": tot / nb, "energy_gap": gap / nb}):
                    break
        finally:
            bar.close()
        return self

    # fit() derives sample_shape and fills the replay buffer: both are fitted state that save/load must keep
    def get_extra_state(self):
        buffer = torch.stack(list(self._buffer)) if self._buffer else None
        return {"sample_shape": list(self.sample_shape) if self.sample_shape is not None else None, "buffer": buffer}

    def set_extra_state(self, state):
        state = state if isinstance(state, dict) else {}  # tolerate files written before this state existed
        shape = state.get("sample_shape")
        if shape is not None:
            self.sample_shape = tuple(int(d) for d in shape)
        if self._buffer is not None:
            self._buffer.clear()
            buffer = state.get("buffer")
            if buffer is not None:
                self._buffer.extend(buffer.detach().cpu().unbind(0))


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected an int >= 0, got {steps!r}")
