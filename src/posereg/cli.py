"""The ``posereg`` command line: one sub-command per task, each a thin layer over the Python API.

Each ``_add_*`` function declares one sub-command and binds it to a ``_run_*`` function that
imports its implementation lazily, so ``posereg --help`` stays fast and nothing heavy runs
at import time. User errors (a bad file, key, value or option; a missing or read-only path;
a full disk) are turned into one line ``posereg CMD: error: ...`` and exit status 2 in one
place, :func:`main`; ``--debug`` shows the traceback instead. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

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


def _message(e: BaseException) -> str:
    """One line for a user error; an OSError without its ``[Errno N]`` prefix and with its path,
    an error re-raised by a DataLoader from its worker with the worker's message alone."""
    from posereg.data.badinput import worker_message

    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return worker_message(str(e)) or type(e).__name__


def _error(command: str, e: BaseException) -> int:
    """Print the one line of a user error (under torchrun, per the rank-0 rule); exit status 2."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from posereg.engine.distributed import user_error_line

        line = user_error_line(command, _message(e))
    else:
        line = f"posereg {command}: error: {_message(e)}"
    if line is not None:
        print(line, file=sys.stderr, flush=True)
    return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix (the rest are bugs and keep their traceback)."""
    from posereg.errors import RunLockedError
    from posereg.losses import NonFiniteLossError

    # ValueError covers ConfigError, CheckpointError and BadInputError (and bad option values)
    return (ValueError, OSError, NonFiniteLossError, RunLockedError, ModuleNotFoundError)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",  # --set a=1 --set b=2 applies both
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. train.epochs=10 optim.lr=5e-4 (values parsed as YAML)",
    )


def _run_train(args: argparse.Namespace) -> int:
    try:
        return _train(args)
    except KeyboardInterrupt as e:  # train's own say what was saved; a bare one came before
        if str(e):
            raise
        raise KeyboardInterrupt("interrupted before the first step; nothing saved") from e


def _train(args: argparse.Namespace) -> int:
    from posereg.config import ConfigError
    from posereg.errors import RunFinished
    from posereg.family import family_of_config

    if args.resume:
        if args.config is not None:
            raise ConfigError(
                f"give CONFIG or --resume, not both: a resumed run keeps its own config "
                f"({args.resume}/config.yaml); to train it longer use --set train.epochs=M"
            )
        family = family_of_config(f"{args.resume}/config.yaml")
    elif args.config is None:
        raise ConfigError("give a CONFIG file, or --resume RUN_DIR")
    else:
        family = family_of_config(args.config)
        cfg = family.load_config(args.config, args.overrides)
    from posereg.engine.distributed import env_rank

    try:
        if args.resume:
            summary = family.resume(args.resume, device=args.device, overrides=args.overrides)
        else:
            summary = family.train(cfg, device=args.device, exist_ok=args.exist_ok)
    except RunFinished as e:  # nothing to do is not a failure: a requeued job may resume again
        if env_rank() == 0:
            print(f"posereg train: {e}", file=sys.stderr)
        return 0
    if env_rank() == 0:  # under torchrun rank 0 alone reports (its result has the metrics)
        print(summary)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a regressor from a YAML config (or resume a run)")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    _add_set(p)
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run exactly where it stopped (with its own config; --set may only "
        "raise train.epochs or train.max_steps)",
    )
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="reuse out_dir/name when it holds an earlier run (deleting that run's logs, report "
        "and checkpoints) instead of writing to name-2, name-3, ...",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=_run_train)


def _run_eval(args: argparse.Namespace) -> int:
    from posereg.family import family_of_config

    family = family_of_config(args.config)
    cfg = family.load_config(args.config, args.overrides)
    print(family.run_evaluation(cfg, args.checkpoint, device=args.device, out=args.out))
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's validation set")
    p.add_argument("config", help="YAML config (its data and eval sections are used)")
    p.add_argument(
        "--checkpoint", required=True, help="a posereg checkpoint (.pt) or its ONNX export (.onnx)"
    )
    _add_set(p)
    p.add_argument(
        "--out", help="write the predictions json here (COCO results; 3D joints for lift)"
    )
    p.add_argument("--device")
    p.set_defaults(func=_run_eval)


DEFAULT_PREDICT_OUT = "runs/predict"


