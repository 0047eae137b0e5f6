"""Inference cost of the heads (paper Tab. 2a, 6): parameters, FLOPs, CPU latency at batch 1.

    python benchmarks/bench_heads.py [--backbones resnet50 resnet18] [--size 256 192]
                                     [--threads 1] [--rounds 7] [--iters 5] [--onnx]

The measurement is ``posereg.bench.cost.head_costs`` (also item 6 of ``posereg bench cost``):
for each backbone, the regression (RLE), heatmap (SimpleBaseline) and integral models at the
given input size, timed on one crop through ``TopDownModel.predict``, interleaved round by round,
median of the rounds; FLOPs count 2 per multiply-add (compare ``GMACs`` with the paper). With
``--onnx`` the regression and heatmap models are also timed in ONNX Runtime. Prints a Markdown
table and the ratios the heads issue asks for: regression / heatmap latency per backbone, and
ONNX Runtime / eager for the regression model.
"""

from __future__ import annotations

import argparse

import torch

from posereg.bench.cost import CostSpec, head_costs


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
    torch.set_num_threads(args.threads)
    spec = CostSpec(tuple(args.backbones), (h, w), args.threads, args.rounds, args.iters, args.onnx)
    cost = head_costs(spec)
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
