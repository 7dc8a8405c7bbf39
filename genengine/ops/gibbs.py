"""Gibbs sampling and energy-based-model ops: RBM block Gibbs (with CD statistics and parallel
tempering), checkerboard Ising sweeps, block Gibbs over the colour classes of a sparse Boltzmann
machine, and the fused Langevin step.

Shapes:
  rbm_gibbs            v [batch, n_visible], W [n_visible, n_hidden], vbias [n_visible], hbias [n_hidden]
                       -> v [batch, n_visible], h [batch, n_hidden] (+ their probabilities)
  rbm_cd_stats         -> grad_W [n_visible, n_hidden], grad_vbias, grad_hbias, chain [chains, n_visible]
  rbm_parallel_tempering  v [R, batch, n_visible] for R inverse temperatures
  ising_sweep          int8 +-1 spins [L, H, W] or [H, W] (H, W even), periodic
  boltzmann_gibbs      x [batch, n] of 0/1, coupling [n, n] (dense or sparse, symmetric, zero diagonal)
  langevin_step        x, grad of any (equal) shape

Random streams (Philox, genengine.ops.rng): each call draws one key (seed, offset) from `generator`,
and every random value sits at a fixed position of that key's stream, so the same seed gives the
same chain on every backend and thread count:
  RBM, sweep s of `steps`: hidden unit (b, j) at s B (nv + nh) + b nh + j, visible unit (b, i) at
      s B (nv + nh) + B nh + b nv + i (a uniform; a normal for Gaussian visible units)
  Ising, sweep t, colour c (0: (i + j) even, updated first), lattice l, site (i, j): the word at
      (((t L + l) 2 + c) H + i) (W / 2) + j // 2; the site becomes +1 iff (word >> 9) < T[(s + 4) / 2]
      with s the neighbour sum and T the integer form of P(+1 | s) = sigmoid(2 beta (J s + h)) (exact)
  Boltzmann machine, sweep t, chain b, node i: the uniform at (t batch + b) n + i
  Langevin: the normal at the element's flat index.
generator may also be such a key as an int64 [2] tensor (genengine.ops.rng.key_tensor): compiled code
passes keys that way, as data, since torch.compile cannot read a torch.Generator inside a graph.

Each op is registered with torch.library (genengine::rbm_gibbs, ::ising_sweep, ::boltzmann_gibbs,
::langevin_step); torch.compile traces those, while the eager path calls the kernels directly.

Backends: torch (the reference, float64 too), cpp (CPU), triton (CUDA; CPU under TRITON_INTERPRET=1),
cuda (CUDA). On cpp and cuda the RBM's matrix products run in torch's GEMM (MKL/oneDNN, cuBLAS) and
bias + temperature + sigmoid + draw (+ clamp) run in one fused pass over its output, in place; on
triton one kernel does the tile GEMM and the same epilogue.
"""

from __future__ import annotations

import math
import numbers
from collections import namedtuple

import torch

from .. import _backends
from .._checks import byte_span, to_float
from ..reference import gibbs as ref
from .rng import draw_key, key_ints, op_key

__all__ = ["rbm_gibbs", "rbm_cd_stats", "rbm_parallel_tempering", "ising_sweep", "boltzmann_gibbs", "graph_coloring",
           "langevin_step", "CDStats"]

_SUPPORTED = ("torch", "cpp", "triton", "cuda")
_FLOAT = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
CDStats = namedtuple("CDStats", ["grad_W", "grad_vbias", "grad_hbias", "chain", "h_prob_data"])


# ---- checks ----------------------------------------------------------------------------------------


def _tensor(name, t, ndim=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(t.shape)}")
    return t


def _float_tensor(name, t, ndim=None):
    _tensor(name, t, ndim)
    if t.dtype not in _FLOAT:
        raise TypeError(f"{name}: expected a float32, bfloat16, float16 or float64 tensor, got {t.dtype}")
    return t


def _same_device(name, t, ref_t, ref_name):
    if t.device != ref_t.device:
        raise ValueError(f"{name}: on device {t.device}, but {ref_name} is on {ref_t.device}")