def _run_predict(args: argparse.Namespace) -> int:
    from posereg.video import is_video  # light: no torch until a video is predicted

    videos = [item for item in args.inputs if is_video(item)]
    if videos and len(videos) < len(args.inputs):
        raise ValueError("give images (or folders of images) or videos, not both")
    if args.smooth and not videos:
        raise ValueError("--smooth applies to videos (a .mp4, .avi, .mov, ... input)")
    if args.boxes and args.detector:
        raise ValueError("give --boxes or --detector, not both")
    if args.boxes and videos:
        raise ValueError("--boxes is for images; for a video use --detector (or no boxes)")
    if args.detector_weights and not args.detector:
        raise ValueError("--detector-weights needs --detector NAME")
    if args.detector:
        from posereg.detect import DETECTORS  # light: no torch until a detector is built

        if args.detector not in DETECTORS:
            raise ValueError(
                f"--detector {args.detector!r}: expected one of {', '.join(DETECTORS)}"
            )
    stems: dict[str, str] = {}
    for video in videos:  # a video's outputs are named by its stem
        stem = Path(video).stem
        if stem in stems:
            raise ValueError(
                f"{stems[stem]} and {video} would both write {stem}_pose.mp4 and "
                f"{stem}_predictions.json: predict them one at a time, each with its own --out"
            )
        stems[stem] = video
    detector = None
    if args.detector:
        from posereg.detect import PersonDetector

        detector = PersonDetector(
            args.detector, args.detector_weights, args.detector_threshold, args.device or "cpu"
        )
    out = args.out
    if out is None:  # never into an earlier prediction's folder: runs/predict, runs/predict-2, ...
        from posereg.outputs import next_free_dir

        out = next_free_dir(DEFAULT_PREDICT_OUT)
        print(f"posereg predict: writing to {out}", file=sys.stderr)
    from posereg.predict import predict_files
    from posereg.video import predict_video

    for video in videos:
        result = predict_video(
            args.checkpoint, video, out, detector=detector, smooth=args.smooth,
            process_noise=args.process_noise, draw=not args.no_draw, device=args.device,
        )  # fmt: skip
        print(
            f"{result.predictions} ({result.num_instances} poses in {result.num_frames} frames, "
            f"{result.num_tracks} track(s), {result.fps:.1f} frames/s)"
        )
    if videos:
        return 0
    summary = predict_files(
        args.checkpoint, args.inputs, out, boxes=args.boxes,
        score_threshold=args.score_threshold, draw=not args.no_draw, device=args.device,
        exif_orientation=not args.ignore_exif, detector=detector,
    )  # fmt: skip
    for line in summary.lines():
        print(f"posereg predict: {line}", file=sys.stderr)
    print(f"{summary.predictions} ({summary.num_instances} poses)")
    return 1 if summary.failed else 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from posereg.smoothing import DEFAULT_PROCESS_NOISE, SMOOTHERS

    p = sub.add_parser(
        "predict",
        help="predict poses on images or videos; COCO-results json + overlay PNGs / annotated video",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_DIR_OR_VIDEO")
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--boxes",
        help="person boxes as COCO results json; an entry matches an image by its file_name, "
        "else by image_id = the file name's number (as in COCO); without it each image is one box",
    )
    p.add_argument("--score-threshold", type=float, default=0.0, help="drop boxes scored below")
    p.add_argument(
        "--detector",
        metavar="NAME",
        help="find the people with a torchvision COCO detector: fasterrcnn (ResNet-50 FPN), "
        "fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_mobilenet_v3_large_320_fpn or "
        "ssdlite320_mobilenet_v3_large (the lightest); local weights only, see docs/serve.md; "
        "default: the whole image is one person",
    )
    p.add_argument(
        "--detector-weights",
        metavar="FILE",
        help="the detector's state dict (default: torchvision's cache, ~/.cache/torch/hub)",
    )
    p.add_argument(
        "--detector-threshold", type=float, default=0.5, help="keep people scored at least this"
    )
    p.add_argument(
        "--smooth",
        choices=list(SMOOTHERS),
        help="videos: smooth each person's keypoints over time (default: off); kalman uses "
        "each keypoint's sigma as its measurement noise",
    )
    p.add_argument(
        "--process-noise",
        type=float,
        default=DEFAULT_PROCESS_NOISE,
        metavar="Q",
        help=f"--smooth kalman: acceleration noise in px^2/frame^3 (default: {DEFAULT_PROCESS_NOISE:g})",
    )
    p.add_argument(
        "--out",
        help=f"output folder (default: the first of {DEFAULT_PREDICT_OUT}, "
        f"{DEFAULT_PREDICT_OUT}-2, ... that is missing or empty)",
    )
    p.add_argument("--no-draw", action="store_true", help="no overlay images")
    p.add_argument(
        "--ignore-exif",
        action="store_true",
        help="predict on the stored pixels, ignoring the photos' EXIF orientation tag",
    )
    p.add_argument("--device")
    p.set_defaults(func=_run_predict)


