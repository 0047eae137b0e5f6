"""Single-stage 3D: RLE regression vs the volumetric integral head at an equal budget.

    nice -n 10 python benchmarks/bench_single_stage_3d.py [--epochs 2] [--batch 32]
        [--seeds 0 1] [--num-train 4000] [--num-val 300] [--parallel 2] [--out runs/bench_s3d]

Both configs (configs/synth3d_rle.yaml, configs/synth3d_integral.yaml: the same synthetic renders,
backbone, input, schedule; only the head differs) are trained with ``posereg train`` for the same
number of epochs (whole epochs, so the cosine schedule runs to its end: same steps), batch and
seed, one thread each, evaluated once at the end, ``--parallel`` runs side by side (the long
integral runs start first). The synthetic set is generated once, before the runs. Reported per
head: validation MPJPE and PA-MPJPE (mm, root-relative, Sun et al.'s protocol:
docs/lifting.md), inference parameters (the flow excluded) and FLOPs of ``TopDownModel.predict``
on one crop (posereg.bench.cost.gflops), seconds in the training loop per run
(steps x batch / images per second) and wall seconds per run, as a Markdown table, mean ± std
over seeds, then the per-seed RLE / integral MPJPE ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from posereg.bench.cost import gflops  # the one FLOPs counter
from posereg.config import apply_overrides, load_config
from posereg.engine.synthdata import ensure_synthetic_dataset
from posereg.models.build import build_model

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "integral": ROOT / "configs/synth3d_integral.yaml",
    "rle": ROOT / "configs/synth3d_rle.yaml",
}


def overrides(args: argparse.Namespace, seed: int | None = None) -> list[str]:
    data = Path(args.data).resolve()
    out = [
        f"data.synth.root={data}",
        f"data.synth.num_train={args.num_train}",
        f"data.synth.num_val={args.num_val}",
        f"data.train_ann={data}/annotations/person_keypoints_train.json",
        f"data.train_images={data}/images/train",
        f"data.val_ann={data}/annotations/person_keypoints_val.json",
        f"data.val_images={data}/images/val",
        "train.max_steps=null",
        f"train.epochs={args.epochs}",
        f"train.eval_every={args.epochs}",
        f"train.batch_size={args.batch}",
        "train.threads=1",
        "train.progress=false",
        f"out_dir={Path(args.out).resolve()}",
    ]
    if seed is not None:
        out.append(f"train.seed={seed}")
    return out


def inference_cost(head: str, args: argparse.Namespace) -> tuple[float, float]:
    """(parameters in millions without the training-only flow, GFLOPs of predict on one crop)."""
    cfg = apply_overrides(load_config(CONFIGS[head]), overrides(args))
    model = build_model(cfg).eval()
    flow = sum(p.numel() for p in model.criterion.parameters()) if model.criterion else 0
    params = (sum(p.numel() for p in model.parameters()) - flow) / 1e6
    h, w = cfg.data.input_size
    return params, gflops(model, torch.randn(1, 3, h, w))


def train_one(head: str, seed: int, args: argparse.Namespace) -> dict:
    name = f"{head}_s{seed}"
    cmd = [
        str(Path(sys.executable).parent / "posereg"), "train", str(CONFIGS[head]), "--exist-ok",
        "--set", *overrides(args, seed), f"name={name}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    log = Path(args.out) / f"{name}.log"
    with log.open("w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{name} failed (exit {rc}); see {log}")
    metrics = json.loads((Path(args.out) / name / "metrics.json").read_text())
    val = metrics["val"]
    train_s = metrics["steps"] * args.batch / metrics["images_per_second"]
    print(f"{name}: MPJPE {val['MPJPE']:.1f} PA-MPJPE {val['PA-MPJPE']:.1f} "
          f"train {train_s:.0f} s wall {wall:.0f} s", flush=True)  # fmt: skip
    return {"head": head, "seed": seed, "mpjpe": val["MPJPE"], "pa": val["PA-MPJPE"],
            "train_s": train_s, "wall_s": wall, "steps": metrics["steps"]}  # fmt: skip


def mean_std(values: list[float], digits: int = 1) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-val", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--data", default="data/synth3d_bench")
    parser.add_argument("--out", default="runs/bench_s3d")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = apply_overrides(load_config(CONFIGS["rle"]), overrides(args))
    assert cfg.data.synth is not None
    ensure_synthetic_dataset(cfg.data.synth)
    print(f"data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    cost = {head: inference_cost(head, args) for head in CONFIGS}
    jobs = [(head, seed) for seed in args.seeds for head in CONFIGS]  # integral first per seed
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda job: train_one(*job, args), jobs))

    steps = sorted({r["steps"] for r in results})
    print(f"\n{len(args.seeds)} seeds x {args.epochs} epochs ({steps} steps) x batch {args.batch}, "
          f"{args.num_train} train / {args.num_val} val images, {args.parallel} runs side by side, "
          f"{time.perf_counter() - t0:.0f} s in all\n")  # fmt: skip
    print(
        "| head | params (M) | GFLOPs | MPJPE (mm) | PA-MPJPE (mm) | train s / run | wall s / run |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for head in ("rle", "integral"):
        rows = [r for r in results if r["head"] == head]
        params, flops = cost[head]
        print(
            f"| {Path(CONFIGS[head]).stem} | {params:.2f} | {flops:.3f} | "
            f"{mean_std([r['mpjpe'] for r in rows])} | {mean_std([r['pa'] for r in rows])} | "
            f"{mean_std([r['train_s'] for r in rows], 0)} | {mean_std([r['wall_s'] for r in rows], 0)} |"
        )
    by = {(r["head"], r["seed"]): r for r in results}
    ratios = [by["rle", s]["mpjpe"] / by["integral", s]["mpjpe"] for s in args.seeds]
    print(f"\nMPJPE RLE / integral per seed: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"FLOPs RLE / integral: {cost['rle'][1] / cost['integral'][1]:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
