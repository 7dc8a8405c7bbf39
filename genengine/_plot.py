"""Pictures of data next to samples, for `python -m genengine demo` (matplotlib: the `plot` extra).

A demo result (genengine/demos.py) has a `kind` and `data`/`samples` of that kind:
    points     (N, 2) tensors                          scatter plots
    images     (N, H, W) or (N, C, H, W) in [0, 1]     a grid of the first 16
    text       lists of strings                         the first lines, monospace
    sequences  (N, T) tensors                           the first 4 as step traces
    audio      (F, T) log-magnitude spectrograms        images, frequency up (Hz from `extent`)
    video      (N, T, H, W) in [0, 1]                  a strip: one row per clip, one column per frame
draw_panel puts "data" on the left and "samples" on the right of one gallery cell; figure_for
draws a single result as its own figure; gallery draws every result on one page.
"""

from __future__ import annotations

import math

import torch


def matplotlib_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("pictures need matplotlib: pip install 'genengine[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _np(x):
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else x


def _grid(imgs, n=16, pad=1):
    """(H', W'[, 3]) montage of the first n images of (N, H, W) or (N, C, H, W), on a light background."""
    x = imgs[:n].detach().float().cpu().clamp(0, 1)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    k = x.shape[0]
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    if x.dim() == 3:
        h, w = x.shape[1:]
        out = torch.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 0.5)
    else:
        c, h, w = x.shape[1:]
        x = x[:, :3].permute(0, 2, 3, 1)
        out = torch.full((rows * (h + pad) + pad, cols * (w + pad) + pad, x.shape[-1]), 0.5)
    for i in range(k):
        r, c_ = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c_ * (w + pad): pad + c_ * (w + pad) + w] = x[i]
    return out.numpy()


def _strip(clips, n=4, pad=1):
    """(rows, cols) montage of video clips (N, T, H, W): row = clip, column = frame."""
    x = clips[:n].detach().float().cpu().clamp(0, 1)
    if x.dim() == 5:  # (N, C, T, H, W) with one channel
        x = x[:, 0]
    k, t, h, w = x.shape
    out = torch.full((k * (h + pad) + pad, t * (w + pad) + pad), 0.5)
    for i in range(k):
        for j in range(t):
            out[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = x[i, j]
    return out.numpy()


def _draw(ax, kind, value, result, side):
    ax.set_xticks([])
    ax.set_yticks([])
    if kind == "points":
        v = _np(value)
        colour = "0.45" if side == "data" else "tab:blue"
        ax.scatter(v[:, 0], v[:, 1], s=2, alpha=0.5, color=colour, linewidths=0)
        lim = result.extra.get("limits")
        if lim:
            ax.set_xlim(*lim[0])
            ax.set_ylim(*lim[1])
        ax.set_aspect("equal", adjustable="box")
    elif kind == "images":
        g = _grid(value)
        ax.imshow(g, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    elif kind == "video":
        ax.imshow(_strip(value), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    elif kind == "audio":
        ext = result.extra.get("extent")
        ax.imshow(_np(value), origin="lower", aspect="auto", cmap="magma", extent=ext, interpolation="nearest")
        if ext:  # axis ranges in the title: tick labels do not fit a gallery cell
            side = f"{side} (0-{ext[3] / 1000:.0f} kHz, {ext[1]:.1f} s)"
    elif kind == "text":
        lines = [s[:38] for s in list(value)[:8]]
        ax.text(0.02, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", family="monospace",
                fontsize=6.5)
    elif kind == "sequences":
        v = _np(value)
        for i in range(min(4, v.shape[0])):
            ax.step(range(v.shape[1]), v[i] + i * result.extra.get("offset", 0.0), where="mid", lw=0.8)
    else:
        raise ValueError(f"kind: unknown panel kind {kind!r}")
    ax.set_title(side, fontsize=8, pad=2)


def draw_panel(fig, spec, result):
    """One gallery cell: the result's data (left) and samples (right) under its title."""
    inner = spec.subgridspec(1, 2, wspace=0.06)
    for j, (side, value) in enumerate((("data", result.data), ("samples", result.samples))):
        ax = fig.add_subplot(inner[0, j])
        _draw(ax, result.kind, value, result, side)
    ax0 = fig.add_subplot(spec, frameon=False)
    ax0.set_xticks([])
    ax0.set_yticks([])
    ax0.set_title(result.title, fontsize=10, pad=14, fontweight="bold")
    if result.caption:
        ax0.set_xlabel(result.caption, fontsize=7, labelpad=2)


def figure_for(result, path):
    plt = matplotlib_pyplot()
    fig = plt.figure(figsize=(8, 4.2))
    gs = fig.add_gridspec(1, 1, left=0.03, right=0.97, top=0.86, bottom=0.1)
    draw_panel(fig, gs[0, 0], result)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gallery(results, path, *, title="genengine: every family generating", missing=()):
    plt = matplotlib_pyplot()
    n = max(1, len(results))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    height = 3.3 * rows + 1.4
    fig = plt.figure(figsize=(5.2 * cols, height))
    top = 1 - 1.45 / height  # room for the two-line suptitle above the first row's titles
    gs = fig.add_gridspec(rows, cols, left=0.02, right=0.98, top=top, bottom=0.35 / height + 0.02,
                          hspace=0.55, wspace=0.12)
    for i, r in enumerate(results):
        draw_panel(fig, gs[i // cols, i % cols], r)
    sub = f"{len(results)} families" + (f"; not in this build: {', '.join(missing)}" if missing else "")
    fig.suptitle(f"{title}\n{sub}", fontsize=13)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def spectrogram_figure(spec_db, extent, path, title):
    plt = matplotlib_pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    im = ax.imshow(_np(spec_db), origin="lower", aspect="auto", cmap="magma", extent=extent)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="log magnitude")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def strip_figure(clips, path, title):
    plt = matplotlib_pyplot()
    s = _strip(clips, n=clips.shape[0])
    fig, ax = plt.subplots(figsize=(min(16, 0.9 * clips.shape[1] + 1), 0.9 * clips.shape[0] + 0.8))
    ax.imshow(s, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
