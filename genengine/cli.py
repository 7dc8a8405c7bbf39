"""Command line: `python -m genengine info [--json]` and `python -m genengine bench [...]`."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="genengine", description="genengine: kernels for generative models")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="what was built, available backends, versions, devices")
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("bench", help="the benchmark suite (same options as python -m genengine.bench)", add_help=False)
    if argv[:1] == ["bench"]:
        from .bench.__main__ import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "info":
        from ._info import info

        report = info(verbose=not args.json)
        if args.json:
            print(json.dumps(report, indent=2, default=str))
    return 0