def _int(name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    return int(v)


def _real(name, v, positive=False):
    if isinstance(v, (bool, str, bytes)) or v is None:
        raise TypeError(f"{name}: expected a real number, got {v!r}")
    f = to_float(name, v)
    if not math.isfinite(f):
        raise ValueError(f"{name}: expected a finite number, got {f}")
    if positive and not f > 0:
        raise ValueError(f"{name}: expected a number > 0, got {f}")
    return f


def _beta(beta, rows, device, what="rows of v"):
    """(scalar beta or None, per-row float32 tensor or None)."""
    if isinstance(beta, torch.Tensor):
        if beta.dim() == 0:
            return _real("beta", beta.item(), positive=True), None
        if beta.dim() != 1 or beta.shape[0] != rows:
            raise ValueError(f"beta: expected a number or a 1-D tensor with one value per {what} ({rows}), "
                             f"got shape {tuple(beta.shape)}")
        # every value > 0 and finite: checked by the runner (torch.compile cannot branch on data here)
        return None, beta.detach().to(device=device, dtype=torch.float32).contiguous()
    return _real("beta", beta, positive=True), None


def _compute_dtype(cd, v):
    if cd is None:
        return v.dtype if v.dtype in (torch.float32, torch.bfloat16) else torch.float32
    if cd not in (torch.float32, torch.bfloat16):
        raise TypeError(f"compute_dtype: expected None, torch.float32 or torch.bfloat16, got {cd!r}")
    return cd


def _check_rbm(v, W, vbias, hbias, visible):
    _float_tensor("v", v, 2)
    _float_tensor("W", W, 2)
    _float_tensor("vbias", vbias, 1)
    _float_tensor("hbias", hbias, 1)
    nv = v.shape[1]
    if W.shape[0] != nv:
        raise ValueError(f"W: expected shape [n_visible, n_hidden] with n_visible = v.shape[1] = {nv}, "
                         f"got {tuple(W.shape)}")
    nh = W.shape[1]
    if vbias.shape[0] != nv:
        raise ValueError(f"vbias: expected shape [{nv}] (n_visible), got {tuple(vbias.shape)}")
    if hbias.shape[0] != nh:
        raise ValueError(f"hbias: expected shape [{nh}] (n_hidden = W.shape[1]), got {tuple(hbias.shape)}")
    for n, t in (("W", W), ("vbias", vbias), ("hbias", hbias)):
        _same_device(n, t, v, "v")
    if visible not in ("bernoulli", "gaussian"):
        raise ValueError(f"visible: expected 'bernoulli' or 'gaussian', got {visible!r}")
    return visible == "gaussian"


def _clamp_args(clamp_mask, clamp_values, v):
    if clamp_mask is None:
        if clamp_values is not None:
            raise ValueError("clamp_values: given without clamp_mask")
        return None, None
    _tensor("clamp_mask", clamp_mask)
    if clamp_values is None:
        raise ValueError("clamp_values: required with clamp_mask (the values of the clamped units)")
    _tensor("clamp_values", clamp_values)
    for n, t in (("clamp_mask", clamp_mask), ("clamp_values", clamp_values)):
        _same_device(n, t, v, "v")
        try:
            torch.broadcast_shapes(t.shape, v.shape)
            if torch.broadcast_shapes(t.shape, v.shape) != v.shape:
                raise RuntimeError
        except RuntimeError:
            raise ValueError(f"{n}: expected a shape that broadcasts to v's {tuple(v.shape)}, got {tuple(t.shape)}") from None
    mask = clamp_mask.to(torch.bool).expand(v.shape)
    vals = clamp_values.to(torch.float32).expand(v.shape)
    return mask, vals


# ---- kernels ----------------------------------------------------------------------------------------

_DT = {torch.float32: 0, torch.bfloat16: 1}


def _ptr(t):
    return t.data_ptr() if t is not None else 0


def _stream(t):
    return torch.cuda.current_stream(t.device).cuda_stream


def _epilogue(name, buf, bias, beta, beta_rows, prob, gaussian, mask_u8, vals, key, base):
    rows, cols = buf.shape
    args = (_DT[buf.dtype], rows, cols, buf.data_ptr(), bias.data_ptr(), beta if beta is not None else 1.0,
            _ptr(beta_rows), _ptr(prob), int(gaussian), _ptr(mask_u8), _ptr(vals), key[0], key[1], base)
    if name == "cpp":
        _backends.load_cpp().rbm_epilogue(*args)
    else:
        with torch.cuda.device(buf.device):
            _backends.load_cuda().rbm_epilogue(*args, _stream(buf))


def _half(name, x, Wm, bias, out, prob, beta, beta_rows, gaussian, mask_u8, vals, key, base):
    """out <- draw(x @ Wm + bias) (prob <- its probabilities when given); Wm a [K, N] view of W or W^T."""
    if name == "triton":
        _backends.load_kernels("gibbs").rbm_half(x, Wm, bias, out, prob, beta, beta_rows, gaussian, mask_u8, vals,
                                                 key[0], key[1], base)
        return
    torch.mm(x, Wm, out=out)
    _epilogue(name, out, bias, beta, beta_rows, prob, gaussian, mask_u8, vals, key, base)


def _chain(name, v, W, vbias, hbias, steps, key, beta, beta_rows, gaussian, mask, vals, cd, want_probs, want_first):
    """The kernel path: (v, h, pv, ph, ph_first) in compute dtype `cd` (probabilities float32)."""
    batch, nv = v.shape
    nh = W.shape[1]
    dev = v.device
    if cd == torch.bfloat16 and batch * nv * nh < (1 << 18) and dev.type == "cpu":
        cd = torch.float32  # tiny products: the CPU's bfloat16 GEMM has a large fixed cost; float32 is exact and faster
    Wc = W.detach().to(cd).contiguous()
    hb = hbias.detach().to(torch.float32).contiguous()
    vb = vbias.detach().to(torch.float32).contiguous()
    x = v.detach().to(cd)
    mask_u8 = vals_c = None
    if mask is not None:
        x = torch.where(mask, vals.to(cd), x)
        mask_u8 = mask.to(torch.uint8).contiguous()
        vals_c = vals.contiguous()
    x = x.contiguous()
    h = torch.empty((batch, nh), dtype=cd, device=dev)
    bufs = [torch.empty((batch, nv), dtype=cd, device=dev), None]
    f32 = {"dtype": torch.float32, "device": dev}
    first = torch.empty((batch, nh), **f32) if want_first else None
    ph = torch.empty((batch, nh), **f32) if want_probs else None
    pv = torch.empty((batch, nv), **f32) if want_probs else None
    for s in range(steps):
        bh, bv = ref.rbm_stream_bases(s, batch, nv, nh)
        last = s == steps - 1
        php = ph if (last and want_probs) else None
        if s == 0 and want_first:
            php = first
        _half(name, x, Wc, hb, h, php, beta, beta_rows, False, None, None, key, bh)
        if s == 0 and want_first and last and want_probs:
            ph.copy_(first)
        if bufs[s % 2] is None:
            bufs[s % 2] = torch.empty((batch, nv), dtype=cd, device=dev)
        target = bufs[s % 2]
        _half(name, h, Wc.t(), vb, target, pv if last else None, beta, beta_rows, gaussian, mask_u8, vals_c, key, bv)
        x = target
    return x, h, pv, ph, first


def _resolve(backend, v, cd):
    dtype_ok = v.dtype != torch.float64
    return _backends.resolve(backend, _backends.device_type(v), _SUPPORTED, dtype_ok)


def rbm_gibbs(v, W, vbias, hbias, *, steps=1, generator=None, return_probs=False, beta=1.0, visible="bernoulli",
              clamp_mask=None, clamp_values=None, compute_dtype=None, backend="auto"):
    """`steps` block-Gibbs sweeps v -> h -> v of an RBM with energy E(v, h) = -v W h - vbias.v - hbias.h
    (Bernoulli visible) or |v - vbias|^2 / 2 - v W h - hbias.h (visible="gaussian", unit variance).

    Returns (v, h): the visible state after the last sweep and the hidden sample it was drawn from;
    with return_probs=True, (v, h, v_prob, h_prob): the probabilities (Gaussian means) of those draws.
    beta: inverse temperature (a number, or one per chain [batch]); p(h = 1 | v) = sigmoid(beta (v W + hbias)),
    Gaussian visible units have variance 1 / beta. clamp_mask / clamp_values (broadcastable to v): clamped
    visible units keep the given values (conditional sampling, inpainting). compute_dtype=torch.bfloat16 runs
    the matrix products in bfloat16 (the states are 0/1, exact in bfloat16; W is rounded once).
    """
    gaussian = _check_rbm(v, W, vbias, hbias, visible)
    steps = _int("steps", steps)
    mask, vals = _clamp_args(clamp_mask, clamp_values, v)
    beta_s, beta_rows = _beta(beta, v.shape[0], v.device)
    cd = _compute_dtype(compute_dtype, v)
    name = _resolve(backend, v, cd)
    if torch.compiler.is_compiling():
        vr, hr, pv, ph = _rbm_gibbs_op(v, W, vbias, hbias, op_key(generator, v.device), steps, 1.0 if beta_s is None else beta_s,
                                       beta_rows, visible, mask, vals, cd, return_probs, name)
    else:
        key = draw_key(generator, v.device)
        vr, hr, pv, ph = _rbm_gibbs_run(name, v, W, vbias, hbias, steps, key, beta_s, beta_rows, gaussian, mask, vals,
                                        cd, return_probs)
    if return_probs:
        return vr, hr, pv, ph
    return vr, hr


def _rbm_gibbs_run(name, v, W, vbias, hbias, steps, key, beta_s, beta_rows, gaussian, mask, vals, cd, return_probs):
    """(v, h, v_prob, h_prob) in v's dtype (probabilities float32, float64 for float64 v; None unless asked)."""
    if beta_rows is not None and not bool(((beta_rows > 0) & torch.isfinite(beta_rows)).all()):
        raise ValueError("beta: expected every inverse temperature to be finite and > 0")
    if name == "torch":
        ct = v.dtype if v.dtype == torch.float64 else torch.float32
        vr, hr, pv, ph, _ = ref.rbm_gibbs(v.detach().to(ct), W.detach().to(ct), vbias.detach().to(ct),
                                          hbias.detach().to(ct), steps=steps, seed=key[0], offset=key[1],
                                          beta=beta_rows if beta_rows is not None else beta_s, gaussian=gaussian,
                                          clamp_mask=mask, clamp_values=vals)
    else:
        vr, hr, pv, ph, _ = _chain(name, v, W, vbias, hbias, steps, key, beta_s, beta_rows, gaussian, mask, vals, cd,
                                   return_probs, False)
    return vr.to(v.dtype), hr.to(v.dtype), pv, ph


# torch.library registrations: what torch.compile traces (the eager path calls the runners directly,
# DESIGN.md: a registered call costs ~10 us). Keys travel as a tensor: a new draw does not recompile.


def _prob_dtype(v):
    return torch.float64 if v.dtype == torch.float64 else torch.float32


@torch.library.custom_op("genengine::rbm_gibbs", mutates_args=())
def _rbm_gibbs_op(v: torch.Tensor, W: torch.Tensor, vbias: torch.Tensor, hbias: torch.Tensor, key: torch.Tensor,
                  steps: int, beta: float, beta_rows: torch.Tensor | None, visible: str, clamp_mask: torch.Tensor | None,
                  clamp_values: torch.Tensor | None, compute_dtype: torch.dtype, return_probs: bool, backend: str
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    vr, hr, pv, ph = _rbm_gibbs_run(backend, v, W, vbias, hbias, steps, key_ints(key), beta, beta_rows,
                                    visible == "gaussian", clamp_mask, clamp_values, compute_dtype, return_probs)
    empty = v.new_empty(0, dtype=_prob_dtype(v))
    return vr, hr, (pv if pv is not None else empty), (ph if ph is not None else empty.clone())


@_rbm_gibbs_op.register_fake
def _(v, W, vbias, hbias, key, steps, beta, beta_rows, visible, clamp_mask, clamp_values, compute_dtype, return_probs,
      backend):
    B, nv = v.shape
    nh = W.shape[1]
    pd = _prob_dtype(v)
    pv = v.new_empty((B, nv) if return_probs else (0,), dtype=pd)
    ph = v.new_empty((B, nh) if return_probs else (0,), dtype=pd)
    return v.new_empty(B, nv), v.new_empty(B, nh), pv, ph


def rbm_cd_stats(v, W, vbias, hbias, *, k=1, chain=None, generator=None, visible="bernoulli", compute_dtype=None,
                 backend="auto"):
    """Contrastive-divergence statistics: CDStats(grad_W, grad_vbias, grad_hbias, chain, h_prob_data).

    Positive phase: the data v with p(h | v); negative phase: `k` Gibbs sweeps from v (CD-k) or from
    the persistent `chain` [chains, n_visible] (PCD), with p(h | v_k). grad_W = v^T p(h|v) / B -
    v_k^T p(h|v_k) / chains (and likewise for the biases) is the log-likelihood gradient estimate
    (ascend it); `chain` is the negative chain's new state. With chain=None the negative chain's first
    half-step is the positive phase's (one GEMM shared), and it equals rbm_gibbs(v, steps=k).
    """
    gaussian = _check_rbm(v, W, vbias, hbias, visible)
    k = _int("k", k)
    cd = _compute_dtype(compute_dtype, v)
    name = _resolve(backend, v, cd)
    if chain is not None:
        _float_tensor("chain", chain, 2)
        _same_device("chain", chain, v, "v")
        if chain.shape[1] != v.shape[1]:
            raise ValueError(f"chain: expected shape [chains, {v.shape[1]}] (n_visible), got {tuple(chain.shape)}")
        if chain.shape[0] == 0:
            raise ValueError("chain: expected at least one chain (the negative phase averages over them), got 0")
    if v.shape[0] == 0:
        raise ValueError("v: expected at least one row (the positive phase averages over the batch), got 0")
    key = draw_key(generator, v.device)
    ct = torch.float64 if v.dtype == torch.float64 else torch.float32
    start = v if chain is None else chain
    if name == "torch":
        vk, _, _, _, first = ref.rbm_gibbs(start.detach().to(ct), W.detach().to(ct), vbias.detach().to(ct),
                                           hbias.detach().to(ct), steps=k, seed=key[0], offset=key[1], gaussian=gaussian)
    else:
        vk, _, _, _, first = _chain(name, start, W, vbias, hbias, k, key, 1.0, None, gaussian, None, None, cd, False,
                                    chain is None)
    v0 = v.detach().to(ct)
    Wt = W.detach().to(ct)
    hb = hbias.detach().to(ct)
    p0 = first.to(ct) if chain is None else torch.sigmoid(torch.addmm(hb, v0, Wt))
    vk = vk.to(ct)
    pk = torch.sigmoid(torch.addmm(hb, vk, Wt))
    gw = torch.addmm(v0.t() @ p0, vk.t(), pk, beta=1.0 / v0.shape[0], alpha=-1.0 / vk.shape[0])
    return CDStats(gw, v0.mean(0) - vk.mean(0), p0.mean(0) - pk.mean(0), vk.to(start.dtype), p0)


def rbm_parallel_tempering(v, W, vbias, hbias, betas, *, steps=1, h=None, generator=None, visible="bernoulli",
                           compute_dtype=None, backend="auto"):
    """Parallel tempering: R replicas of `batch` chains at inverse temperatures `betas` [R] (usually
    increasing to 1.0). Each step is one Gibbs sweep of every replica (one batched call) followed by
    Metropolis swaps of neighbouring replicas (even pairs on even steps, odd pairs on odd steps),
    accepted with probability min(1, exp((beta_r - beta_{r+1}) (E_r - E_{r+1}))) on the joint energy
    E(v, h). v: [R, batch, n_visible]. Returns (v, h, acceptance [R - 1]) with acceptance the fraction
    of attempted swaps per pair that were accepted."""
    gaussian = visible == "gaussian"
    _float_tensor("v", v, 3)
    betas = _tensor("betas", betas, 1)
    _float_tensor("W", W, 2)
    R, B, nv = v.shape
    nh = W.shape[1]  # spelled out in the reshapes below: (R, B, -1) is ambiguous when B = 0
    if betas.shape[0] != R:
        raise ValueError(f"betas: expected one inverse temperature per replica (v.shape[0] = {R}), got {betas.shape[0]}")
    if R == 0:
        raise ValueError("v: expected at least one replica (v.shape[0] >= 1), got 0")
    if not bool(((betas > 0) & torch.isfinite(betas)).all()):
        raise ValueError("betas: expected every inverse temperature to be finite and > 0")
    steps = _int("steps", steps)
    bet = betas.detach().to(device=v.device, dtype=torch.float32)
    rows = bet.repeat_interleave(B)
    flat = v.reshape(R * B, nv)
    ct = torch.float64 if v.dtype == torch.float64 else torch.float32
    tries = torch.zeros(max(R - 1, 0), dtype=torch.float64)
    accepts = torch.zeros_like(tries)
    hid = None
    for t in range(steps):
        flat, hid = rbm_gibbs(flat, W, vbias, hbias, generator=generator, beta=rows, visible=visible,
                              compute_dtype=compute_dtype, backend=backend)
        if R < 2:
            continue
        E = ref.rbm_energy(flat.to(ct), hid.to(ct), W.detach().to(ct), vbias.detach().to(ct), hbias.detach().to(ct),
                           gaussian=gaussian).reshape(R, B)
        pairs = torch.arange(t % 2, R - 1, 2, device=v.device)
        if pairs.numel() == 0:
            continue
        seed, off = draw_key(generator, v.device)
        u = ref.uniform_at(torch.arange(pairs.numel() * B, device=v.device), seed, off).reshape(pairs.numel(), B)
        log_acc = (bet[pairs].to(ct) - bet[pairs + 1].to(ct)).unsqueeze(1) * (E[pairs] - E[pairs + 1])
        acc = torch.log(u.to(ct)) < log_acc  # [P, B]
        tries[pairs.cpu()] += B
        accepts[pairs.cpu()] += acc.sum(1).cpu().to(torch.float64)
        vv, hh = flat.reshape(R, B, nv).clone(), hid.reshape(R, B, nh).clone()
        a = acc.unsqueeze(-1)
        lo_v, hi_v = vv[pairs], vv[pairs + 1]
        lo_h, hi_h = hh[pairs], hh[pairs + 1]
        vv[pairs], vv[pairs + 1] = torch.where(a, hi_v, lo_v), torch.where(a, lo_v, hi_v)
        hh[pairs], hh[pairs + 1] = torch.where(a, hi_h, lo_h), torch.where(a, lo_h, hi_h)
        flat, hid = vv.reshape(R * B, nv), hh.reshape(R * B, nh)
    rate = torch.where(tries > 0, accepts / tries.clamp(min=1), torch.zeros_like(tries)).to(torch.float32)
    return flat.reshape(R, B, nv), hid.reshape(R, B, nh), rate


# ---- Ising ----------------------------------------------------------------------------------------------


def ising_sweep(spins, beta, *, J=1.0, h=0.0, sweeps=1, generator=None, inplace=False, backend="auto"):
    """`sweeps` checkerboard heat-bath sweeps of 2-D periodic Ising lattices with energy
    E = -J sum_<ij> s_i s_j - h sum_i s_i at inverse temperature `beta` (a number, or one per lattice [L]).

    spins: int8 tensor of +-1, [H, W] or [L, H, W] (L independent lattices), H and W even. Returns the
    new spins (the same tensor, updated, with inplace=True)."""
    _tensor("spins", spins)
    if spins.dtype != torch.int8:
        raise TypeError(f"spins: expected an int8 tensor of +-1, got {spins.dtype}")
    if spins.dim() not in (2, 3):
        raise ValueError(f"spins: expected shape [H, W] or [L, H, W], got {tuple(spins.shape)}")
    lat = spins if spins.dim() == 3 else spins.unsqueeze(0)
    L, H, W = lat.shape
    if H < 2 or W < 2 or H % 2 or W % 2:
        raise ValueError(f"spins: expected even H and W >= 2 (a periodic checkerboard), got H={H}, W={W}")
    J = _real("J", J)
    h = _real("h", h)
    sweeps = _int("sweeps", sweeps)
    if isinstance(beta, torch.Tensor) and beta.dim() == 1:
        if beta.shape[0] != L:
            raise ValueError(f"beta: expected a number or one value per lattice ({L}), got shape {tuple(beta.shape)}")
        betas = [_real("beta", b, positive=True) for b in beta.tolist()]
    elif isinstance(beta, torch.Tensor):
        if beta.numel() != 1:
            raise ValueError(f"beta: expected a number, a one-element tensor or a 1-D tensor with one value per "
                             f"lattice ({L}), got shape {tuple(beta.shape)}")
        betas = [_real("beta", beta.item(), positive=True)]
    else:
        betas = [_real("beta", beta, positive=True)]
    name = _backends.resolve(backend, _backends.device_type(spins), _SUPPORTED)
    if torch.compiler.is_compiling():
        out = _ising_sweep_op(spins, betas, J, h, sweeps, op_key(generator, spins.device), name)
        return spins.copy_(out) if inplace else out
    return _ising_run(name, spins, betas, J, h, sweeps, draw_key(generator, spins.device), inplace)


def _ising_run(name, spins, betas, J, h, sweeps, key, inplace):
    lat = spins if spins.dim() == 3 else spins.unsqueeze(0)
    L, H, W = lat.shape
    if lat.numel() and not bool(((lat == 1) | (lat == -1)).all()):
        raise ValueError("spins: expected every value to be +1 or -1")
    if lat.numel() == 0:  # no lattice (L = 0): nothing to sweep, on every backend
        return spins if inplace else spins.clone()
    seed, offset = key
    if name == "torch":
        out = ref.ising_sweep(lat, torch.tensor(betas) if len(betas) > 1 else betas[0], J=J, h=h, sweeps=sweeps,
                              seed=seed, offset=offset).reshape(spins.shape)
        return spins.copy_(out) if inplace else out
    thr = torch.tensor([ref.ising_thresholds(b, J, h) for b in betas], dtype=torch.int32, device=spins.device)
    work = spins if (inplace and spins.is_contiguous()) else spins.contiguous().clone()
    w3 = work.view(L, H, W)
    per = int(len(betas) > 1)
    if name == "cpp":
        _backends.load_cpp().ising_sweep(w3.data_ptr(), L, H, W, thr.data_ptr(), per, sweeps, seed, offset)
    elif name == "triton":
        _backends.load_kernels("gibbs").ising_sweep(w3, thr, per, sweeps, seed, offset)
    else:
        with torch.cuda.device(spins.device):
            _backends.load_cuda().ising_sweep(w3.data_ptr(), L, H, W, thr.data_ptr(), per, sweeps, seed, offset,
                                              _stream(w3))
    if inplace and work is not spins:
        spins.copy_(work)
        return spins
    return work


@torch.library.custom_op("genengine::ising_sweep", mutates_args=())
def _ising_sweep_op(spins: torch.Tensor, betas: list[float], J: float, h: float, sweeps: int, key: torch.Tensor,
                    backend: str) -> torch.Tensor:
    return _ising_run(backend, spins, betas, J, h, sweeps, key_ints(key), False)


@_ising_sweep_op.register_fake
def _(spins, betas, J, h, sweeps, key, backend):
    return torch.empty_like(spins)


# ---- sparse Boltzmann machine ---------------------------------------------------------------------------


def _coupling_csr(coupling, n, device):
    """(indptr, indices, values) of the coupling matrix's nonzeros, rows in order, after checking that
    it is symmetric with a zero diagonal."""
    if coupling.layout == torch.strided:
        if not bool(torch.equal(coupling, coupling.t())):
            raise ValueError("coupling: expected a symmetric matrix")
        nz = coupling.nonzero()
        rows, cols = nz[:, 0], nz[:, 1]
        values = coupling[rows, cols]
    else:
        coo = coupling.to_sparse_coo() if coupling.layout != torch.sparse_coo else coupling
        coo = coo.coalesce()
        rows, cols = coo.indices()
        values = coo.values()
        keep = values != 0
        rows, cols, values = rows[keep], cols[keep], values[keep]
        key = rows * n + cols
        tkey, order = torch.sort(cols * n + rows)
        if not (torch.equal(tkey, key) and torch.equal(values[order], values)):
            raise ValueError("coupling: expected a symmetric matrix")
    if bool((rows == cols).any()):
        raise ValueError("coupling: expected a zero diagonal (no self-couplings)")
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return indptr, cols.to(torch.int64).contiguous(), values.to(torch.float32).contiguous()


def graph_coloring(coupling):
    """A proper colouring of the graph of a symmetric coupling matrix [n, n] (dense or sparse): int64 [n]
    colours 0..C-1 such that no two coupled nodes share a colour (greedy, largest degree first)."""
    _tensor("coupling", coupling, 2)
    n = coupling.shape[0]
    indptr, indices, _ = _coupling_csr(coupling.detach().cpu(), n, "cpu")
    ip, ix = indptr.tolist(), indices.tolist()
    order = sorted(range(n), key=lambda i: -(ip[i + 1] - ip[i]))
    colour = [-1] * n
    for i in order:
        used = {colour[j] for j in ix[ip[i]:ip[i + 1]]}
        c = 0
        while c in used:
            c += 1
        colour[i] = c
    return torch.tensor(colour, dtype=torch.int64, device=coupling.device)


def boltzmann_gibbs(x, coupling, bias, *, colors=None, beta=1.0, sweeps=1, generator=None, backend="auto"):
    """Block Gibbs sweeps of a pairwise Boltzmann machine p(x) ~ exp(-beta E(x)), E(x) = -x W x / 2 - b.x,
    x in {0, 1}^n: within a colour class no two nodes are coupled, so a class is drawn at once given the
    rest, p(x_i = 1 | x) = sigmoid(beta (b_i + sum_j W_ij x_j)); classes are visited in colour order.

    x: [batch, n] of 0/1 (float); coupling: [n, n] symmetric with a zero diagonal, dense or sparse (the
    kernels walk its CSR rows); bias [n]; colors: int [n] (a proper colouring; default graph_coloring)."""
    _float_tensor("x", x, 2)
    _tensor("coupling", coupling, 2)
    _float_tensor("bias", bias, 1)
    batch, n = x.shape
    if tuple(coupling.shape) != (n, n):
        raise ValueError(f"coupling: expected shape [{n}, {n}] (n = x.shape[1]), got {tuple(coupling.shape)}")
    if bias.shape[0] != n:
        raise ValueError(f"bias: expected shape [{n}], got {tuple(bias.shape)}")
    beta = _real("beta", beta, positive=True)
    sweeps = _int("sweeps", sweeps)
    if colors is not None:
        _tensor("colors", colors, 1)
    name = _backends.resolve(backend, _backends.device_type(x), _SUPPORTED, x.dtype != torch.float64)
    if torch.compiler.is_compiling():
        return _boltzmann_gibbs_op(x, coupling, bias, colors, beta, sweeps, op_key(generator, x.device), name)
    return _boltzmann_run(name, x, coupling, bias, colors, beta, sweeps, draw_key(generator, x.device))


def _boltzmann_run(name, x, coupling, bias, colors, beta, sweeps, key):
    """The data-dependent checks (symmetry, colouring, 0/1 states) and the sweeps."""
    batch, n = x.shape
    indptr, indices, values = _coupling_csr(coupling.detach(), n, x.device)
    if colors is None:
        colors = graph_coloring(coupling)
    if colors.shape[0] != n or colors.dtype.is_floating_point:
        raise ValueError(f"colors: expected an integer tensor of shape [{n}], got {colors.dtype} {tuple(colors.shape)}")
    colors = colors.to(device=indptr.device, dtype=torch.int64)
    rows = torch.repeat_interleave(torch.arange(n, device=indptr.device), indptr[1:] - indptr[:-1])
    if bool((colors[rows] == colors[indices]).any()):
        raise ValueError("colors: not a proper colouring (two coupled nodes share a colour)")
    if x.numel() and not bool(((x == 0) | (x == 1)).all()):
        raise ValueError("x: expected every value to be 0 or 1")
    seed, offset = key
    if name == "torch":
        dense = coupling.to_dense() if coupling.layout != torch.strided else coupling
        return ref.bm_gibbs(x, dense.to(x.device), bias, colors.to(x.device), beta=beta, sweeps=sweeps, seed=seed,
                            offset=offset).to(x.dtype)
    order = torch.argsort(colors, stable=True)
    # class sizes in increasing colour order (the reference's order); labels may be any integers
    counts = torch.unique(colors, return_counts=True)[1]
    class_ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    dev = x.device
    indptr, indices, values = indptr.to(dev), indices.to(dev), values.to(dev)
    order, class_ptr = order.to(dev).contiguous(), class_ptr.to(dev).contiguous()
    b32 = bias.detach().to(device=dev, dtype=torch.float32).contiguous()
    xs = x.detach().to(torch.float32).contiguous().clone()
    args = (batch, n, xs.data_ptr(), indptr.data_ptr(), indices.data_ptr(), values.data_ptr(), b32.data_ptr(),
            class_ptr.data_ptr(), order.data_ptr(), class_ptr.numel() - 1, beta, sweeps, seed, offset)
    if name == "cpp":
        _backends.load_cpp().bm_gibbs(*args)
    elif name == "triton":
        _backends.load_kernels("gibbs").bm_gibbs(xs, indptr, indices, values, b32, class_ptr, order, beta, sweeps,
                                                 seed, offset)
    else:
        cp_host = class_ptr.cpu().contiguous()  # the launches are per class: the host reads the bounds
        with torch.cuda.device(dev):
            _backends.load_cuda().bm_gibbs(*args[:7], cp_host.data_ptr(), *args[8:], _stream(xs))
    return xs.to(x.dtype)


@torch.library.custom_op("genengine::boltzmann_gibbs", mutates_args=())
def _boltzmann_gibbs_op(x: torch.Tensor, coupling: torch.Tensor, bias: torch.Tensor, colors: torch.Tensor | None,
                        beta: float, sweeps: int, key: torch.Tensor, backend: str) -> torch.Tensor:
    out = _boltzmann_run(backend, x, coupling, bias, colors, beta, sweeps, key_ints(key))
    return out.clone() if out is x else out


@_boltzmann_gibbs_op.register_fake
def _(x, coupling, bias, colors, beta, sweeps, key, backend):
    return torch.empty_like(x)


# ---- Langevin ----------------------------------------------------------------------------------------------


def langevin_step(x, grad, step_size, *, noise_scale=1.0, clamp=None, generator=None, out=None, backend="auto"):
    """One unadjusted Langevin step, fused: x - step_size / 2 * grad + sqrt(step_size) * noise_scale * z,
    z ~ N(0, 1) from the Philox stream, clamped to clamp = (lo, hi) when given. grad is dE/dx of the
    energy (p ~ exp(-E)). x, grad: same shape; float32 (float64 on the torch backend)."""
    _float_tensor("x", x)
    _float_tensor("grad", grad)
    if grad.shape != x.shape:
        raise ValueError(f"grad: expected x's shape {tuple(x.shape)}, got {tuple(grad.shape)}")
    _same_device("grad", grad, x, "x")
    step = _real("step_size", step_size, positive=True)
    ns = _real("noise_scale", noise_scale)
    if ns < 0:
        raise ValueError(f"noise_scale: expected a number >= 0, got {ns}")
    lo = hi = 0.0
    if clamp is not None:
        if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
            raise TypeError(f"clamp: expected None or a (lo, hi) pair, got {clamp!r}")
        lo, hi = _real("clamp[0]", clamp[0]), _real("clamp[1]", clamp[1])
        if lo > hi:
            raise ValueError(f"clamp: expected lo <= hi, got ({lo}, {hi})")
    if out is not None:
        _tensor("out", out)
        if out.shape != x.shape or out.dtype != torch.float32 or not out.is_contiguous() or out.device != x.device:
            raise ValueError("out: expected a contiguous float32 tensor of x's shape on x's device")
        _check_out_overlap(out, (("x", x), ("grad", grad)))
    name = _backends.resolve(backend, _backends.device_type(x), _SUPPORTED, x.dtype != torch.float64)
    if torch.compiler.is_compiling():
        r = _langevin_step_op(x, grad, step, ns, clamp is not None, lo, hi, op_key(generator, x.device), name)
        return r if out is None else out.copy_(r)
    return _langevin_run(name, x, grad, step, ns, clamp is not None, lo, hi, draw_key(generator, x.device), out)


def _check_out_overlap(out, inputs):
    """out may be an input itself (in place) or memory of its own, never part of one: the kernels
    read and write element by element, so a shifted view would read values already overwritten."""
    lo, hi = byte_span(out)
    for name, t in inputs:
        if lo == hi or t.numel() == 0 or t.untyped_storage().data_ptr() != out.untyped_storage().data_ptr():
            continue
        t_lo, t_hi = byte_span(t)
        same = t.data_ptr() == out.data_ptr() and t.dtype == out.dtype and t.is_contiguous()
        if t_lo < hi and lo < t_hi and not same:
            raise ValueError(f"out: overlaps {name} without being {name} itself; pass {name} itself "
                             f"(contiguous float32) or separate memory")


def _langevin_run(name, x, grad, step, ns, has_clamp, lo, hi, key, out):
    seed, offset = key
    if name == "torch":
        r = ref.langevin_step(x.detach(), grad.detach().to(x.dtype), step, noise_scale=ns,
                              clamp=(lo, hi) if has_clamp else None, seed=seed, offset=offset)
        return r if out is None else out.copy_(r)
    xs = x.detach().to(torch.float32).contiguous()
    gs = grad.detach().to(torch.float32).contiguous()
    res = out if out is not None else torch.empty_like(xs)
    half, coef = 0.5 * step, math.sqrt(step) * ns
    if name == "cpp":
        _backends.load_cpp().langevin_step(xs.numel(), xs.data_ptr(), gs.data_ptr(), res.data_ptr(), half, coef,
                                           int(has_clamp), lo, hi, seed, offset)
    elif name == "triton":
        _backends.load_kernels("gibbs").langevin_step(xs, gs, res, half, coef, has_clamp, lo, hi, seed, offset)
    else:
        with torch.cuda.device(x.device):
            _backends.load_cuda().langevin_step(xs.numel(), xs.data_ptr(), gs.data_ptr(), res.data_ptr(), half, coef,
                                                int(has_clamp), lo, hi, seed, offset, _stream(xs))
    return res if (out is not None or x.dtype == torch.float32) else res.to(x.dtype)


@torch.library.custom_op("genengine::langevin_step", mutates_args=())
def _langevin_step_op(x: torch.Tensor, grad: torch.Tensor, step: float, noise_scale: float, has_clamp: bool, lo: float,
                      hi: float, key: torch.Tensor, backend: str) -> torch.Tensor:
    return _langevin_run(backend, x, grad, step, noise_scale, has_clamp, lo, hi, key_ints(key), None)


@_langevin_step_op.register_fake
def _(x, grad, step, noise_scale, has_clamp, lo, hi, key, backend):
    return torch.empty_like(x)


reference = ref
