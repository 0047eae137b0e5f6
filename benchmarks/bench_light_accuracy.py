"""Accuracy of the smallest light model against a full-width ResNet-18 trained with the same
budget, data and input size (issue 18 §4: the smallest shipped model's error within 10% of the
full-width ResNet-18's).

Arms, each trained by a real ``posereg train`` subprocess on the main job's recipe
(``configs/synth_rle.yaml``: synthetic ``easy`` set, 64x48 input, RLE, Adam + cosine, 22 epochs
of 8000 images, batch 64), with ``train.threads=1`` and ``data.workers=0``, on ONE synthetic set
generated once under ``--root`` (``data.synth``; the runs reuse it):

- ``shufflenet_v2_x0_5``: ``configs/synth_light.yaml`` (the smallest shipped light model);
- ``mobilenet_v3_small``: the same config with ``model.backbone=mobilenet_v3_small``;
- ``resnet18_w0.5``: ``configs/synth_rle.yaml`` (the main job's half-width ResNet-18);
- ``resnet18_w1.0``: ``configs/synth_rle.yaml`` with ``model.width=1.0`` (the reference).

Each finished run is evaluated by the bench's evaluation
(:func:`posereg.bench.evaluation.evaluate_run`, flip test as in the config): AP against the
clean truth and against the noisy labels, mean keypoint error / sqrt(area) and, from the same
predictions, the mean keypoint error in input-image pixels (visible keypoints, clean truth).

    OMP_NUM_THREADS=1 python benchmarks/bench_light_accuracy.py --root /tmp/i18acc \\
        [--epochs N] [--seeds 0 1] [--jobs 4] [--json out.json]

``--epochs`` shortens the budget for every arm alike (default: the config's 22). ``--jobs`` arms
train side by side (each on one thread). It prints a markdown table and the JSON (also written
to ``--json``); the error ratio is each arm's error over the full-width ResNet-18's (same seed,
then averaged over seeds), and the goal holds when the smallest model's ratio is <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOAL_RATIO = 1.10
SMALLEST = "shufflenet_v2_x0_5"
REFERENCE = "resnet18_w1.0"


@dataclass(frozen=True)
class Arm:
    """One model of the comparison: a shipped config and its overrides."""

    name: str
    config: str  # relative to the repository
    overrides: tuple[str, ...] = ()


ARMS = (
    Arm(SMALLEST, "configs/synth_light.yaml"),
    Arm("mobilenet_v3_small", "configs/synth_light.yaml", ("model.backbone=mobilenet_v3_small",)),
    # the light models at <= 5 ms per 256x192 crop in ONNX Runtime (docs/deploy.md) that are
    # larger than the smallest: candidates if the smallest misses the accuracy goal
    *(
        Arm(name, "configs/synth_light.yaml", (f"model.backbone={name}",))
        for name in ("shufflenet_v2_x1_0", "mobilenet_v2", "mobilenet_v3_large")
    ),
    Arm("resnet18_w0.5", "configs/synth_rle.yaml"),
    Arm(REFERENCE, "configs/synth_rle.yaml", ("model.width=1.0",)),
)


def _cli() -> list[str]:
    return [sys.executable, "-c", "import sys; from posereg.cli import main; sys.exit(main())"]


def _env() -> dict[str, str]:
    src = str(REPO / "src")
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{src}:{path}" if path else src}


def train_arm(arm: Arm, seed: int, root: Path, epochs: int | None) -> dict[str, Any]:
    """Train one arm by ``posereg train`` in ``root``; returns the run folder and wall time."""
    name = f"acc_{arm.name}_s{seed}"
    sets = [
        *arm.overrides,
        f"name={name}",
        "out_dir=runs",
        "train.threads=1",
        "data.workers=0",
        f"train.seed={seed}",
    ]
    if epochs is not None:
        sets.append(f"train.epochs={epochs}")
    cmd = [*_cli(), "train", str(REPO / arm.config), "--exist-ok", "--set", *sets]
    log = root / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(
            cmd, cwd=root, env=_env(), stdout=f, stderr=subprocess.STDOUT
        ).returncode
    if rc != 0:
        raise SystemExit(f"{arm.name} seed {seed}: posereg train failed (exit {rc}); see {log}")
    return {"run_dir": str(root / "runs" / name), "train_wall_s": time.time() - start}


def evaluate_arm(run_dir: Path) -> dict[str, float]:
    """The run's metrics: AP (clean truth, labels), error / sqrt(area) and error in px."""
    from posereg.bench.evaluation import evaluate_run

    metrics = evaluate_run(run_dir)
    return {
        "ap_clean": metrics.ap_clean,
        "ap_labels": metrics.ap_noisy,
        "err_sqrt_area": metrics.err_sqrt_area,
        "err_px": pixel_error(run_dir / "predictions.npz"),
    }


def pixel_error(npz_path: Path) -> float:
    """Mean Euclidean error, in image pixels, of the visible keypoints of a bench
    ``predictions.npz`` (``keypoints`` and ``truth_clean`` (N, K, 2), ``visible`` (N, K))."""
    arrays = np.load(npz_path)
    err = np.linalg.norm(arrays["keypoints"] - arrays["truth_clean"], axis=-1)  # (N, K)
    return float(err[arrays["visible"]].mean())


