"""Trainable denoisers for diffusion models: a small UNet (1-D audio, 2-D images, 3-D video) and an MLP
for low-dimensional data. Both are called as `denoiser(x, t, cond=None)`, the signature the samplers of
genengine.diffusion use, and return a prediction of x's shape (epsilon, v or x0: the denoiser does not
care which; genengine.models.DiffusionModel picks the training target).

Shapes:
    UNet, dims=1: x (B, C, L)          dims=2: x (B, C, H, W)          dims=3: x (B, C, T, H, W)
         every spatial size divisible by 2 ** (len(channel_mults) - 1) (each level halves all of them)
    MLPDenoiser:  x (B, dim)
    t:    timesteps, shape (B,) or a scalar (a 0-d tensor or a Python number) broadcast over the batch;
          int64 discrete steps or float (fractional steps from the sigma-space samplers) in the
          schedule's step units [0, num_train_timesteps)
    cond: None, or int64 class labels of shape (B,) in [0, num_classes]; the extra index num_classes
          (and cond=None) is the learned "null" class that classifier-free guidance uses as the
          unconditional branch. Only models built with num_classes take labels.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import positive_int as _positive_int
from ..nn import GroupNormSiLU

__all__ = ["UNet", "MLPDenoiser", "timestep_embedding"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _optional_classes(num_classes):
    return None if num_classes is None else _positive_int("num_classes", num_classes)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) float32: [cos(t f_k), sin(t f_k)] with frequencies
    f_k = max_period ** (-k / half) for k < half = dim // 2 (a zero column pads an odd dim)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(max_period) / half))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _batch_t(t, x):
    """t as a float32 (B,) tensor on x's device."""
    b = x.shape[0]
    if isinstance(t, torch.Tensor):
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t: expected an integer or floating-point tensor, got {t.dtype}")
        if t.dim() == 0 or t.shape == (1,):
            t = t.reshape(1).expand(b)
        elif t.shape != (b,):
            raise ValueError(f"t: expected a scalar or shape ({b},) (x's batch), got {tuple(t.shape)}")
        return t.to(device=x.device, dtype=torch.float32)
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"t: expected a tensor or a number, got {type(t).__name__}")
    return torch.full((b,), float(t), device=x.device, dtype=torch.float32)


def _class_index(cond, x, num_classes):
    """cond as (B,) int64 class indices, with None meaning the null class num_classes."""
    b = x.shape[0]
    if num_classes is None:
        if cond is not None:
            raise ValueError("cond: this denoiser was built without num_classes, so it takes no class labels")
        return None
    if cond is None:
        return torch.full((b,), num_classes, device=x.device, dtype=torch.long)
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"cond: expected an int64 tensor of class labels or None, got {type(cond).__name__}")
    if cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
        raise TypeError(f"cond: expected integer class labels, got {cond.dtype}")
    if cond.dim() == 0 or cond.shape == (1,):
        cond = cond.reshape(1).expand(b)
    elif cond.shape != (b,):
        raise ValueError(f"cond: expected shape ({b},) (x's batch), got {tuple(cond.shape)}")
    if not torch.compiler.is_compiling() and cond.numel() and (int(cond.min()) < 0 or int(cond.max()) > num_classes):
        raise ValueError(
            f"cond: class labels must lie in [0, {num_classes}] ({num_classes} is the null class), "
            f"got values in [{int(cond.min())}, {int(cond.max())}]"
        )
    return cond.to(device=x.device, dtype=torch.long)


class _TimeClassEmbedding(nn.Module):
    """(t, class) -> one vector per sample: an MLP over the sinusoidal embedding, plus a learned
    class embedding (num_classes + 1 rows, the last the null class)."""

    def __init__(self, freq_dim, out_dim, num_classes):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.classes = nn.Embedding(num_classes + 1, out_dim) if num_classes is not None else None

    def forward(self, t, labels):
        emb = self.mlp(timestep_embedding(t, self.freq_dim))
        if self.classes is not None:
            emb = emb + self.classes(labels)
        return emb


