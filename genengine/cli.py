"""Command line: `python -m genengine COMMAND` or the `genengine` console script.

    genengine info [--json]                       what was built, backends, versions, devices
    genengine bench [--ops ...] [--quick] [--json FILE] [--plot FILE.png]
                                                  the benchmark suite (python -m genengine.bench's options);
                                                  --plot draws the roofline picture of the run
    genengine bench --plot FILE.png --from RUN.json [RUN.json ...]
                                                  the picture of saved runs, without running anything
    genengine demo FAMILY|all|list [--out DIR] [--quick] [--seed N]
                                                  fit a family on its toy data; DIR/FAMILY.png shows data
                                                  beside samples; `all` also draws DIR/gallery.png
    genengine sample MODEL_FILE -n N --out FILE [--seed N] [--network NAME=MODULE:ATTR ...]
                                                  samples of a model saved with model.save(); FILE's
                                                  extension picks the format: .pt .npy .csv .png;
                                                  --network rebuilds a network the model was built
                                                  with (a module or a zero-argument factory, from an
                                                  importable module or a path/to/file.py)
Options for every command: --quiet (no progress bars or chatter), --json (one JSON document on stdout;
for bench, --json FILE is the suite's own JSON output). Exit status: 0 on success, 1 when a demo
fails, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def _common(p):
    p.add_argument("--quiet", action="store_true", help="no progress bars, only errors (and --json output)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON document")


def _parser():
    parser = argparse.ArgumentParser(prog="genengine", description="genengine: kernels for generative models",
                                     epilog="`genengine bench --help` lists the suite's options.")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.subcommands = {}  # a subcommand's own errors print its own usage line, not the top-level one
    p = sub.add_parser("info", help="what was built, available backends, versions, devices")
    _common(p)
    sub.add_parser("bench", help="the benchmark suite (options as python -m genengine.bench) and --plot", add_help=False)
    p = parser.subcommands["demo"] = sub.add_parser("demo", help="fit a family on its toy data and draw samples beside the data")
    p.add_argument("family", help="a family name, 'all' (every family and the gallery) or 'list'")
    p.add_argument("--out", default="genengine-demo", help="directory for the pictures (default: ./genengine-demo)")
    p.add_argument("--quick", action="store_true", help="tiny data and a few steps (a smoke test, not a picture to keep)")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p = parser.subcommands["sample"] = sub.add_parser("sample", help="draw samples from a model file written by model.save()")
    p.add_argument("model_file")
    p.add_argument("-n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output file: .pt (tensor), .npy, .csv (2-D samples) or .png (picture)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--network", action="append", default=[], metavar="NAME=MODULE:ATTR",
                   help="a network argument of the saved model (e.g. decoder=mynets:make_decoder): an nn.Module or "
                        "a zero-argument callable returning one; MODULE is importable or a path to a .py file")
    _common(p)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = []  # --quiet / --json given before the command apply to it
    while argv and argv[0] in ("--quiet", "--json"):
        lead.append(argv.pop(0))
    if argv[:1] == ["bench"]:
        return _bench(argv[1:], quiet="--quiet" in lead)
    parser = _parser()
    args = parser.parse_args(argv[:1] + lead + argv[1:])
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "demo":
            return _demo(args, parser.subcommands["demo"])
        if args.command == "sample":
            return _sample(args, parser.subcommands["sample"])
    except BrokenPipeError:
        return 0
    return 0


def output_path_problem(path):
    """None when a file can be written at `path`, else a one-line reason. Commands call it before the work
    whose result goes there, so a typo in an output path costs nothing (not a finished run, then a traceback).
    It probes by opening the file for appending (which leaves an existing file as it was) because
    os.access says yes to root for paths it cannot create (/proc/x)."""
    if not path:
        return "empty file name"
    if os.path.isdir(path):
        return f"{path!r} is a directory"
    existed = os.path.exists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        return f"cannot write {path!r}: {e.strerror or e}"
    if not existed:
        os.remove(path)  # the probe leaves nothing behind
    return None


def _check_seed(parser, seed):
    """--seed must be a torch seed (-2**63 to 2**64 - 1): checked before anything runs."""
    import torch

    try:
        torch.Generator().manual_seed(seed)
    except (ValueError, RuntimeError, OverflowError):
        parser.error(f"--seed {seed}: outside the range of a torch seed (-2**63 to 2**64 - 1)")


def _directory_problem(path):
    """None when `path` is (or can be made) a directory that files can be written in, else a one-line reason."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".genengine-probe-")
    except OSError as e:
        return f"cannot write in {path!r}: {e.strerror or e}"
    os.close(fd)
    os.remove(probe)
    return None