def _run_lift(args: argparse.Namespace) -> int:
    import numpy as np

    from posereg.lift import lift_file

    result, json_path, png = lift_file(
        args.checkpoint, args.poses, args.out, draw=not args.no_draw, device=args.device or "cpu"
    )
    degenerate = result.degenerate_line()
    if degenerate is not None:
        print(f"posereg lift: {degenerate}", file=sys.stderr)
    skipped = 0 if result.degenerate is None else int(result.degenerate.sum())
    lifted = len(result.joints_3d) - skipped
    sigma = "" if result.sigma is None or not lifted else (
        f", mean sigma {np.nanmean(result.sigma):.1f} mm"
    )  # fmt: skip
    null = f" ({skipped} degenerate: null)" if skipped else ""
    if result.calibration is not None:
        print(result.calibration.describe("mm"))
    print(f"lifted {lifted} poses{null}{sigma} -> {json_path}")
    if png is not None:
        print(f"3D skeletons -> {png}")
    return 0 if lifted else 1  # nothing lifted: every pose was degenerate


def _add_lift(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lift",
        help="lift 2D keypoints to 3D (mm, root-relative) with a lifting checkpoint",
        description="POSES_2D: a COCO-results json (from `posereg predict`) or an .npy/.npz "
        "array (N, K, 2 or 3) in pixels, in the lifter's input skeleton. Writes "
        "OUT/poses_3d.json (joints and per-joint sigma in mm) and OUT/poses_3d.png. A pose "
        "with no 2D spread (all joints at one point, e.g. zeros) is named on stderr and lifted "
        "as null; exit status 1 when every pose is.",
    )
    p.add_argument("poses", metavar="POSES_2D")
    p.add_argument("--checkpoint", required=True, help="checkpoint of a `task: lift` run")
    p.add_argument("--out", default="runs/lift", help="output folder (default: runs/lift)")
    p.add_argument("--no-draw", action="store_true", help="no 3D skeleton PNG")
    p.add_argument("--device")
    p.set_defaults(func=_run_lift)


