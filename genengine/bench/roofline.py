"""The roofline picture of a benchmark run: `python -m genengine bench --plot FILE.png` (after running
the suite) or `python -m genengine bench --plot FILE.png --from RESULTS.json [...]` (from saved runs).

Input: the suite's JSON documents (genengine/bench/__main__.py: "ceilings" and "results" ->
{family: {"rows": [...]}}). Every row with `median_s` and `bytes_moved` is a point; rows that also
carry `flops` (FLOPs per call) or `GFLOP_per_s` are also placed on the FLOP roofline.

Left panel, bandwidth: achieved GB/s (bytes_moved / median_s) against bytes moved, under the
machine's measured copy bandwidth at each byte count (the memory ceiling: caches make it depend on
size). Right panel, roofline: achieved GFLOP/s against arithmetic intensity (FLOP/byte), under
min(matmul rate, copy bandwidth x intensity). Colours name the op, markers the backend.
"""

from __future__ import annotations

import json
import math

__all__ = ["load_runs", "points", "plot_roofline"]

_MARKERS = {"cpp": "o", "cpp out=": "s", "torch": "^", "torch-textbook": "x", "triton": "D", "cuda": "P",
            "cuda out=": "X", "triton out=": "d", "cpp in-place": "v", "cuda in-place": "<", "triton in-place": ">"}


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("drawing pictures needs matplotlib: pip install 'genengine[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_runs(paths):
    """The suite JSON documents at `paths` (ValueError naming the file for anything else)."""
    docs = []
    for p in paths:
        try:
            with open(p) as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"--from: no such file {p!r}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"--from: {p!r} is not JSON ({e})") from None
        if not isinstance(doc, dict) or "results" not in doc or "ceilings" not in doc:
            raise ValueError(f"--from: {p!r} is not a genengine.bench JSON file (no 'results'/'ceilings'; "
                             "write one with python -m genengine.bench --json FILE)")
        docs.append(doc)
    return docs


def points(doc):
    """[(family, op, backend, dtype, bytes, seconds, flops or None)] of one run's rows."""
    out = []
    for family, res in doc["results"].items():
        rows = res.get("rows", []) if isinstance(res, dict) else res
        for r in rows:
            if not isinstance(r, dict) or not r.get("median_s") or not r.get("bytes_moved"):
                continue
            flops = r.get("flops")
            if flops is None and r.get("GFLOP_per_s"):
                flops = r["GFLOP_per_s"] * 1e9 * r["median_s"]
            out.append((family, str(r.get("op", family)), str(r.get("backend", "?")), str(r.get("dtype", "")),
                        float(r["bytes_moved"]), float(r["median_s"]), flops))
    return out


def _copy_curve(doc):
    """[(bytes, GB/s)] of the copy ceiling: the suite's copy measurements, plus the same-bytes copies
    that rows were compared with (copy_GB_per_s_at_bytes, or GB_per_s / pct_of_copy)."""
    best = {}
    for c in doc["ceilings"].get("copy", []):
        if c.get("GB_per_s"):
            best[c["bytes"]] = max(best.get(c["bytes"], 0.0), c["GB_per_s"])
    for res in doc["results"].values():
        for r in (res.get("rows", []) if isinstance(res, dict) else []):
            b = r.get("bytes_moved")
            g = r.get("copy_GB_per_s_at_bytes")
            if g is None and r.get("pct_of_copy") and r.get("GB_per_s") and "copy_GB_per_s_at_bytes" not in r:
                g = r["GB_per_s"] * 100.0 / r["pct_of_copy"]
            if b and g:
                best[b] = max(best.get(b, 0.0), g)
    return sorted(best.items())


def plot_roofline(docs, path, *, title=None):
    """Draws the picture of the runs in `docs` to `path` (PNG); returns the number of points drawn."""
    plt = _matplotlib()
    fig, (ax_bw, ax_rf) = plt.subplots(1, 2, figsize=(15, 6.5))
    ops = sorted({p[1] for d in docs for p in points(d)})
    cmap = plt.get_cmap("tab20" if len(ops) > 10 else "tab10")
    colour = {op: cmap(i % cmap.N) for i, op in enumerate(ops)}
    n_drawn, backends_seen = 0, set()
    peak_bw, mm = 0.0, 0.0
    for k, doc in enumerate(docs):
        suffix = f" (run {k + 1})" if len(docs) > 1 else ""
        curve = _copy_curve(doc)
        if curve:
            ax_bw.plot([b for b, _ in curve], [g for _, g in curve], "-", color="black", lw=2, alpha=0.8 - 0.3 * k,
                       label=f"copy bandwidth (measured){suffix}", zorder=1)
            peak_bw = max(peak_bw, max(g for _, g in curve))
        mmd = doc["ceilings"].get("matmul_float32") or {}
        mm = max(mm, mmd.get("GFLOP_per_s") or 0.0)
        for _fam, op, be, _dt, nbytes, sec, flops in points(doc):
            backends_seen.add(be)
            m = _MARKERS.get(be, "v")
            ax_bw.scatter(nbytes, nbytes / sec / 1e9, color=colour[op], marker=m, s=46, zorder=3,
                          edgecolors="black" if m not in "x+" else None, linewidths=0.4)
            if flops:
                ax_rf.scatter(flops / nbytes, flops / sec / 1e9, color=colour[op], marker=m, s=46, zorder=3,
                              edgecolors="black" if m not in "x+" else None, linewidths=0.4)
            n_drawn += 1
    ax_bw.set_xscale("log")
    ax_bw.set_yscale("log")
    ax_bw.set_xlabel("bytes moved per call (floor: each input read once, each output written once)")
    ax_bw.set_ylabel("achieved GB/s  (bytes moved / median time)")
    ax_bw.set_title("memory-bound view: every row against the copy ceiling")
    ax_bw.grid(True, which="both", alpha=0.25)

    # the roofline: min(matmul, bandwidth x intensity), with the best and the largest-size copy bandwidth
    intens = [10 ** (e / 8) for e in range(-24, 33)]
    if mm and peak_bw:
        ax_rf.plot(intens, [min(mm, peak_bw * i) for i in intens], "-", color="black", lw=2,
                   label=f"min(matmul {mm:.0f} GFLOP/s, copy {peak_bw:.0f} GB/s x intensity)")
        big = _copy_curve(docs[0])
        if big and big[-1][1] < peak_bw:
            ax_rf.plot(intens, [min(mm, big[-1][1] * i) for i in intens], "--", color="grey", lw=1.5,
                       label=f"copy at {big[-1][0] / 2**20:.0f} MiB: {big[-1][1]:.0f} GB/s")
        ax_rf.axhline(mm, color="tab:red", lw=0.8, alpha=0.5)
    ax_rf.set_xscale("log")
    ax_rf.set_yscale("log")
    ax_rf.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax_rf.set_ylabel("achieved GFLOP/s")
    ax_rf.set_title("compute view: rows that count FLOPs, under the matmul ceiling")
    ax_rf.grid(True, which="both", alpha=0.25)
    if not any(p[6] for d in docs for p in points(d)):
        ax_rf.text(0.62, 0.3, "no row in these runs counts FLOPs\n(memory-bound ops: see the left panel)",
                   transform=ax_rf.transAxes, ha="center", va="center", fontsize=11, color="dimgrey")

    # legends: ceilings on each axes; ops (colours) and backends (markers) once, below
    for ax in (ax_bw, ax_rf):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    from matplotlib.lines import Line2D

    op_handles = [Line2D([], [], marker="o", ls="", color=colour[o], markeredgecolor="black", label=o) for o in ops]
    be_handles = [Line2D([], [], marker=_MARKERS.get(b, "v"), ls="", color="grey", label=b) for b in sorted(backends_seen)]
    if op_handles:
        fig.legend(handles=op_handles, loc="lower left", ncol=min(6, len(op_handles)), fontsize=8, title="op",
                   bbox_to_anchor=(0.01, 0.0))
    if be_handles:
        fig.legend(handles=be_handles, loc="lower right", ncol=min(4, len(be_handles)), fontsize=8, title="backend",
                   bbox_to_anchor=(0.99, 0.0))
    d0 = docs[0]
    dev = d0.get("device", "?")
    cpu = next((d.get("name") for d in d0.get("machine", {}).get("devices", []) if d.get("type") == dev), "")
    when = d0.get("date", "")[:10]
    fig.suptitle(title or f"genengine.bench roofline: {dev} {cpu} ({when}), {n_drawn} rows", fontsize=13)
    rows_needed = math.ceil(len(op_handles) / 6) if op_handles else 1
    fig.tight_layout(rect=(0, 0.06 + 0.03 * rows_needed, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return n_drawn