def summarize(results: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per-arm means over seeds and the error ratio to the full-width ResNet-18.

    Arguments:
        results: ``{arm: {seed: {"ap_clean", "ap_labels", "err_sqrt_area", "err_px", ...}}}``;
            the reference arm :data:`REFERENCE` must hold every seed the other arms hold.

    Returns:
        ``{"arms": {arm: {metric: mean, "ratio_err_px", "ratio_err_sqrt_area", "seeds"}},
        "goal": {"smallest", "reference", "ratio", "target", "holds"}}``; a ratio is the
        arm's error over the reference's, seed by seed, then averaged.
    """
    if REFERENCE not in results:
        raise ValueError(f"no {REFERENCE} arm: the ratios need it")
    ref = results[REFERENCE]
    arms: dict[str, Any] = {}
    for arm, by_seed in results.items():
        seeds = sorted(by_seed)
        missing = [s for s in seeds if s not in ref]
        if missing:
            raise ValueError(f"{arm}: seeds {missing} have no {REFERENCE} run")
        row: dict[str, Any] = {"seeds": seeds}
        for key in ("ap_clean", "ap_labels", "err_sqrt_area", "err_px"):
            row[key] = statistics.fmean(by_seed[s][key] for s in seeds)
        for key in ("err_px", "err_sqrt_area"):
            row[f"ratio_{key}"] = statistics.fmean(by_seed[s][key] / ref[s][key] for s in seeds)
        for key in ("params_m", "train_wall_s"):
            if all(key in by_seed[s] for s in seeds):
                row[key] = statistics.fmean(by_seed[s][key] for s in seeds)
        arms[arm] = row
    goal: dict[str, Any] = {"smallest": SMALLEST, "reference": REFERENCE, "target": GOAL_RATIO}
    if SMALLEST in arms:
        ratio = arms[SMALLEST]["ratio_err_px"]
        goal.update(ratio=ratio, holds=bool(ratio <= GOAL_RATIO))
    return {"arms": arms, "goal": goal}


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a markdown table, one row per arm, and the goal's verdict."""
    lines = [
        "| model | params (M) | seeds | AP clean truth | AP labels | error (px) | error / sqrt(area) "
        "| error / full ResNet-18 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm, r in summary["arms"].items():
        params = f"{r['params_m']:.2f}" if "params_m" in r else "-"
        lines.append(
            f"| {arm} | {params} | {len(r['seeds'])} | {r['ap_clean']:.3f} | {r['ap_labels']:.3f} "
            f"| {r['err_px']:.2f} | {r['err_sqrt_area']:.4f} | {r['ratio_err_px']:.2f}x |"
        )
    goal = summary["goal"]
    if "ratio" in goal:
        verdict = "holds" if goal["holds"] else "does not hold"
        lines.append("")
        lines.append(
            f"Goal (error of {goal['smallest']} <= {goal['target']:.2f}x {goal['reference']}'s): "
            f"{goal['ratio']:.2f}x, {verdict}."
        )
    return "\n".join(lines)


def _param_count(run_dir: Path) -> float:
    from posereg.bench.evaluation import checkpoint_of
    from posereg.models.build import model_from_checkpoint

    model, _, _ = model_from_checkpoint(checkpoint_of(run_dir))
    return sum(p.numel() for k, p in model.named_parameters() if "criterion" not in k) / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="working folder (data and runs)")
    p.add_argument("--epochs", type=int, help="train.epochs for every arm (default: config's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--jobs", type=int, default=4, help="arms trained side by side")
    p.add_argument("--arms", nargs="+", default=[a.name for a in ARMS])
    p.add_argument("--eval-only", action="store_true", help="evaluate the finished runs only")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    root = args.root.resolve()
    json_path = args.json.resolve() if args.json is not None else None
    root.mkdir(parents=True, exist_ok=True)
    arms = [a for a in ARMS if a.name in args.arms]
    load = os.getloadavg()

    # one synthetic set for every arm: generated here once, reused by each run
    from posereg.config import load_config
    from posereg.engine.synthdata import ensure_synthetic_dataset

    cfg = load_config(str(REPO / "configs/synth_rle.yaml"), [])
    # the configs' data paths are relative: generation, training and evaluation run in root
    os.chdir(root)
    ensure_synthetic_dataset(cfg.data.synth)

    jobs = [(arm, seed) for seed in args.seeds for arm in arms]
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    if args.eval_only:
        for arm, seed in jobs:
            runs[(arm.name, seed)] = {"run_dir": str(root / "runs" / f"acc_{arm.name}_s{seed}")}
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {
                (arm.name, seed): pool.submit(train_arm, arm, seed, root, args.epochs)
                for arm, seed in jobs
            }
            for key, fut in futures.items():
                runs[key] = fut.result()
                print(f"trained {key[0]} seed {key[1]} in {runs[key]['train_wall_s']:.0f} s")

    results: dict[str, dict[int, dict[str, Any]]] = {}
    for (name, seed), run in runs.items():
        run_dir = Path(run["run_dir"])
        row = {**run, **evaluate_arm(run_dir), "params_m": _param_count(run_dir)}
        results.setdefault(name, {})[seed] = row
    summary = summarize(results)
    summary["setup"] = {
        "epochs": args.epochs if args.epochs is not None else cfg.train.epochs,
        "config_epochs": cfg.train.epochs,
        "num_train": cfg.data.synth.num_train,
        "num_val": cfg.data.synth.num_val,
        "input_size": list(cfg.data.input_size),
        "seeds": args.seeds,
        "loadavg_start": [round(x, 2) for x in load],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "per_seed": {a: {str(s): r for s, r in by.items()} for a, by in results.items()},
    }
    print(markdown_table(summary))
    text = json.dumps(summary, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


if __name__ == "__main__":
    main()