def _run_export(args: argparse.Namespace) -> int:
    from posereg.export import export_checkpoint

    path, err = export_checkpoint(
        args.checkpoint, args.out, args.format, check=not args.no_check, overwrite=args.overwrite,
        opset=args.opset, int8=args.int8, calibration_images=args.calibration_images,
    )  # fmt: skip
    print(path)
    if err is not None and args.int8:
        print(f"INT8 vs float32 on the calibration crops: mean |keypoint difference| {err:.2e}")
    elif err is not None:
        print(f"onnxruntime vs PyTorch: max abs difference {err:.2e}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint for deployment (ONNX)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", help="output file (default: next to the checkpoint)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the output file when it exists"
    )
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="ONNX Runtime static INT8 quantisation (QDQ), calibrated on training crops (needs "
        "the checkpoint's training data; default output CKPT.int8.onnx)",
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        metavar="N",
        help="training crops that calibrate --int8 (default: 256)",
    )
    p.set_defaults(func=_run_export)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"posereg serve needs the 'serve' extra ({e.name} is missing): "
            "pip install 'posereg[serve]'"
        ) from None
    from posereg.serve.net import listen

    if not (math.isfinite(args.max_pixels) and args.max_pixels >= 1):
        raise ValueError(f"--max-pixels must be a number of pixels >= 1, got {args.max_pixels:g}")
    sock = listen(args.host, args.port)  # first: a bad or busy port fails before the model loads
    try:
        from posereg.predict import Predictor
        from posereg.serve.app import ServeSettings, create_app

        settings = ServeSettings(
            max_upload_mb=args.max_upload_mb, max_boxes=args.max_boxes, timeout_s=args.timeout,
            max_pixels=int(args.max_pixels), checkpoint=str(args.checkpoint),
        )  # fmt: skip
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
        app = create_app(predictor, settings)
        port = sock.getsockname()[1]  # the port the system chose for --port 0
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(
            f"posereg serve: {predictor.name} on http://{host}:{port} "
            f"(demo page /, API docs /docs)",
            flush=True,
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="HTTP API (POST /v1/predict) and a browser demo page for a checkpoint"
    )
    p.add_argument(
        "--checkpoint", required=True, help="a posereg checkpoint (.pt) or its ONNX export (.onnx)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free one)")
    p.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="largest request body, MiB (default: 10)"
    )
    p.add_argument("--max-boxes", type=int, default=32, help="most boxes per request (default: 32)")
    p.add_argument(
        "--max-pixels",
        type=float,
        default=64e6,
        metavar="N",
        help="refuse (413) an image of more than N pixels, read from its header before decoding "
        "(default: 64e6)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="answer 503 when a request is not done in S seconds, waiting included (default: 30)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.set_defaults(func=_run_serve)


def _run_info(args: argparse.Namespace) -> int:
    from posereg.checkpoint import describe_checkpoint

    print(describe_checkpoint(args.checkpoint))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print what a checkpoint holds (config, epoch, metrics, sizes)")
    p.add_argument("checkpoint")
    p.set_defaults(func=_run_info)


def _run_convert(args: argparse.Namespace) -> int:
    from posereg.convert import convert_official

    conversion = convert_official(args.src, args.dst, overwrite=args.overwrite)
    c = conversion.config
    print(
        f"{args.dst}: {conversion.variant} -> {c['backbone']}, K={c['num_keypoints']}, D={c['dim']}"
    )
    print(
        f"  {len(conversion.mapping)} tensors mapped, {len(conversion.dropped)} dropped, "
        f"{len(conversion.filled)} filled"
    )
    for note in conversion.notes:
        print(f"  note: {note}")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    import shlex

    from posereg.bench.runner import run_bench

    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    command = shlex.join(["posereg", *sys.argv[1:]]) if sys.argv[1:] else None
    out = run_bench(
        args.profile, args.out, jobs=args.jobs, overrides=args.overrides, dry_run=args.dry_run,
        command=command, report=args.report,
    )  # fmt: skip
    if isinstance(out, list):  # the dry run's plan
        print("\n".join(out))
        return 0
    for o in out.failed:
        print(f"posereg bench: failed: {o.run.run_dir.name}: {o.error}", file=sys.stderr)
    print(out.results_path)
    return 1 if out.failed else 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from posereg.bench.experiments import PROFILES

    p = sub.add_parser(
        "bench",
        help="train and evaluate a named set of experiments (issue 10's claims); results.json + report",
        description="Each experiment is an ordinary `posereg train` run on a generated synthetic "
        "set; finished runs are reused (keyed by their resolved config), interrupted ones resume. "
        "See docs/bench.md.",
    )
    p.add_argument("profile", metavar="PROFILE", help=f"one of: {', '.join(PROFILES)}")
    p.add_argument("--jobs", type=int, default=None, help="runs side by side (default: cores)")
    p.add_argument("--out", default="runs/bench", help="bench folder (default: runs/bench)")
    p.add_argument(
        "--report",
        default=None,
        metavar="MD",
        help="also write this profile's report as a section of MD (e.g. docs/results.md), "
        "its plots and results.json under MD's folder/images/bench/PROFILE/",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs, their cache state and the time estimate",
    )
    _add_set(p)
    p.set_defaults(func=_run_bench)


def _key_values(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} expects KEY=VALUE items, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _run_data_synth(args: argparse.Namespace) -> int:
    from posereg.config import apply_overrides
    from posereg.synth.generate import SynthConfig, generate, generate_3d

    config = SynthConfig.preset(args.preset)
    # every flag becomes a posereg.config override (one parser: posereg.config.parse_override_value)
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
    config = apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])
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
            preset=args.preset,
        )
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
        "--preset",
        default="medium",
        help="easy, medium, hard (one person framed) or multi (2-8 people, 256x256); default medium",
    )
    p.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="image size (default: 256 256)"
    )
    p.add_argument("--people-per-image", metavar="A..B", help="people per image, e.g. 1..3 or 2")
    p.add_argument("--camera", help="random or h36m (real Human3.6M calibrations)")
    p.add_argument(
        "--keypoint-set",
        help="a built-in skeleton: coco17, mpii16, h36m17, crowdpose14, aic14, posetrack17, "
        "halpe26 or humanart21 (default: coco17; docs/synth.md)",
    )
    p.add_argument(
        "--noise", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="label-noise settings, e.g. scale=0.707 (2x COCO's spread; default 0.354, COCO's) "
        "outlier_prob=0.03 swap_prob=0.01 occluded_factor=2 outlier_scale=5; or 'off' for clean labels",
    )  # fmt: skip
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
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

    path = contact_sheet(args.dir, args.split, args.out, args.num_images, args.columns, args.scale)
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
    p.add_argument("--overwrite", action="store_true", help="replace DST when it exists")
    p.set_defaults(func=_run_convert)


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
    """The full argument parser (sub-commands: demo, train, eval, predict, export, serve, info,
    convert, data, bench)."""
    from posereg import __version__

    parser = argparse.ArgumentParser(
        prog="posereg",
        description="Human pose regression with Residual Log-likelihood Estimation (RLE).",
    )
    parser.add_argument("--version", action="version", version=f"posereg {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_serve(sub)
    _add_info(sub)
    _add_lift(sub)
    _add_convert(sub)
    _add_data(sub)
    _add_bench(sub)
    _add_debug_everywhere(sub)
    return parser


_DEBUG_HELP = "show the full traceback of an error instead of one line"


def _add_debug_everywhere(sub: argparse._SubParsersAction) -> None:
    """``--debug`` also after a sub-command (``posereg train CONFIG --debug``)."""
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_everywhere(action)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posereg`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    command = " ".join(c for c in (args.command, getattr(args, "data_command", None)) if c)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        print(f"posereg {command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug or not isinstance(e, _user_errors()):
            raise
        return _error(command, e)


if __name__ == "__main__":
    sys.exit(main())
