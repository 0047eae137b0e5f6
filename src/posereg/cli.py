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


def _error(command: str, e: Exception) -> int:
    print(f"posereg {command}: error: {e}", file=sys.stderr)
    return 2


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. train.epochs=10 optim.lr=5e-4 (values parsed as YAML)",
    )


def _run_train(args: argparse.Namespace) -> int:
    from posereg.config import ConfigError, load_config
    from posereg.engine.train import train

    try:
        if args.resume:
            cfg = None
        elif args.config is None:
            raise ConfigError("give a CONFIG file, or --resume RUN_DIR")
        else:
            cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        return _error("train", e)
    result = train(cfg, resume=args.resume, device=args.device)  # type: ignore[arg-type]
    print(f"run: {result.run_dir}")
    for k, v in result.metrics.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a regressor from a YAML config (or resume a run)")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    _add_set(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where it stopped")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=_run_train)


def _run_eval(args: argparse.Namespace) -> int:
    from posereg.config import ConfigError, load_config
    from posereg.engine.checkpoint import CheckpointError
    from posereg.engine.evaluate import run_evaluation

    try:
        cfg = load_config(args.config, args.overrides)
        result = run_evaluation(cfg, args.checkpoint, device=args.device, out=args.out)
    except (ConfigError, CheckpointError) as e:
        return _error("eval", e)
    for k, v in result.summary().items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's validation set")
    p.add_argument("config", help="YAML config (its data and eval sections are used)")
    p.add_argument("--checkpoint", required=True, help="a posereg checkpoint (.pt)")
    _add_set(p)
    p.add_argument("--out", help="write the COCO-results predictions json here")
    p.add_argument("--device")
    p.set_defaults(func=_run_eval)


def _run_predict(args: argparse.Namespace) -> int:
    from posereg.engine.checkpoint import CheckpointError
    from posereg.predict import predict_files

    try:
        out = predict_files(
            args.checkpoint, args.inputs, args.out, boxes=args.boxes,
            score_threshold=args.score_threshold, draw=not args.no_draw, device=args.device,
        )  # fmt: skip
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        return _error("predict", e)
    print(out)
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict poses on images; COCO-results json + overlay PNGs")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--boxes",
        help="person boxes as COCO results json (image_id = the file name's number, as in COCO); "
        "without it each image is one box",
    )
    p.add_argument("--score-threshold", type=float, default=0.0, help="drop boxes scored below")
    p.add_argument("--out", default="runs/predict", help="output folder (default: runs/predict)")
    p.add_argument("--no-draw", action="store_true", help="no overlay images")
    p.add_argument("--device")
    p.set_defaults(func=_run_predict)


def _run_export(args: argparse.Namespace) -> int:
    from posereg.engine.checkpoint import CheckpointError
    from posereg.export import export_checkpoint

    try:
        path, err = export_checkpoint(
            args.checkpoint, args.out, args.format, check=not args.no_check
        )
    except (CheckpointError, ValueError, ImportError) as e:
        return _error("export", e)
    print(path)
    if err is not None:
        print(f"onnxruntime vs PyTorch: max abs difference {err:.2e}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint for deployment (ONNX)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", help="output file (default: next to the checkpoint)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.set_defaults(func=_run_export)


def _run_info(args: argparse.Namespace) -> int:
    from posereg.engine.checkpoint import CheckpointError, describe_checkpoint

    try:
        print(describe_checkpoint(args.checkpoint))
    except CheckpointError as e:
        return _error("info", e)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print what a checkpoint holds (config, epoch, metrics, sizes)")
    p.add_argument("checkpoint")
    p.set_defaults(func=_run_info)


def _run_convert(args: argparse.Namespace) -> int:
    from posereg.convert import convert_official

    try:
        path = convert_official(args.src, args.dst)
    except (ValueError, FileNotFoundError) as e:
        return _error("convert", e)
    print(path)
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import a checkpoint of another code base")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        choices=["official"],
        help="official: Jeff-sjtu/res-loglikelihood-regression",
    )
    p.add_argument("src", help="the foreign checkpoint (.pth)")
    p.add_argument("dst", help="the posereg checkpoint to write (.pt)")
    p.set_defaults(func=_run_convert)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands: demo, train, eval, predict, export, info, convert, data)."""
    from posereg import __version__

    parser = argparse.ArgumentParser(
        prog="posereg",
        description="Human pose regression with Residual Log-likelihood Estimation (RLE).",
    )
    parser.add_argument("--version", action="version", version=f"posereg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_info(sub)
    _add_convert(sub)
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
