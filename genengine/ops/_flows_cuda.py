"""The cuda backend of the flow transforms: a thin shim over genengine._cuda (csrc/cuda/flows.cu)
with the kernel contract of genengine.ops.flows (see its docstring):

    rq_spline_fwd(x, w, h, d, inverse, bound, min_w, min_h, min_d, y, lad) -> None
    rq_spline_bwd(inp, out, w, h, d, inverse, bound, min_w, min_h, min_d, gy, gl, gx, gw, gh, gd) -> None
    affine_coupling_fwd(x, t, s, inverse, y, logdet) / affine_coupling_bwd(x, t, s, inverse, gy, gld, gx, gt, gs)

float32 CUDA tensors on one device; x-like vectors contiguous (n,), parameter rows (n, K) with unit
inner stride. Launches on the current torch stream, asynchronously.
"""

from __future__ import annotations

import torch

from .. import _backends

__all__ = ["rq_spline_fwd", "rq_spline_bwd", "affine_coupling_fwd", "affine_coupling_bwd"]


def _check(x, *others):
    if x.dtype != torch.float32 or x.device.type != "cuda":
        raise TypeError(f"x: the cuda backend takes float32 CUDA tensors, got {x.dtype} on {x.device}")
    for name, t in others:
        if t is not None and (t.dtype != torch.float32 or t.device != x.device or t.stride(-1) != 1):
            raise ValueError(f"{name}: expected float32 on {x.device} with unit inner stride")


def _ptr(t):
    return t.data_ptr() if t is not None else 0


def _stream(x):
    return torch.cuda.current_stream(x.device).cuda_stream


def rq_spline_fwd(x, w, h, d, inverse, bound, min_w, min_h, min_d, y, lad) -> None:
    _check(x, ("w", w), ("h", h), ("d", d), ("y", y), ("lad", lad))
    _backends.load_cuda().rq_spline_fwd(
        x.shape[0], w.shape[1], d.shape[1], bool(inverse), float(bound), float(min_w), float(min_h), float(min_d),
        x.data_ptr(), w.data_ptr(), h.data_ptr(), d.data_ptr(), w.stride(0), h.stride(0), d.stride(0), y.data_ptr(),
        lad.data_ptr(), _stream(x))


def rq_spline_bwd(inp, out, w, h, d, inverse, bound, min_w, min_h, min_d, gy, gl, gx, gw, gh, gd) -> None:
    pt = out if inverse else inp
    _check(pt, ("w", w), ("h", h), ("d", d), ("gy", gy), ("gl", gl), ("gx", gx), ("gw", gw), ("gh", gh), ("gd", gd))
    _backends.load_cuda().rq_spline_bwd(
        pt.shape[0], w.shape[1], d.shape[1], bool(inverse), float(bound), float(min_w), float(min_h), float(min_d),
        pt.data_ptr(), w.data_ptr(), h.data_ptr(), d.data_ptr(), w.stride(0), h.stride(0), d.stride(0), _ptr(gy),
        _ptr(gl), gx.data_ptr(), gw.data_ptr(), gh.data_ptr(), gd.data_ptr(), gw.stride(0), gh.stride(0), gd.stride(0),
        _stream(pt))


def affine_coupling_fwd(x, t, s, inverse, y, logdet) -> None:
    _check(x, ("shift", t), ("log_scale", s), ("y", y))
    _backends.load_cuda().affine_coupling_fwd(
        x.shape[0], x.shape[1], bool(inverse), x.data_ptr(), t.data_ptr(), s.data_ptr(), x.stride(0), t.stride(0),
        s.stride(0), y.data_ptr(), logdet.data_ptr(), _stream(x))


def affine_coupling_bwd(x, t, s, inverse, gy, gld, gx, gt, gs) -> None:
    _check(x, ("shift", t), ("log_scale", s), ("gy", gy), ("gx", gx), ("gt", gt), ("gs", gs))
    _backends.load_cuda().affine_coupling_bwd(
        x.shape[0], x.shape[1], bool(inverse), x.data_ptr(), t.data_ptr(), s.data_ptr(), x.stride(0), t.stride(0),
        s.stride(0), _ptr(gy), _ptr(gld), gx.data_ptr(), gt.data_ptr(), gs.data_ptr(), _stream(x))
