"""Gated PixelCNN for binary images, with an exact likelihood and a cached pixel-by-pixel sampler.

    x, _ = ge.data.binary_digits(2000)                       # (N, 1, 12, 12) in {0, 1}
    model = ge.models.PixelCNN(image_size=12).fit(x, epochs=20)
    model.bits_per_dim(x_test); model.log_prob(x_test)      # (N,) nats
    samples = model.sample(16, generator=torch.Generator().manual_seed(0))

The model (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"):
p(x) = prod over pixels in raster order of Bernoulli(x_ij | sigmoid(logit_ij(x_<ij))). Gated blocks
with two stacks remove the blind spot of masked convolutions:
  vertical stack    a (k/2 + 1) x k convolution whose output at row i sees the rows <= i of its
                    input (whole window width), gated tanh(a) * sigmoid(b);
  horizontal stack  a 1 x (k/2 + 1) convolution whose output at (i, j) sees columns <= j of row i
                    (< j in the first layer: mask type A; <= j after: type B), plus a 1x1 projection
                    of the vertical stack's pre-activation from the row ABOVE (shifted down one row),
                    gated, projected 1x1, with a residual connection after the first layer.
So pixel (i, j) sees every pixel of the rows above within the receptive field and the pixels to
its left: all of x_<ij in a window, nothing else. A 1x1 head turns the last horizontal stack into
one logit per pixel. Inputs are fed as 2x - 1 (zero padding = "unknown").

Sampling without recomputing the image at every pixel (`sample`; `sample_naive` is the plain
full-recompute sampler, for comparison): the vertical stack of row i depends only on rows <= i, so
it is computed once per row, when row i - 1 is complete (one row of every layer's vertical
convolution, reading the cached vertical activations of the k/2 rows above), and its projection
into the horizontal stack is kept for the row. The horizontal stack at (i, j) depends on the same
row's horizontal activations at columns j - k/2 .. j of the layer below, which are cached as the
row is filled. Per pixel only the horizontal stack (one position per layer) and the head run:
cost per image = one row of vertical convolutions per row + one position of horizontal
convolutions per pixel = about one full forward pass in all, against H * W full forward passes for
the naive sampler (144 for 12 x 12). Memory: the vertical activations of every layer (C x H x W per
layer and image) and one row of horizontal activations per layer. Both samplers draw pixel (i, j) of
image b as u < sigmoid(logit) with u the Philox uniform number (b * H + i) * W + j of the stream
`draw_key(generator)` gives, so for the same seed they produce the same images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import positive_int
from .._progress import Progress
from ..ops import rng
from .base import GenerativeModel, check_data

__all__ = ["PixelCNN"]


class _GatedLayer(nn.Module):
    def __init__(self, c_in, channels, kernel, first):
        super().__init__()
        self.first = first
        self.k2 = kernel // 2
        self.v_conv = nn.Conv2d(c_in, 2 * channels, (self.k2 + 1, kernel))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_conv = nn.Conv2d(c_in, 2 * channels, (1, self.k2 + 1))
        self.h_out = nn.Conv2d(channels, channels, 1)

    # full-image forward ---------------------------------------------------------------------------
    def forward(self, v, h):
        k2 = self.k2
        v_pre = self.v_conv(F.pad(v, (k2, k2, k2, 0)))          # row i sees input rows i - k2 .. i
        shifted = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]         # row i gets row i - 1
        h_in = F.pad(h, (1, 0))[..., :-1] if self.first else h  # type A: the current pixel is hidden
        h_pre = self.h_conv(F.pad(h_in, (k2, 0))) + self.v_to_h(shifted)
        v_out = _gate(v_pre)
        h_new = self.h_out(_gate(h_pre))
        return v_out, (h_new if self.first else h + h_new)


def _gate(t):
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class PixelCNN(GenerativeModel):
    """Gated PixelCNN over binary images (n, 1, image_size, image_size) (see the module docstring).

    channels: width of both stacks; n_layers: gated layers; kernel: odd convolution size (the
    vertical stack is (kernel // 2 + 1) x kernel, the horizontal 1 x (kernel // 2 + 1)).
    """

    likelihood = "exact"
    conditional = False

    def __init__(self, image_size=12, *, channels=32, n_layers=5, kernel=5, head_channels=64):
        super().__init__()
        self.image_size = positive_int("image_size", image_size)
        channels = positive_int("channels", channels)
        self.n_layers = positive_int("n_layers", n_layers)
        kernel = positive_int("kernel", kernel)
        if kernel % 2 == 0 or kernel < 3:
            raise ValueError(f"kernel: expected an odd size >= 3, got {kernel}")
        self.channels, self.kernel = channels, kernel
        self.layers = nn.ModuleList(_GatedLayer(1 if i == 0 else channels, channels, kernel, i == 0)
                                    for i in range(self.n_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, head_channels, 1), nn.ReLU(),
                                  nn.Conv2d(head_channels, 1, 1))

    # ---- density ------------------------------------------------------------------------------
    def logits(self, x):
        """Logits (n, 1, H, W) of p(x_ij = 1 | x_<ij) for binary x (n, 1, H, W)."""
        v = h = 2 * x - 1
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)

    def _check(self, x, name="x"):
        s = self.image_size
        x = check_data(x, name, ndim=4, dtype=torch.float32 if not (isinstance(x, torch.Tensor) and x.dtype == torch.float64)
                       else None)
        if tuple(x.shape[1:]) != (1, s, s):
            raise ValueError(f"{name}: expected binary images of shape (n, 1, {s}, {s}), got {tuple(x.shape)}")
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(f"{name}: expected binary pixel values (0 or 1)")
        return x.to(device=self.device, dtype=self.head[-1].weight.dtype)

    def log_prob(self, x):
        """(n,) exact log-probability of each binary image, in nats."""
        x = self._check(x)
        with torch.no_grad():
            lg = self.logits(x)
            return -F.binary_cross_entropy_with_logits(lg, x, reduction="none").sum(dim=(1, 2, 3))

    def bits_per_dim(self, x):
        """Mean negative log2-likelihood per pixel over the images x."""
        lp = self.log_prob(x)
        return float(-lp.mean() / (self.image_size**2 * math.log(2)))

    # ---- training -----------------------------------------------------------------------------
    def fit(self, data, *, epochs=10, steps=None, batch_size=64, lr=3e-3, generator=None, progress=True, callback=None):
        """Maximum likelihood with Adam over mini-batches of binary images (n, 1, H, W); returns self.
        callback(model, {"epoch", "step", "loss"}) after every epoch (loss: bits/dim of the epoch's
        batches); returning True stops."""
        x = self._check(data, "data")
        batch_size = positive_int("batch_size", batch_size)
        per_epoch = -(-x.shape[0] // batch_size)
        total = positive_int("steps", steps) if steps is not None else positive_int("epochs", epochs) * per_epoch
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total, eta_min=lr * 0.05)
        bar = Progress(total, "fit", enabled=progress)
        self.train()
        step, epoch = 0, 0
        try:
            while step < total:
                perm = torch.randperm(x.shape[0], generator=g).to(x.device)
                run, seen = 0.0, 0
                for i in range(0, x.shape[0], batch_size):
                    if step >= total:
                        break
                    xb = x[perm[i:i + batch_size]]
                    loss = F.binary_cross_entropy_with_logits(self.logits(xb), xb, reduction="mean")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    lv = float(loss.detach()) / math.log(2)
                    run += lv * len(xb)
                    seen += len(xb)
                    bar.update(1, bpd=f"{lv:.4f}")
                info = {"epoch": epoch, "step": step, "loss": run / max(seen, 1)}
                epoch += 1
                if callback is not None and callback(self, info):
                    break
        finally:
            bar.close()
            self.eval()
        return self

    # ---- sampling -----------------------------------------------------------------------------
    def _uniforms(self, n, generator):
        s = self.image_size
        seed, offset = rng.draw_key(generator, self.device)
        u = rng.philox_uniform(n * s * s, seed, offset, device=self.device)
        return u.reshape(n, s, s).to(self.head[-1].weight.dtype)

    @torch.no_grad()
    def sample_naive(self, n, *, generator=None):
        """The full-recompute sampler: one whole forward pass per pixel (H * W passes)."""
        n = positive_int("n", n)
        s = self.image_size
        u = self._uniforms(n, generator)
        x = torch.zeros(n, 1, s, s, device=self.device, dtype=u.dtype)
        for i in range(s):
            for j in range(s):
                p = torch.sigmoid(self.logits(x)[:, 0, i, j])
                x[:, 0, i, j] = (u[:, i, j] < p).to(x.dtype)
        return x

    @torch.no_grad()
    def sample(self, n, *, generator=None):
        """n images (n, 1, H, W) drawn pixel by pixel with the row / receptive-field cache of the
        module docstring; equal to sample_naive for the same generator state."""
        n = positive_int("n", n)
        s, k2, L = self.image_size, self.kernel // 2, self.n_layers
        u = self._uniforms(n, generator)
        dt, dev = u.dtype, self.device
        x = torch.zeros(n, 1, s, s, device=dev, dtype=dt)
        xin = torch.zeros(n, 1, s + k2, s + 2 * k2, device=dev, dtype=dt)  # 2x - 1 of known pixels, padded
        # vertical gated outputs of every layer (the next layer's input), padded like xin
        vbuf = [torch.zeros(n, self.channels, s + k2, s + 2 * k2, device=dev, dtype=dt) for _ in range(L)]
        for i in range(s):
            # the vertical stacks' projection into this row: from the pre-activations of row i - 1
            vth = []
            if i == 0:
                for layer in self.layers:
                    zero = torch.zeros(n, 2 * self.channels, 1, s, device=dev, dtype=dt)
                    vth.append(layer.v_to_h(zero))
            else:
                r = i - 1  # compute every layer's vertical output at row r (rows r - k2 .. r of its input)
                v_in = xin
                for li, layer in enumerate(self.layers):
                    pre = layer.v_conv(v_in[:, :, r:r + k2 + 1])  # (n, 2C, 1, s)
                    vth.append(layer.v_to_h(pre))
                    vbuf[li][:, :, k2 + r, k2:k2 + s] = _gate(pre)[:, :, 0]
                    v_in = vbuf[li]
            # horizontal stacks along the row, one position per layer per pixel
            hrow = [torch.zeros(n, self.channels if li else 1, 1, s + k2 + 1, device=dev, dtype=dt)
                    for li in range(L + 1)]  # hrow[0]: the input row, shifted for type A; hrow[l + 1]: layer l
            for j in range(s):
                for li, layer in enumerate(self.layers):
                    src = hrow[li]
                    # layer 0 reads the input shifted right by one (type A): columns j - 1 - k2 .. j - 1
                    win = src[..., j:j + k2 + 1] if li == 0 else src[..., j + 1:j + k2 + 2]
                    pre = layer.h_conv(win) + vth[li][..., j:j + 1]
                    hn = layer.h_out(_gate(pre))
                    if li > 0:
                        hn = hn + src[..., j + k2 + 1:j + k2 + 2]
                    hrow[li + 1][..., j + k2 + 1] = hn[..., 0]
                p = torch.sigmoid(self.head(hrow[L][..., j + k2 + 1:j + k2 + 2]))[:, 0, 0, 0]
                bit = (u[:, i, j] < p).to(dt)
                x[:, 0, i, j] = bit
                xin[:, 0, k2 + i, k2 + j] = 2 * bit - 1
                # the input row for the next pixel's type-A window: the known pixels of row i
                hrow[0][:, 0, 0, j + k2 + 1] = 2 * bit - 1
        return x
