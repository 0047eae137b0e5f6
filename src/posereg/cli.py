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


def _key_values(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} expects KEY=VALUE items, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _run_data_synth(args: argparse.Namespace) -> int:
    from posereg.synth.generate import SynthConfig, generate, generate_3d

    try:
        config = SynthConfig.preset(args.preset)
        overrides = _key_values(args.set, "--set")
        if args.image_size is not None:
            overrides["image_size"] = ",".join(str(x) for x in args.image_size)
        for flag, key in (
            ("people_per_image", "people_per_image"),
            ("camera", "camera"),
            ("keypoint_set", "keypoint_set"),
        ):
            if getattr(args, flag) is not None:
                overrides[key] = getattr(args, flag)
        if args.noise == ["off"]:
            overrides |= {"noise.scale": "0", "noise.outlier_prob": "0", "noise.swap_prob": "0"}
        elif args.noise:
            overrides |= {f"noise.{k}": v for k, v in _key_values(args.noise, "--noise").items()}
        config = config.with_overrides(overrides)
        if args.only_3d:
            path = generate_3d(args.out, args.split, args.num_images, args.seed, config)
        else:
            path = generate(
                args.out,
                args.split,
                args.num_images,
                args.seed,
                config,
                args.workers,
                not args.quiet,
            )
    except (ValueError, FileNotFoundError) as e:
        print(f"posereg data synth: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _add_data_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="render a synthetic COCO person-keypoints split (or, with --only-3d, 2D-3D pose arrays)",
        description="Render synthetic people with noisy COCO-style labels and the clean truth "
        "(images/<split>/ and annotations/person_keypoints_<split>.json under --out). See docs/synth.md.",
    )
    p.add_argument("--out", required=True, help="dataset folder (created if needed)")
    p.add_argument("--split", default="train", help="split name (default: train)")
    p.add_argument(
        "--num-images", type=int, default=1000, help="images (poses with --only-3d) (default: 1000)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--preset", default="medium", help="difficulty: easy, medium or hard (default: medium)"
    )
    p.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="image size (default: 256 256)"
    )
    p.add_argument("--people-per-image", metavar="A..B", help="people per image, e.g. 1..3 or 2")
    p.add_argument("--camera", help="random or h36m (real Human3.6M calibrations)")
    p.add_argument("--keypoint-set", help="coco17, mpii16 or h36m17 (default: coco17)")
    p.add_argument(
        "--noise", nargs="+", default=[], metavar="KEY=VALUE",
        help="label-noise settings, e.g. scale=0.5 outlier_prob=0.03 swap_prob=0.01 occluded_factor=2 "
        "outlier_scale=5; or 'off' for clean labels",
    )  # fmt: skip
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="any other SynthConfig field, e.g. occluder_prob=0.5",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: all cores; 0: in-process)",
    )
    p.add_argument(
        "--only-3d",
        action="store_true",
        help="skip images: write poses3d_<split>.npz with --num-images poses",
    )
    p.add_argument("--quiet", action="store_true", help="no progress report")
    p.set_defaults(func=_run_data_synth)


def _run_data_show(args: argparse.Namespace) -> int:
    from posereg.synth.show import contact_sheet

    try:
        path = contact_sheet(
            args.dir, args.split, args.out, args.num_images, args.columns, args.scale
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"posereg data show: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _add_data_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show", help="write a contact-sheet PNG of a COCO keypoint split with its labels drawn"
    )
    p.add_argument("dir", help="dataset folder (with images/ and annotations/)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="PNG path (default: DIR/contact_sheet_<split>.png)")
    p.add_argument("--num-images", type=int, default=16)
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--scale", type=float, default=1.0, help="resize factor per image")
    p.set_defaults(func=_run_data_show)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets: render synthetic data (synth), draw labels (show)")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    _add_data_synth(data_sub)
    _add_data_show(data_sub)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands: demo, data)."""
    from posereg import __version__

    parser = argparse.ArgumentParser(
        prog="posereg",
        description="Human pose regression with Residual Log-likelihood Estimation (RLE).",
    )
    parser.add_argument("--version", action="version", version=f"posereg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_data(sub)
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