class _ResBlock(nn.Module):
    """GroupNorm+SiLU -> conv -> (+ time/class embedding) -> GroupNorm+SiLU -> conv, plus a skip
    (1x1 conv where the channel count changes). The last conv starts at zero so that every block
    starts as the identity, which keeps a deep stack trainable from the first step."""

    def __init__(self, conv, in_ch, out_ch, emb_dim, num_groups):
        super().__init__()
        self.norm1 = GroupNormSiLU(num_groups, in_ch)
        self.conv1 = conv(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = GroupNormSiLU(num_groups, out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(self.norm1(x))
        h = h + self.emb(F.silu(emb)).reshape(*h.shape[:2], *(1,) * (h.dim() - 2))
        h = self.conv2(self.norm2(h))
        return self.skip(x) + h


class _Down(nn.Module):
    def __init__(self, conv, ch):
        super().__init__()
        self.conv = conv(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, conv, ch):
        super().__init__()
        self.conv = conv(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """A small UNet denoiser. Levels l = 0..len(channel_mults)-1 run at base_channels * channel_mults[l]
    channels, each with num_res_blocks residual blocks; every level after the first halves all spatial
    sizes (stride-2 conv) and the decoder mirrors it (nearest upsampling + conv), concatenating the
    encoder's activations (skip connections). dims picks the convolution: 1 for audio (B, C, L),
    2 for images (B, C, H, W), 3 for video (B, C, T, H, W).

    forward(x, t, cond=None) -> x's shape with out_channels channels (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        base_channels: int = 32,
        channel_mults=(1, 2),
        num_res_blocks: int = 1,
        num_groups: int = 8,
        num_classes: int | None = None,
        time_embed_dim: int | None = None,
        dims: int = 2,
    ):
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        out_channels = in_channels if out_channels is None else _positive_int("out_channels", out_channels)
        base_channels = _positive_int("base_channels", base_channels)
        num_res_blocks = _positive_int("num_res_blocks", num_res_blocks)
        num_groups = _positive_int("num_groups", num_groups)
        if isinstance(dims, bool) or dims not in _CONV:
            raise ValueError(f"dims: expected 1 (audio, (B, C, L)), 2 (images) or 3 (video, (B, C, T, H, W)), got {dims!r}")
        if isinstance(channel_mults, (str, bytes)) or not hasattr(channel_mults, "__iter__"):
            raise TypeError(f"channel_mults: expected a sequence of positive ints, got {type(channel_mults).__name__}")
        channel_mults = tuple(_positive_int("channel_mults", m) for m in channel_mults)
        if not channel_mults:
            raise ValueError("channel_mults: expected at least one level, got an empty sequence")
        chans = [base_channels * m for m in channel_mults]
        bad = [c for c in [base_channels, *chans] if c % num_groups]
        if bad:
            raise ValueError(
                f"num_groups: {num_groups} must divide every channel count, but {bad[0]} is not a multiple "
                f"(channels per level: {chans})"
            )
        num_classes = _optional_classes(num_classes)
        emb_dim = 4 * base_channels if time_embed_dim is None else _positive_int("time_embed_dim", time_embed_dim)

        self.in_channels, self.out_channels, self.dims = in_channels, out_channels, dims
        self.num_classes, self.channel_mults, self.num_res_blocks = num_classes, channel_mults, num_res_blocks
        self.downsample_factor = 2 ** (len(chans) - 1)
        conv = _CONV[dims]

        self.embed = _TimeClassEmbedding(base_channels, emb_dim, num_classes)
        self.conv_in = conv(in_channels, base_channels, 3, padding=1)

        # encoder: every block's output (and every downsampled map) is kept for the decoder
        self.down = nn.ModuleList()
        skip_ch = [base_channels]
        ch = base_channels
        for level, c in enumerate(chans):
            for _ in range(num_res_blocks):
                self.down.append(_ResBlock(conv, ch, c, emb_dim, num_groups))
                ch = c
                skip_ch.append(ch)
            if level < len(chans) - 1:
                self.down.append(_Down(conv, ch))
                skip_ch.append(ch)
        self.mid = nn.ModuleList([_ResBlock(conv, ch, ch, emb_dim, num_groups) for _ in range(2)])

        # decoder: num_res_blocks + 1 blocks per level, each eating one saved map
        self.up = nn.ModuleList()
        for level in reversed(range(len(chans))):
            c = chans[level]
            for _ in range(num_res_blocks + 1):
                self.up.append(_ResBlock(conv, ch + skip_ch.pop(), c, emb_dim, num_groups))
                ch = c
            if level > 0:
                self.up.append(_Up(conv, ch))
        self.norm_out = GroupNormSiLU(num_groups, ch)
        self.conv_out = conv(ch, out_channels, 3, padding=1)

    def _check(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        layout = {1: "(B, C, L)", 2: "(B, C, H, W)", 3: "(B, C, T, H, W)"}[self.dims]
        if x.dim() != self.dims + 2:
            raise ValueError(f"x: this UNet (dims={self.dims}) expects {layout}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} channels (dim 1), got shape {tuple(x.shape)}")
        f = self.downsample_factor
        if any(s % f for s in x.shape[2:]):
            raise ValueError(
                f"x: spatial sizes {tuple(x.shape[2:])} must be divisible by {f} "
                f"(= 2 ** (len(channel_mults) - 1), the total downsampling); pad or crop the input"
            )

    def forward(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        self._check(x)
        emb = self.embed(_batch_t(t, x), _class_index(cond, x, self.num_classes))
        h = self.conv_in(x)
        saved = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, _ResBlock) else block(h)
            saved.append(h)
        for block in self.mid:
            h = block(h, emb)
        for block in self.up:
            if isinstance(block, _ResBlock):
                h = block(torch.cat([h, saved.pop()], dim=1), emb)
            else:
                h = block(h)
        return self.conv_out(self.norm_out(h))


class _MLPBlock(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, emb):
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + emb))


class MLPDenoiser(nn.Module):
    """A residual MLP denoiser for low-dimensional data x (B, dim): `depth` pre-norm residual blocks of
    width `hidden`, with the time (and class) embedding added inside every block.

    forward(x, t, cond=None) -> (B, dim) (see the module docstring).
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, num_classes: int | None = None, time_embed_dim: int = 64):
        super().__init__()
        self.dim = _positive_int("dim", dim)
        hidden = _positive_int("hidden", hidden)
        depth = _positive_int("depth", depth)
        time_embed_dim = _positive_int("time_embed_dim", time_embed_dim)
        self.num_classes = _optional_classes(num_classes)
        self.embed = _TimeClassEmbedding(time_embed_dim, hidden, self.num_classes)
        self.fc_in = nn.Linear(self.dim, hidden)
        self.blocks = nn.ModuleList([_MLPBlock(hidden) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(hidden)
        self.fc_out = nn.Linear(hidden, self.dim)

    def forward(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x: expected shape (B, {self.dim}), got {tuple(x.shape)}")
        emb = self.embed(_batch_t(t, x), _class_index(cond, x, self.num_classes))
        h = self.fc_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.fc_out(F.silu(self.norm_out(h)))
