"""Training-step throughput on this machine: float32 vs bf16 autocast, contiguous vs channels_last.

    python benchmarks/bench_train.py [--backbone resnet18 --width 0.5 --size 64 48 --batch 64]

Measures optimizer steps of the full RLE model (backbone + head + flow loss) on random
inputs, all variants in one run so their ratios are comparable. It decides the engine's CPU
defaults (``train.amp``, ``train.channels_last``): keep what is faster here.
"""

from __future__ import annotations

import argparse
import time

import torch

from posereg.models import create_pose_model


def steps_per_second(
    model, images, target, weight, amp: bool, channels_last: bool, steps: int
) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(images)
        loss = model.criterion(out.mu.float(), out.sigma.float(), target, weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--size", type=int, nargs=2, default=[64, 48])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = args.size
    images = torch.randn(args.batch, 3, h, w)
    target = 0.1 * torch.randn(args.batch, 17, 2)
    weight = torch.ones(args.batch, 17, 1)
    print(f"{args.backbone} x{args.width} at {h}x{w}, batch {args.batch}, {args.threads} threads")
    base = None
    for amp, cl in ((False, False), (True, False), (False, True), (True, True)):
        model = create_pose_model(args.backbone, width=args.width)
        rate = steps_per_second(model, images, target, weight, amp, cl, args.steps) * args.batch
        base = base or rate
        name = f"{'bf16 autocast' if amp else 'float32'}{' + channels_last' if cl else ''}"
        print(f"  {name:<30} {rate:8.1f} img/s  ({rate / base:.2f}x)")


if __name__ == "__main__":
    main()