def _one_line(e):
    """An exception's message on one line (load_state_dict's list its keys on several)."""
    return " ".join(str(e).split())


# ----------------------------------------------------------------------------------------------


def _info(args):
    from ._info import info

    report = info(verbose=not args.json)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


def _bench(argv, quiet=False):
    """Forwards to the suite; --plot FILE.png draws its JSON, --from JSON... draws saved runs instead."""
    plot, sources, rest = None, [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--quiet":
            quiet = True
        elif a == "--plot" or a.startswith("--plot="):
            if a == "--plot":
                if i + 1 >= len(argv):
                    print("genengine bench: --plot needs a file name (e.g. --plot roofline.png)", file=sys.stderr)
                    return 2
                i += 1
                plot = argv[i]
            else:
                plot = a.split("=", 1)[1]
        elif a == "--from":
            i += 1
            start = i
            while i < len(argv) and not argv[i].startswith("--"):
                sources.append(argv[i])
                i += 1
            if i == start:  # without this, an empty --from would fall through to a full live run
                print("genengine bench: --from needs the saved runs' file names (e.g. --from RUN.json)", file=sys.stderr)
                return 2
            continue
        else:
            rest.append(a)
        i += 1
    if sources and plot is None:
        print("genengine bench: --from draws saved runs; give the picture's name with --plot FILE.png", file=sys.stderr)
        return 2
    from .bench.roofline import load_runs, plot_roofline

    if plot is not None:  # checked before running anything: a bad picture name must not cost a suite run
        problem = _plot_path_problem(plot)
        if problem:
            print(f"genengine bench: --plot: {problem}", file=sys.stderr)
            return 2

    if sources:
        if rest:
            print(f"genengine bench: --from draws saved runs and runs nothing; unexpected {' '.join(rest)}", file=sys.stderr)
            return 2
        try:
            docs = load_runs(sources)
        except (OSError, ValueError) as e:
            print(f"genengine bench: {e}", file=sys.stderr)
            return 2
        n = plot_roofline(docs, plot)
        if not quiet:
            print(f"wrote {plot} ({n} rows from {len(sources)} run(s))")
        return 0
    from .bench.__main__ import main as bench_main

    tmp = None
    if plot is not None and "--json" not in rest and not any(r.startswith("--json=") for r in rest):
        fd, tmp = tempfile.mkstemp(suffix=".json", prefix="genengine-bench-")
        os.close(fd)
        rest += ["--json", tmp]
    try:
        rc = bench_main(rest)
        if plot is not None and rc == 0:
            src = tmp or _json_arg(rest)
            n = plot_roofline(load_runs([src]), plot)
            if not quiet:
                print(f"wrote {plot} ({n} rows)")
        return rc
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def _plot_path_problem(path):
    """None when the roofline picture can be drawn to `path`, else a one-line reason."""
    if not path:
        return "needs a file name (e.g. --plot roofline.png)"
    try:
        from .bench.roofline import _matplotlib

        _matplotlib()
    except ImportError as e:
        return str(e)
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()  # what savefig can write (it picks by extension)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in formats:
        return f"{path!r}: expected a picture file name ending in .png (or .{', .'.join(sorted(set(formats) - {'png'}))})"
    return output_path_problem(path)


def _json_arg(rest):
    for i, a in enumerate(rest):
        if a == "--json":
            return rest[i + 1]
        if a.startswith("--json="):
            return a.split("=", 1)[1]
    raise ValueError("no --json FILE")


# ----------------------------------------------------------------------------------------------


def _demo(args, parser):
    from . import demos

    say = (lambda *a: None) if (args.quiet or args.json) else (lambda *a: print(*a, flush=True))
    if args.family == "list":
        rows = {n: {"description": d, "needs": list(needs), "missing": demos.missing_models(n)}
                for n, (_, needs, d) in demos.DEMOS.items()}
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for n, r in rows.items():
                state = "ready" if not r["missing"] else f"not in this build (needs genengine.models.{r['missing'][0]})"
                print(f"{n:16s} {state:50s} {r['description']}")
        return 0
    if args.family != "all" and args.family not in demos.DEMOS:
        parser.error(f"unknown family {args.family!r}; expected one of: {', '.join(demos.DEMOS)}, all, list")
    _check_seed(parser, args.seed)
    problem = _directory_problem(args.out)  # before fitting anything
    if problem:
        parser.error(f"--out: {problem}")
    try:
        from ._plot import matplotlib_pyplot

        matplotlib_pyplot()
    except ImportError as e:
        print(f"genengine demo: {e}", file=sys.stderr)
        return 2
    progress = not (args.quiet or args.json)
    t0 = time.perf_counter()
    if args.family == "all":
        results, skipped, failed = demos.run_all(args.out, quick=args.quick, progress=progress, seed=args.seed, log=say)
        gallery = os.path.join(args.out, "gallery.png")
        say(f"wrote {gallery}: {len(results)} families in {time.perf_counter() - t0:.0f} s"
            + (f"; not in this build: {', '.join(skipped)}" if skipped else ""))
        if args.json:
            print(json.dumps({"gallery": gallery, "seconds": round(time.perf_counter() - t0, 2),
                              "results": [r.summary() for r in results], "skipped": skipped, "failed": failed}, indent=2))
        for name, err in failed.items():
            print(f"genengine demo: {name} failed: {err}", file=sys.stderr)
        return 1 if failed else 0
    try:
        r = demos.run(args.family, args.out, quick=args.quick, progress=progress, seed=args.seed, alone=True)
    except LookupError as e:
        if args.json:
            print(json.dumps({"name": args.family, "skipped": str(e)}))
        else:
            print(f"genengine demo: {e}", file=sys.stderr)
        return 2
    say(f"demo {r.name}: {r.seconds:.1f} s -> {', '.join(r.files)}")
    if args.json:
        print(json.dumps(r.summary(), indent=2))
    return 0


# ----------------------------------------------------------------------------------------------


def _sample(args, parser):
    import torch

    from .models import ModelFileError, load

    if args.n <= 0:
        parser.error(f"-n must be a positive number of samples, got {args.n}")
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in (".pt", ".npy", ".csv", ".png"):
        parser.error(f"--out {args.out!r}: expected a .pt, .npy, .csv or .png file name")
    problem = output_path_problem(args.out)  # before loading and sampling, which can take long
    if problem:
        parser.error(f"--out: {problem}")
    _check_seed(parser, args.seed)
    try:
        networks = dict(_network_arg(spec) for spec in args.network)
    except (ValueError, ImportError, AttributeError, OSError, TypeError, SyntaxError) as e:
        print(f"genengine sample: --network: {e}", file=sys.stderr)
        return 2
    try:
        model = load(args.model_file, **networks)
    except OSError as e:  # missing, a directory, unreadable
        print(f"genengine sample: {args.model_file}: {e.strerror or e}" if not isinstance(e, FileNotFoundError)
              else f"genengine sample: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # load_state_dict: the --network given does not fit the weights in the file
        print(f"genengine sample: {args.model_file}: the file's weights do not fit the networks given: {_one_line(e)}",
              file=sys.stderr)
        return 2
    except ModelFileError as e:
        print(f"genengine sample: {e}", file=sys.stderr)
        return 2
    except TypeError as e:  # built with networks that the file does not store
        print(f"genengine sample: {e} (on the command line: --network NAME=MODULE:ATTR)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with torch.no_grad():
        s = model.sample(args.n, generator=torch.Generator().manual_seed(args.seed))
    if isinstance(s, (tuple, list)):  # families that also return labels or states: the samples come first
        s = s[0]
    if not isinstance(s, torch.Tensor):
        print(f"genengine sample: {type(model).__name__}.sample returned a {type(s).__name__}, not a tensor", file=sys.stderr)
        return 2
    s = s.detach().cpu()
    try:
        _write_samples(s, args.out, ext, type(model).__name__)
    except OSError as e:  # the path was writable a moment ago (checked above), but a disk can fill up
        print(f"genengine sample: --out {args.out!r}: {e.strerror or e}", file=sys.stderr)
        return 2
    info = {"model": type(model).__name__, "file": args.model_file, "n": args.n, "shape": list(s.shape),
            "dtype": str(s.dtype).replace("torch.", ""), "out": args.out, "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(info, indent=2))
    elif not args.quiet:
        print(f"wrote {args.out}: {args.n} samples of shape {tuple(s.shape[1:])} from {info['model']}")
    return 0


def _network_arg(spec):
    """(name, nn.Module) from NAME=MODULE:ATTR; ATTR is a module or a zero-argument factory of one."""
    import importlib
    import importlib.util

    from torch import nn

    name, eq, target = spec.partition("=")
    mod_name, colon, attr = target.rpartition(":")
    if not eq or not name.isidentifier() or not colon or not mod_name or not attr:
        raise ValueError(f"expected NAME=MODULE:ATTR (e.g. decoder=mynets:make_decoder), got {spec!r}")
    if mod_name.endswith(".py"):
        where = importlib.util.spec_from_file_location(f"_genengine_cli_{name}", mod_name)
        if where is None:
            raise ImportError(f"cannot import {mod_name!r}")
        module = importlib.util.module_from_spec(where)
        where.loader.exec_module(module)
    else:
        module = importlib.import_module(mod_name)
    obj = getattr(module, attr)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise TypeError(f"{target}: expected an nn.Module or a zero-argument callable returning one, got {type(obj).__name__}")
        obj = obj()
        if not isinstance(obj, nn.Module):
            raise TypeError(f"{target}(): returned a {type(obj).__name__}, not an nn.Module")
    return name, obj


def _write_samples(s, path, ext, title):
    import torch

    if ext == ".pt":
        torch.save(s, path)
    elif ext == ".npy":
        import numpy as np

        np.save(path, s.numpy())
    elif ext == ".csv":
        flat = s.reshape(s.shape[0], -1) if s.dim() != 1 else s[:, None]
        with open(path, "w") as f:
            for row in flat.tolist():
                f.write(",".join(repr(v) for v in row) + "\n")
    else:
        from ._plot import matplotlib_pyplot

        plt = matplotlib_pyplot()
        fig, ax = plt.subplots(figsize=(5, 5))
        x = s.float()
        if x.dim() == 2 and x.shape[1] == 2:
            ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.6)
            ax.set_aspect("equal", adjustable="datalim")
        elif x.dim() in (3, 4):
            from ._plot import _grid

            lo, hi = float(x.min()), float(x.max())
            ax.imshow(_grid((x - lo) / max(hi - lo, 1e-12), n=min(64, x.shape[0])), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            flat = x.reshape(x.shape[0], -1)
            for row in flat[:8]:
                ax.plot(row.numpy(), lw=0.8)
        ax.set_title(f"{s.shape[0]} samples from {title}")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
