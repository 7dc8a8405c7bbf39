"""torch.distributed helpers for fitting on shards: each rank computes sufficient statistics on its
own data, `all_reduce_sum` adds them across ranks, and every rank then takes the same M-step.

Nothing here initialises a process group; without one (or without torch.distributed) every
function is the single-process identity.
"""

from __future__ import annotations

import torch


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised with more than one rank."""
    dist = getattr(torch, "distributed", None)
    return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def all_reduce_sum(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sums each tensor over all ranks (in place, and returned); the identity without a group.

    The tensors travel as one flat float64 buffer (one collective, and sums of float32 statistics
    do not lose precision on the way), on the device the group's backend wants (gloo: CPU).
    """
    if not is_distributed() or not tensors:
        return tensors
    import torch.distributed as dist

    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    flat = torch.cat([t.detach().reshape(-1).to(device=device, dtype=torch.float64) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view(t.shape).to(dtype=t.dtype))
        offset += n
    return tensors


def all_reduce_max(value: float) -> float:
    """The maximum of a Python number over all ranks (e.g. a convergence test every rank must agree on)."""
    if not is_distributed():
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)
