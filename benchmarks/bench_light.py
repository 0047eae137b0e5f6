"""Cost of the light backbones with the regression (RLE) head: parameters, FLOPs and batch-1
per-crop latency in ONNX Runtime (and PyTorch eager), against ResNet-18 (issue 18 §1, a first
check of the <= 5 ms goal; the full deploy benchmark is issue 18 §4).

    OMP_NUM_THREADS=1 python benchmarks/bench_light.py [--size 256 192] [--threads 1]
        [--rounds 7] [--iters 10] [--cpu-time] [--backbones NAME ...] [--json out.json]

Every model is ``create_pose_model(backbone, head="regression")`` at the input size, random
weights (latency does not depend on them), exported with posereg.export (backbone + head +
decode; no flow) and run by ONNX Runtime's CPU provider with ``--threads`` intra-op threads, one
crop per call. The timings are interleaved (every model once per round) and the median over the
rounds is reported (posereg.bench.cost); ``--cpu-time`` times with the process's CPU time
instead of the wall clock, which a shared machine's load does not inflate (at one thread it is
the latency the crop would have on an idle core). FLOPs count 2 per multiply-add.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from posereg.bench.cost import _onnx_runner, gflops, interleaved_times, medians
from posereg.models import create_pose_model
from posereg.models.backbones import LIGHT_BACKBONES

TARGET_MS = 5.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=[*LIGHT_BACKBONES, "resnet18"])
    p.add_argument("--size", type=int, nargs=2, default=[256, 192], metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--cpu-time", action="store_true", help="process CPU time, not wall time")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    h, w = args.size
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(1, 3, h, w)
    info, runners = {}, {}
    with tempfile.TemporaryDirectory(prefix="posereg_light_") as tmp:
        for name in args.backbones:
            model = create_pose_model(name, num_keypoints=17, input_size=(h, w)).eval()
            params = sum(p.numel() for k, p in model.named_parameters() if "criterion" not in k)
            info[name] = (params / 1e6, gflops(model, images))

            def eager(model: torch.nn.Module = model) -> None:
                with torch.no_grad():
                    model.predict(images)

            runners[(name, "onnx")] = _onnx_runner(
                model, Path(tmp) / f"{name.replace(':', '_')}.onnx", images, args.threads
            )
            runners[(name, "eager")] = eager
        clock = time.process_time if args.cpu_time else time.perf_counter
        med = medians(interleaved_times(runners, args.rounds, args.iters, clock=clock))

    rows = [
        {
            "backbone": name, "params_m": info[name][0], "gflops": info[name][1],
            "onnx_ms": med[(name, "onnx")] * 1e3, "eager_ms": med[(name, "eager")] * 1e3,
        }
        for name in args.backbones
    ]  # fmt: skip
    clock_name = "process CPU time" if args.cpu_time else "wall time"
    print(
        f"regression head, input {h}x{w}, batch 1, {args.threads} thread(s), {clock_name}, "
        f"median of {args.rounds} rounds x {args.iters} calls"
    )
    print("| backbone | params (M) | GFLOPs | ONNX Runtime ms | eager ms | <= 5 ms |")
    print("|---|---:|---:|---:|---:|:---:|")
    for r in rows:
        ok = "yes" if r["onnx_ms"] <= TARGET_MS else "no"
        print(
            f"| {r['backbone']} | {r['params_m']:.2f} | {r['gflops']:.3f} | {r['onnx_ms']:.2f} "
            f"| {r['eager_ms']:.2f} | {ok} |"
        )
    meets = [r for r in rows if r["onnx_ms"] <= TARGET_MS]
    if meets:
        best = min(meets, key=lambda r: r["params_m"])
        print(f"smallest that meets <= {TARGET_MS:g} ms: {best['backbone']}")
    else:
        print(f"none meets <= {TARGET_MS:g} ms")
    if args.json:
        args.json.write_text(json.dumps({"input_size": [h, w], "threads": args.threads,
                                         "clock": clock_name, "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
