"""Inference cost of the heads (paper Tab. 2a, 6): parameters, FLOPs, CPU latency at batch 1.

    python benchmarks/bench_heads.py [--backbones resnet50 resnet18] [--size 256 192]
                                     [--threads 1] [--rounds 7] [--iters 5] [--onnx]

For each backbone, the regression (RLE), heatmap (SimpleBaseline) and integral models are built
at the given input size and timed on one crop through ``TopDownModel.predict`` (PyTorch eager,
decoding included, no flip test), interleaved round by round so the ratios come from one run on
the same machine state; the median of the rounds is reported. FLOPs come from
``torch.utils.flop_counter`` (one multiply-add = 2 FLOPs, the convention of fvcore's GFLOPs x 2;
the paper's 4.0 / 9.7 GFLOPs count multiply-adds, so compare ``GMACs``). With ``--onnx`` the
regression and heatmap models are also exported (posereg.export) and timed in ONNX Runtime
with the same thread count. Prints a Markdown table and the ratios the heads issue asks for:
regression / heatmap latency per backbone, and ONNX Runtime / eager for the regression model.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from posereg.models import create_pose_model

HEADS = ("regression", "heatmap", "integral")


def gflops(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Forward FLOPs (2 per multiply-add) of ``model.predict`` on ``images``, in billions."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.predict(images)
    return counter.get_total_flops() / 1e9


def time_once(fn, iters: int) -> float:
    """Seconds per call, averaged over ``iters`` calls."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def measure(
    backbones: tuple[str, ...] | list[str] = ("resnet50", "resnet18"),
    size: tuple[int, int] = (256, 192),
    threads: int = 1,
    rounds: int = 7,
    iters: int = 5,
    onnx: bool = False,
) -> dict:
    """Parameters, GFLOPs and median batch-1 latency of every backbone x head, as a dict.

    Returns:
        ``{"input_size": [h, w], "threads", "rounds", "rows": [{"backbone", "head", "params_m",
        "gflops", "eager_ms", "onnx_ms" (None unless timed)}]}``: ``results["cost"]["heads"]``
        of ``posereg bench`` (docs/bench.md).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    h, w = size
    images = torch.randn(1, 3, h, w)

    runners: dict[tuple[str, str, str], object] = {}
    info: dict[tuple[str, str], tuple[float, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="posereg_bench_heads_"))
    for backbone in backbones:
        for head in HEADS:
            model = create_pose_model(backbone, head=head, input_size=(h, w)).eval()
            params = sum(
                p.numel() for name, p in model.named_parameters() if "criterion" not in name
            )
            info[(backbone, head)] = (params / 1e6, gflops(model, images))

            def eager(model=model) -> None:
                with torch.no_grad():
                    model.predict(images)

            runners[(backbone, "eager", head)] = eager
            if onnx and head in ("regression", "heatmap"):
                import onnxruntime as ort

                from posereg.export import export_onnx

                path = export_onnx(model, tmp / f"{backbone}_{head}.onnx", (h, w))
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
                session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                feed = {session.get_inputs()[0].name: images.numpy()}

                def run_onnx(session=session, feed=feed) -> None:
                    session.run(None, feed)

                runners[(backbone, "onnx", head)] = run_onnx
    for fn in runners.values():  # warm-up
        fn()  # type: ignore[operator]
    times: dict[tuple, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):  # interleaved: every variant once per round
        for key, fn in runners.items():
            times[key].append(time_once(fn, iters))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    rows = []
    for backbone in backbones:
        for head in HEADS:
            params, gf = info[(backbone, head)]
            rows.append(
                {
                    "backbone": backbone,
                    "head": head,
                    "params_m": params,
                    "gflops": gf,
                    "eager_ms": med[(backbone, "eager", head)],
                    "onnx_ms": med.get((backbone, "onnx", head)),
                }
            )
    return {"input_size": [h, w], "threads": threads, "rounds": rounds, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["resnet50", "resnet18"])
    p.add_argument("--size", type=int, nargs=2, default=[256, 192], metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--onnx", action="store_true", help="also time ONNX Runtime")
    args = p.parse_args()
    h, w = args.size
    cost = measure(args.backbones, (h, w), args.threads, args.rounds, args.iters, args.onnx)
    by = {(r["backbone"], r["head"]): r for r in cost["rows"]}

    print(f"input {h}x{w}, batch 1, {args.threads} thread(s), median of {args.rounds} rounds")
    print("| backbone | head | params (M) | GFLOPs | GMACs | eager ms | ONNX Runtime ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in cost["rows"]:
        onnx_s = f"{r['onnx_ms']:.1f}" if r["onnx_ms"] is not None else "-"
        print(
            f"| {r['backbone']} | {r['head']} | {r['params_m']:.2f} | {r['gflops']:.2f} "
            f"| {r['gflops'] / 2:.2f} | {r['eager_ms']:.1f} | {onnx_s} |"
        )
    for backbone in args.backbones:
        reg, hm = by[(backbone, "regression")], by[(backbone, "heatmap")]
        ratio = reg["eager_ms"] / hm["eager_ms"]
        flops = reg["gflops"] / hm["gflops"]
        print(
            f"{backbone}: regression / heatmap latency {ratio:.3f} (target <= 0.45), FLOPs {flops:.3f}"
        )
        if reg["onnx_ms"] is not None:
            r = reg["onnx_ms"] / reg["eager_ms"]
            print(f"{backbone}: regression ONNX Runtime / eager {r:.3f} (target <= 0.8)")


if __name__ == "__main__":
    main()
