"""The ``posereg`` command line: one sub-command per task, each a thin layer over the Python API.

Each ``_add_*`` function declares one sub-command and binds it to a ``_run_*`` function that
imports its implementation lazily, so ``posereg --help`` stays fast and nothing heavy runs
at import time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _run_demo(args: argparse.Namespace) -> int:
    from posereg.demo import run_demo

    run_demo(steps=args.steps, seed=args.seed)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="fit a tiny RLE regressor on synthetic heavy-tailed points and print the learned sigma",
    )
    p.add_argument("--steps", type=int, default=1500, help="optimisation steps (default: 1500)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands: demo)."""
    from posereg import __version__

    parser = argparse.ArgumentParser(
        prog="posereg",
        description="Human pose regression with Residual Log-likelihood Estimation (RLE).",
    )
    parser.add_argument("--version", action="version", version=f"posereg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posereg`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
