"""genengine.nn: torch.nn modules over the fused ops, for models built on genengine.

Shapes follow the ops: GroupNormSiLU takes x (N, C, *spatial), contiguous or channels-last, and
returns silu(group_norm(x)) with x's shape and layout.
"""

from __future__ import annotations

import operator

import torch

from .ops import group_norm as _gn


def _int(name, v):
    if not isinstance(v, bool):
        try:
            return operator.index(v)
        except TypeError:
            pass
    raise TypeError(f"{name}: expected an int, got {v!r}")


class GroupNormSiLU(torch.nn.Module):
    """torch.nn.GroupNorm(num_groups, num_channels, eps, affine) followed by SiLU, fused.

    Parameters are named and initialised as torch.nn.GroupNorm's (weight = 1, bias = 0), so state
    dicts load from either. `backend` is passed to genengine.ops.group_norm_silu.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, backend="auto", device=None, dtype=None):
        super().__init__()
        num_groups, num_channels = _int("num_groups", num_groups), _int("num_channels", num_channels)
        if num_groups <= 0:
            raise ValueError(f"num_groups: expected a positive number of groups, got {num_groups}")
        if num_channels % num_groups:
            raise ValueError(f"num_groups: {num_channels} channels do not split into {num_groups} equal groups")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps = _gn._eps(eps)
        self.affine = bool(affine)
        self.backend = backend
        if self.affine:
            self.weight = torch.nn.Parameter(torch.ones(num_channels, device=device, dtype=dtype))
            self.bias = torch.nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.affine:
            torch.nn.init.ones_(self.weight)
            torch.nn.init.zeros_(self.bias)

    def forward(self, x):
        return _gn.group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps, backend=self.backend)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


__all__ = ["GroupNormSiLU"]
