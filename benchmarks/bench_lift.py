"""L2 vs RLE lifters (Martinez FC baseline) on synthetic held-out pairs at an equal budget.

    python benchmarks/bench_lift.py [--seeds 0 1 2] [--noise coco heavy] [--num-train 16000]
        [--num-val 4000] [--epochs 5] [--batch-size 128] [--lr-decay 0.7] [--threads 1]
        [--json out.json]

Issue 11 ("Measured acceptance"). For each 2D-noise setting (posereg.data.lift.NOISE_SETTINGS)
one training set and one held-out set are drawn (data seed 0, splits ``train`` / ``val``: other
bodies and cameras); then for each training seed the L2 lifter and the RLE lifter (official
3D convention, Laplace Q, RealNVP 6 x 64) are trained with the same data, epochs, batch size,
learning-rate schedule and seed (initialisation, order, dropout), interleaved (l2, rle per
seed) so that machine load hits both alike. Reported per noise setting: MPJPE and PA-MPJPE
mean +- std over seeds, the per-seed ratio RLE / L2 of MPJPE (mean +- std, min..max) and the
training seconds of each. The paper's ratio on Human3.6M is 40.9 / 43.6 = 0.94.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from posereg.config import LiftConfig, LiftDataConfig, LiftModelConfig, LiftTrainConfig
from posereg.data.lift import synthetic_pairs
from posereg.engine.lift import fit_lifter


def _ms(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise", nargs="+", default=["coco", "heavy"])
    ap.add_argument("--num-train", type=int, default=16000)
    ap.add_argument("--num-val", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-decay", type=float, default=0.7)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}
    for noise in args.noise:
        train = synthetic_pairs(args.num_train, 0, "train", noise=noise)
        val = synthetic_pairs(args.num_val, 0, "val", noise=noise)
        raw[noise] = {"l2": [], "rle": []}
        for seed in args.seeds:
            for loss in ("l2", "rle"):
                cfg = LiftConfig(
                    data=LiftDataConfig(noise=noise),
                    model=LiftModelConfig(hidden=args.hidden, loss=loss),
                    train=LiftTrainConfig(
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        lr_decay=args.lr_decay, seed=seed, threads=args.threads,
                    ),
                )  # fmt: skip
                _, r = fit_lifter(cfg, train, val)
                row = {"seed": seed, "MPJPE": r.metrics.mpjpe, "PA-MPJPE": r.metrics.pa_mpjpe,
                       "seconds": r.train_seconds}  # fmt: skip
                raw[noise][loss].append(row)
                print(f"# {noise} {loss} seed {seed}: {json.dumps(row)}", flush=True)
    print(
        f"\n{args.num_train} train / {args.num_val} held-out pairs, {args.epochs} epochs, batch "
        f"{args.batch_size}, Adam lr {args.lr:g} x {args.lr_decay:g} per epoch, hidden "
        f"{args.hidden}, {args.threads} thread(s), seeds {args.seeds}; total "
        f"{time.perf_counter() - t_all:.0f} s\n"
    )
    print(
        "| 2D noise | loss | MPJPE (mm) | PA-MPJPE (mm) | train s / run | RLE/L2 MPJPE (min..max) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for noise, runs in raw.items():
        ratios = [b["MPJPE"] / a["MPJPE"] for a, b in zip(runs["l2"], runs["rle"], strict=True)]
        for loss in ("l2", "rle"):
            rows = runs[loss]
            ratio = ""
            if loss == "rle":
                spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
                ratio = (
                    f"{statistics.mean(ratios):.3f} ± {spread:.3f} "
                    f"({min(ratios):.3f}..{max(ratios):.3f})"
                )
            print(
                f"| {noise} | {loss} | {_ms([r['MPJPE'] for r in rows])} | "
                f"{_ms([r['PA-MPJPE'] for r in rows])} | {statistics.mean(r['seconds'] for r in rows):.0f} | {ratio} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": raw}, f, indent=1)


if __name__ == "__main__":
    main()
