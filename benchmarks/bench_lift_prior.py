"""Lifters on poses they never saw: pose classes held out, and the wide 3D pose prior.

    nice -n 5 python benchmarks/bench_lift_prior.py [--seeds 0 1 2] [--train subset mixed wide]
        [--num-test 2000] [--num-train N] [--epochs E] [--json out.json]
    python benchmarks/bench_lift_prior.py --table out.json   # the table of a (partial) run

Issue 19, item 4. The lifter recipe is the configs' (configs/lift_synth_l2.yaml and
configs/lift_synth_rle.yaml: 16000 training pairs, 5 epochs, batch 128, Adam 1e-3 x 0.7 per
epoch, COCO-like 2D noise, real Human3.6M cameras); only the 3D poses of the training pairs
change. Training sets (data seed 0, split ``train``):

- ``subset``: the pose classes standing, walking, running, sitting, arms_raised;
- ``mixed``: half those classes, half the wide prior (posereg.synth.prior);
- ``wide``: the wide prior alone (every joint uniform within its limits, any orientation).

Test sets (data seed 0, split ``val``: other bodies and cameras, same noise): ``seen`` (the five
training classes), ``held-out`` (crouching, reaching, lying: classes no training set draws) and
``wide``. For each training seed, every training set is trained with L2 and with RLE (same
data, epochs, schedule, seed), interleaved so that machine load hits both alike. The raw
numbers (per test set, per class) go to ``--json`` after every run, so a cut-short run still
gives a table (``--table``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from posereg.config import load_lift_config
from posereg.data.lift import LiftSet, synthetic_pairs
from posereg.engine.lift import evaluate_lifter, fit_lifter

ROOT = Path(__file__).resolve().parents[1]
SEEN = ("standing", "walking", "running", "sitting", "arms_raised")
HELD_OUT = ("crouching", "reaching", "lying")
TRAIN_SETS = {  # name -> synthetic_pairs keywords
    "subset": {"prior": "classes", "pose_classes": SEEN},
    "mixed": {"prior": "mixed", "pose_classes": SEEN},
    "wide": {"prior": "wide"},
}
TEST_SETS = {
    "seen": {"prior": "classes", "pose_classes": SEEN},
    "held-out": {"prior": "classes", "pose_classes": HELD_OUT},
    "wide": {"prior": "wide"},
}
LOSSES = ("l2", "rle")


def _ms(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(raw: dict) -> str:
    """Markdown table: rows (training set, loss), columns MPJPE / PA-MPJPE per test set."""
    runs = raw["runs"]
    tests = list(TEST_SETS)
    head = "| trained on | loss | seeds | " + " | ".join(f"{t} MPJPE | {t} PA-MPJPE" for t in tests)
    lines = [head + " |", "| --- " * (3 + 2 * len(tests)) + "|"]
    for train in TRAIN_SETS:
        for loss in LOSSES:
            rows = [r for r in runs if r["train"] == train and r["loss"] == loss]
            if not rows:
                continue
            cells = []
            for t in tests:
                cells.append(_ms([r["test"][t]["MPJPE"] for r in rows]))
                cells.append(_ms([r["test"][t]["PA-MPJPE"] for r in rows]))
            seeds = ",".join(str(r["seed"]) for r in rows)
            lines.append(f"| {train} | {loss} | {seeds} | " + " | ".join(cells) + " |")
    classes = ["| trained on | loss | " + " | ".join(HELD_OUT) + " |"]
    classes.append("| --- " * (2 + len(HELD_OUT)) + "|")
    for train in TRAIN_SETS:
        for loss in LOSSES:
            rows = [r for r in runs if r["train"] == train and r["loss"] == loss]
            if rows:
                per = [_ms([r["held_out_per_class"][c][0] for r in rows]) for c in HELD_OUT]
                classes.append(f"| {train} | {loss} | " + " | ".join(per) + " |")
    return "\n".join(lines) + "\n\nHeld-out MPJPE (mm) per class:\n\n" + "\n".join(classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train", nargs="+", default=list(TRAIN_SETS), choices=list(TRAIN_SETS))
    ap.add_argument("--num-test", type=int, default=2000, help="pairs per test set")
    ap.add_argument("--num-train", type=int, help="training pairs (default: the configs')")
    ap.add_argument("--epochs", type=int, help="epochs (default: the configs')")
    ap.add_argument("--json", help="write the raw numbers here (after every run)")
    ap.add_argument("--table", help="only print the table of this --json file")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    configs = {
        loss: load_lift_config(ROOT / "configs" / f"lift_synth_{loss}.yaml") for loss in LOSSES
    }
    for loss, cfg in configs.items():  # the same budget for both losses
        data = replace(cfg.data, num_train=args.num_train or cfg.data.num_train)
        train_cfg = replace(cfg.train, epochs=args.epochs or cfg.train.epochs)
        configs[loss] = replace(cfg, data=data, train=train_cfg)
    base = configs["l2"].data
    kw = {"noise": base.noise, "input_skeleton": base.input_skeleton}
    torch.set_num_threads(configs["l2"].train.threads or 1)
    t_all = time.perf_counter()
    tests: dict[str, LiftSet] = {
        name: synthetic_pairs(args.num_test, base.seed, "val", **kw, **t)
        for name, t in TEST_SETS.items()
    }
    raw: dict = {"args": vars(args), "runs": []}
    for seed in args.seeds:
        for train in args.train:
            train_set = synthetic_pairs(
                base.num_train, base.seed, "train", **kw, **TRAIN_SETS[train]
            )
            for loss in LOSSES:
                cfg = configs[loss]
                cfg = replace(cfg, train=replace(cfg.train, seed=seed))
                model, r = fit_lifter(cfg, train_set, tests["seen"])
                row = {"seed": seed, "train": train, "loss": loss, "seconds": r.train_seconds}
                row["test"] = {}
                for name, pairs in tests.items():
                    m = evaluate_lifter(model, pairs)
                    row["test"][name] = {"MPJPE": m.mpjpe, "PA-MPJPE": m.pa_mpjpe}
                    if name == "held-out":
                        row["held_out_per_class"] = m.per_action
                raw["runs"].append(row)
                print(f"# {json.dumps(row)}", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(raw, indent=1))
    print(
        f"\nrecipe: configs/lift_synth_{{l2,rle}}.yaml ({base.num_train} train pairs, "
        f"{configs['l2'].train.epochs} epochs, noise {base.noise}); {args.num_test} pairs per "
        f"test set; seeds {args.seeds}; total {time.perf_counter() - t_all:.0f} s\n"
    )
    print(table(raw))


if __name__ == "__main__":
    main()
