"""Issue 17 section 5: the three multi-person pipelines and their loss / head baselines, measured
on ONE synthetic ``multi`` set against its clean truth.

    OMP_NUM_THREADS=1 python benchmarks/bench_multiperson.py --root /tmp/i17bench \\
        [--num-train 1000] [--num-val 200] [--steps 1000] [--batch-size 4] [--seeds 0 1 2] \\
        [--jobs 2] [--json out.json]
    OMP_NUM_THREADS=1 python benchmarks/bench_multiperson.py --root /tmp/i17smoke --smoke

Arms, each trained for the same budget (``--steps`` optimizer steps of ``--batch-size``
samples), one thread each (``train.threads=1``, ``data.workers=0``), per seed, on the train split
of one ``multi`` set (``data/synth_multi`` under ``--root``, generated once, train seed 0):

- ``dense_rle`` / ``dense_l1`` / ``dense_oks``: ``configs/synth_dense_rle.yaml`` with
  ``model.keypoint_loss`` rle / l1 / oks (paper Tab. 2d);
- ``kprcnn_rle`` / ``kprcnn_heatmap``: ``configs/synth_kprcnn_rle.yaml`` /
  ``configs/synth_kprcnn_heatmap.yaml`` (paper Tab. 2c);
- ``topdown``: the top-down pipeline, two trainings with the same budget each: posereg's person
  detector (:mod:`posereg.engine.detector`, ``fasterrcnn_resnet18_fpn_w0.5``, on the same
  augmented train images; it has no ``posereg train`` config, so this script trains it in a
  subprocess of itself) and the top-down RLE model (``configs/synth_rle.yaml`` on the person crops
  of the same train json at a 128 x 96 input, which suits the 90-180 px people of the 256 x 256
  images; a sample of its batch is one person crop, not an image).

Every pose model is an ordinary ``posereg train`` subprocess with ``--set`` overrides (logs in
``--root/logs``); a run whose ``metrics.json`` exists is reused, so the script resumes where it
stopped. Each run's last checkpoint (``last.pt``: no model selection on the reported set) is then
evaluated here, the same way for the three pipelines: every validation image through the
pipeline's inference (``Predictor``; top-down: the detector's boxes at score >= 0.05, then the
top-down ``Predictor``), no flip test anywhere, COCO keypoint AP (pycocotools) against the clean
truth (``keypoints_clean``) and the labels. Reported:

- AP per arm (mean and per seed), and the RLE-minus-baseline AP deltas per seed for dense
  (rle - l1, rle - oks) and Keypoint R-CNN (rle - heatmap);
- the people found (a prediction matched to the unmatched true person of highest box IoU >=
  0.5, best-scored prediction first) and their keypoint error against the clean truth in person
  units (||mu - x|| / sqrt(area), labelled keypoints), with the same RLE-minus-baseline deltas:
  a measure of the keypoints that does not need them to be good enough for OKS (AP near 0
  early in training);
- the coverage of the 90 % predictive regions (``PoseResult.region`` at ``region_p`` 0.9) of the
  arms that learn a density (dense RLE is the issue's; Keypoint R-CNN RLE and top-down too): the
  share of the found people's labelled (v > 0) and visible (v = 2) clean-truth keypoints
  inside their ellipse;
- CPU latency per image (one thread, batch 1, median over rounds) of the three pipelines (seed
  ``--seeds[0]``'s models, one score threshold ``--latency-threshold`` for the detector, the
  Keypoint R-CNN box head and the dense decode) on ``multi`` images with exactly 1, 4 and 8
  annotated people (generated once with ``people_per_image`` fixed), the dense ratio 8 vs 1
  people (the issue's goal: <= 1.1x), and which pipeline wins each column.

Sizes: the defaults (1000 + 200 images, 1000 steps x 4, 3 seeds: 21 trainings, of which the 18
detector-sized ones (dense, Keypoint R-CNN, the person detector) take ~0.6 s/step on one thread
(the detector's measured rate, docs/multiperson.md; the others' not measured at this size) and
the 3 top-down ones far less, 2 side by side) are an estimate of about two hours on 2 free CPU
cores, not a measured one; a GPU user sets ``--device cuda`` for the trainings (evaluation and
latency stay on the CPU). ``--smoke`` runs everything with
tiny sizes (8 + 4 images, 3 steps of 2, 1 seed, 1 latency image per count, 2 rounds) to show
that the script works end to end; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
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
DATA = "data/synth_multi"  # under --root, the configs' own relative paths
LATENCY_DATA = "data/latency"
PEOPLE_COUNTS = (1, 4, 8)
DENSE_GOAL = 1.10  # dense latency with 8 people / with 1 person (issue 17 section 5)
REGION_P = 0.9
MATCH_IOU = 0.5  # box IoU of a found person (posereg.metrics.coco.match_by_box)
DETECTOR = "fasterrcnn_resnet18_fpn_w0.5"
TOPDOWN_INPUT = (128, 96)
#: the version of score_predictions' numbers in a cached ``bench_eval.json`` (2: box matching,
#: people found and their keypoint error); another is scored again from the saved predictions
SCORING = 2
EVAL_THRESHOLD = 0.05  # box score threshold for AP (the multi-person configs' eval.score_threshold)


@dataclass(frozen=True)
class Arm:
    """One trained pose model: a shipped config and its overrides (``pipeline``: which of the
    three pipelines it is; ``baseline_of``: the RLE arm it is a baseline of)."""

    name: str
    config: str  # relative to the repository
    pipeline: str  # "dense" | "kprcnn" | "topdown"
    overrides: tuple[str, ...] = ()
    baseline_of: str | None = None


ARMS = (
    Arm("dense_rle", "configs/synth_dense_rle.yaml", "dense"),
    Arm("dense_l1", "configs/synth_dense_rle.yaml", "dense",
        ("model.keypoint_loss=l1", "model.loss_options={}"), "dense_rle"),
    Arm("dense_oks", "configs/synth_dense_rle.yaml", "dense",
        ("model.keypoint_loss=oks", "model.loss_options={}"), "dense_rle"),
    Arm("kprcnn_rle", "configs/synth_kprcnn_rle.yaml", "kprcnn"),
    Arm("kprcnn_heatmap", "configs/synth_kprcnn_heatmap.yaml", "kprcnn", (), "kprcnn_rle"),
    Arm("topdown", "configs/synth_rle.yaml", "topdown"),
)  # fmt: skip
#: the RLE model of each pipeline: the one whose latency is measured
PIPELINES = {"topdown": "topdown", "kprcnn": "kprcnn_rle", "dense": "dense_rle"}


# ------------------------------------------------------------------ pure functions (tested)


def keypoint_error(keypoints: np.ndarray, truth: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """The error of matched people's labelled keypoints in person units: ||mu - x|| / sqrt(area)
    (the top-down benchmarks' ``err_sqrt_area``).

    Arguments:
        keypoints: (P, K, 2) predictions, px. truth: (P, K, 3) their true keypoints x, y, v.
        areas: (P,) the true people's areas.

    Returns:
        (L,) one error per labelled (v > 0) keypoint.
    """
    err = np.linalg.norm(keypoints - truth[..., :2], axis=-1)
    err = err / np.sqrt(np.maximum(np.asarray(areas, dtype=np.float64), 1e-6))[:, None]
    return err[truth[..., 2] > 0]


def region_hits(
    keypoints: np.ndarray, region: np.ndarray, truth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each true keypoint lies in its predicted axis-aligned ellipse.

    ``inside = ((x - mu_x) / a_x)^2 + ((y - mu_y) / a_y)^2 <= 1``, the ellipse of semi-axes
    ``region`` = r_p x sigma (:meth:`posereg.uncertainty.PredictiveRegion.semi_axes`), i.e.
    ``|(truth - mu) / sigma| <= r_p`` (``PredictiveRegion.contains``).

    Arguments:
        keypoints: (P, K, 2) predicted centres mu, px. region: (P, K, 2) semi-axes, px.
        truth: (P, K, 3) the matched true keypoints x, y, v.

    Returns:
        (inside (P, K) bool, visibility codes v (P, K)).
    """
    d = (truth[..., :2] - keypoints) / np.maximum(region, 1e-12)
    return (d**2).sum(-1) <= 1.0, truth[..., 2]


def region_coverage(inside: np.ndarray, v: np.ndarray) -> dict[str, Any]:
    """Coverage of the regions over the labelled (v > 0) and the visible (v = 2) keypoints.

    Arguments:
        inside: (...) bool from :func:`region_hits` (any number of people, concatenated).
        v: (...) the visibility codes of the same keypoints.

    Returns:
        ``{"labelled": fraction, "labelled_se", "labelled_n", "visible", "visible_se",
        "visible_n"}`` (:func:`posereg.metrics.calibration.coverage`: fraction and binomial
        standard error; NaN without keypoints).
    """
    from posereg.metrics.calibration import coverage

    inside, v = np.asarray(inside, dtype=bool), np.asarray(v)
    out: dict[str, Any] = {}
    for name, mask in (("labelled", v > 0), ("visible", v == 2)):
        frac, se = coverage(inside[mask])
        out.update({name: frac, f"{name}_se": se, f"{name}_n": int(mask.sum())})
    return out


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(vals) if vals else math.nan


def _winner(values: dict[str, float], higher: bool, digits: int) -> str:
    """The key of the best value (highest or lowest) at the tables' precision (``digits``
    decimals); ``"tie: a, b"`` when several share it there (an AP of 0.0002 does not beat one of
    0.0001: both are 0.000 in the table)."""
    shown = {k: round(v, digits) for k, v in values.items()}
    best = max(shown.values()) if higher else min(shown.values())
    tied = [k for k, v in shown.items() if v == best]
    return tied[0] if len(tied) == 1 else "tie: " + ", ".join(tied)


def summarize(
    per_seed: dict[str, dict[int, dict[str, Any]]], latency: dict[str, dict[int, dict]] | None
) -> dict[str, Any]:
    """Means over seeds, the RLE-vs-baseline deltas per seed, the dense latency ratio, winners.

    Arguments:
        per_seed: ``{arm: {seed: {"ap_clean", "ap_labels", "coverage" (or None), ...}}}``.
        latency: ``{pipeline: {people: {"ms": median ms, "found": people found}}}`` or None.

    Returns:
        ``{"arms": {arm: {"ap_clean", "ap_labels", "seeds", "found", "err_sqrt_area",
        "coverage_labelled", "coverage_visible"}}, "deltas": {"rle - baseline": {"per_seed":
        {seed: d}, "mean": d, "err_per_seed": {seed: e}, "err_mean": e}},
        "latency": latency, "dense_ratio": ms(8) / ms(1) or None, "dense_goal_holds",
        "wins": {column: pipeline}}``; a delta is the clean AP of the RLE arm minus the
        baseline's for the same seed (seeds missing in either are left out), e the same for
        the keypoint error (negative: RLE's is smaller).
    """
    arms: dict[str, Any] = {}
    for arm, by_seed in per_seed.items():
        seeds = sorted(by_seed)
        cov = [by_seed[s].get("coverage") or {} for s in seeds]
        arms[arm] = {
            "seeds": seeds,
            "ap_clean": _mean([by_seed[s]["ap_clean"] for s in seeds]),
            "ap_labels": _mean([by_seed[s]["ap_labels"] for s in seeds]),
            "found": _mean([by_seed[s].get("found", math.nan) for s in seeds]),
            "err_sqrt_area": _mean([by_seed[s].get("err_sqrt_area", math.nan) for s in seeds]),
            "coverage_labelled": _mean([c.get("labelled", math.nan) for c in cov]),
            "coverage_visible": _mean([c.get("visible", math.nan) for c in cov]),
        }
    deltas: dict[str, Any] = {}
    for arm in ARMS:
        if arm.baseline_of is None or arm.name not in per_seed or arm.baseline_of not in per_seed:
            continue
        rle, base = per_seed[arm.baseline_of], per_seed[arm.name]
        both = [s for s in sorted(rle) if s in base]
        d = {s: rle[s]["ap_clean"] - base[s]["ap_clean"] for s in both}
        e = {s: rle[s].get("err_sqrt_area", math.nan) - base[s].get("err_sqrt_area", math.nan)
             for s in both}  # fmt: skip
        deltas[f"{arm.baseline_of} - {arm.name}"] = {
            "per_seed": d, "mean": _mean(list(d.values())),
            "err_per_seed": e, "err_mean": _mean(list(e.values())),
        }  # fmt: skip
    out: dict[str, Any] = {"arms": arms, "deltas": deltas, "latency": latency}
    wins: dict[str, str] = {}
    pipeline_ap = {p: arms[a]["ap_clean"] for p, a in PIPELINES.items() if a in arms}
    pipeline_ap = {p: v for p, v in pipeline_ap.items() if not math.isnan(v)}
    if pipeline_ap:
        wins["AP (clean truth)"] = _winner(pipeline_ap, higher=True, digits=3)
    ratio = None
    if latency:
        counts = sorted({n for rows in latency.values() for n in rows})
        for n in counts:
            ms = {p: rows[n]["ms"] for p, rows in latency.items() if n in rows}
            if ms:
                wins[f"latency, {n} people"] = _winner(ms, higher=False, digits=1)
        dense = latency.get("dense", {})
        if 1 in dense and 8 in dense:
            ratio = dense[8]["ms"] / dense[1]["ms"]
    out["dense_ratio"] = ratio
    out["dense_goal_holds"] = None if ratio is None else bool(ratio <= DENSE_GOAL)
    out["wins"] = wins
    return out


def _f(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def markdown_tables(summary: dict[str, Any]) -> str:
    """The summary (:func:`summarize`) as markdown: AP and coverage per arm, the deltas per seed,
    latency per pipeline and people count, the dense ratio's verdict, the winners."""
    lines = [
        "| arm | seeds | AP clean truth | AP labels | people found | keypoint error "
        "(sqrt area) | 90% region coverage, labelled (visible) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm, r in summary["arms"].items():
        cov = _f(r["coverage_labelled"])
        if cov != "-":
            cov += f" ({_f(r['coverage_visible'])})"
        lines.append(
            f"| {arm} | {len(r['seeds'])} | {_f(r['ap_clean'])} | {_f(r['ap_labels'])} | "
            f"{_f(r.get('found'))} | {_f(r.get('err_sqrt_area'), '.4f')} | {cov} |"
        )
    for title, key, mean, fmt in (
        ("clean AP delta", "per_seed", "mean", "+.3f"),
        ("keypoint error delta", "err_per_seed", "err_mean", "+.4f"),
    ):
        if not summary["deltas"]:
            break
        seeds = sorted({s for d in summary["deltas"].values() for s in d.get(key, {})})
        if not seeds:
            continue
        lines += ["", f"| {title} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
                  "| --- |" + " ---: |" * (len(seeds) + 1)]  # fmt: skip
        for name, d in summary["deltas"].items():
            cells = [_f(d[key].get(s), fmt) for s in seeds]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_f(d[mean], fmt)} |")
    latency = summary.get("latency")
    if latency:
        counts = sorted({n for rows in latency.values() for n in rows})
        lines += ["", "| pipeline | " + " | ".join(f"{n} people: ms (found)" for n in counts)
                  + f" | {counts[-1]} / {counts[0]} |",
                  "| --- |" + " ---: |" * (len(counts) + 1)]  # fmt: skip
        for pipeline, rows in latency.items():
            cells = [
                f"{rows[n]['ms']:.1f} ({rows[n]['found']:g})" if n in rows else "-" for n in counts
            ]
            ratio = (
                f"{rows[counts[-1]]['ms'] / rows[counts[0]]['ms']:.2f}x"
                if counts[0] in rows and counts[-1] in rows
                else "-"
            )
            lines.append(f"| {pipeline} | " + " | ".join(cells) + f" | {ratio} |")
    if summary.get("dense_ratio") is not None:
        verdict = "holds" if summary["dense_goal_holds"] else "does not hold"
        lines += ["", f"Dense latency 8 vs 1 people: {summary['dense_ratio']:.2f}x "
                  f"(goal <= {DENSE_GOAL:.2f}x): {verdict}."]  # fmt: skip
    if summary.get("wins"):
        lines += ["", "Wins: " + "; ".join(f"{k}: {v}" for k, v in summary["wins"].items()) + "."]
    return "\n".join(lines)


def plot_latency(latency: dict[str, dict[Any, dict[str, float]]], path: Path) -> None:
    """The latency curves: median ms per image against the number of people, one line per
    pipeline (people counts as ints or, read back from the JSON, strings), saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=120)
    for pipeline, rows in latency.items():
        counts = sorted(int(n) for n in rows)
        ms = [rows[n]["ms"] if n in rows else rows[str(n)]["ms"] for n in counts]
        ax.plot(counts, ms, marker="o", label=pipeline)
    ax.set_xlabel("annotated people in the image")
    ax.set_ylabel("CPU ms per image (1 thread, median)")
    ax.set_xticks(sorted({int(n) for rows in latency.values() for n in rows}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _from_json(path: Path) -> dict[str, Any]:
    """A ``--json`` file read back for the tables: latency keys as ints again."""
    summary = json.loads(path.read_text())
    if summary.get("latency"):
        summary["latency"] = {
            p: {int(n): r for n, r in rows.items()} for p, rows in summary["latency"].items()
        }
    return summary


# ------------------------------------------------------------------ training


def _cli() -> list[str]:
    return [sys.executable, "-c", "import sys; from posereg.cli import main; sys.exit(main())"]


def _env() -> dict[str, str]:
    src = str(REPO / "src")
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{src}:{path}" if path else src}


def _run(cmd: list[str], log: Path, cwd: Path, what: str) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=cwd, env=_env(), stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"{what}: failed (exit {rc}); see {log}")
    return time.time() - start


def count_crops(ann_file: Path) -> int:
    """Non-crowd people with a labelled keypoint in a COCO json: the top-down train samples."""
    anns = json.loads(ann_file.read_text())["annotations"]
    return sum(1 for a in anns if not a.get("iscrowd") and any(a["keypoints"][2::3]))


def arm_overrides(arm: Arm, seed: int, args: argparse.Namespace, crops: int) -> list[str]:
    """The ``--set`` overrides of one arm: the common budget, seed, threads and data."""
    sets = [
        *arm.overrides, f"name={arm.name}_s{seed}", "out_dir=runs", "train.threads=1",
        "data.workers=0", f"train.seed={seed}", f"train.batch_size={args.batch_size}",
        "train.eval_every=0", f"data.synth.num_train={args.num_train}",
        f"data.synth.num_val={args.num_val}", f"eval.batch_size={args.batch_size}",
    ]  # fmt: skip
    if arm.pipeline == "topdown":
        # the top-down recipe on the crops of the same multi-person json; the cosine spans the
        # whole epochs, max_steps stops at the common budget
        epochs = max(1, math.ceil(args.steps * args.batch_size / max(crops, 1)))
        sets += [
            f"data.train_ann={DATA}/annotations/person_keypoints_train.json",
            f"data.train_images={DATA}/images/train",
            f"data.val_ann={DATA}/annotations/person_keypoints_val.json",
            f"data.val_images={DATA}/images/val", f"data.synth.root={DATA}",
            "data.synth.preset=multi", "data.synth.options={}",
            f"data.input_size=[{TOPDOWN_INPUT[0]}, {TOPDOWN_INPUT[1]}]",
            f"train.epochs={epochs}", f"train.max_steps={args.steps}", "eval.flip_test=false",
            f"optim.warmup_steps={min(100, args.steps)}",
        ]  # fmt: skip
    else:
        sets += [f"train.steps={args.steps}", f"optim.warmup_steps={min(50, args.steps)}"]
    return sets


def train_arm(arm: Arm, seed: int, args: argparse.Namespace, root: Path, crops: int) -> dict:
    """``posereg train`` of one arm (skipped when its ``metrics.json`` exists)."""
    run_dir = root / "runs" / f"{arm.name}_s{seed}"
    if (run_dir / "metrics.json").is_file():
        return {"run_dir": str(run_dir), "reused": True}
    cmd = [*_cli(), "train", str(REPO / arm.config), "--exist-ok"]
    if args.device:
        cmd += ["--device", args.device]
    cmd += ["--set", *arm_overrides(arm, seed, args, crops)]
    wall = _run(cmd, root / "logs" / f"{arm.name}_s{seed}.log", root, f"{arm.name} seed {seed}")
    return {"run_dir": str(run_dir), "train_wall_s": wall}


def train_detector_run(seed: int, args: argparse.Namespace, root: Path) -> dict:
    """The top-down pipeline's detector, trained in a subprocess of this script (skipped when
    its ``metrics.json`` exists)."""
    run_dir = root / "runs" / f"detector_s{seed}"
    if (run_dir / "metrics.json").is_file():
        return {"run_dir": str(run_dir), "reused": True}
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "train-detector", "--root", str(root),
        "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", str(seed),
        "--device", args.device or "cpu",
    ]  # fmt: skip
    wall = _run(cmd, root / "logs" / f"detector_s{seed}.log", root, f"detector seed {seed}")
    return {"run_dir": str(run_dir), "train_wall_s": wall}


def detector_main(argv: Sequence[str]) -> None:
    """``bench_multiperson.py train-detector``: one detector run (the same budget, augmentation
    and loader as the multi-person arms), box AP on the val split, ``metrics.json`` last."""
    import torch

    from posereg.config import MultiPersonDataConfig, MultiPersonTransformConfig
    from posereg.data.multiperson import MultiPersonDataset, build_multiperson_loader
    from posereg.engine.detector import DetectorTrainConfig, evaluate_detector, train_detector

    p = argparse.ArgumentParser(prog="bench_multiperson.py train-detector")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    data = a.root / DATA
    run_dir = a.root / "runs" / f"detector_s{a.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    train_ann = data / "annotations/person_keypoints_train.json"
    val_ann = data / "annotations/person_keypoints_val.json"
    cfg = MultiPersonDataConfig(
        train_ann=str(train_ann), train_images=str(data / "images/train"),
        val_ann=str(val_ann), val_images=str(data / "images/val"), workers=0,
        transform=MultiPersonTransformConfig(augment=True, flip_prob=0.5, scale=(0.75, 1.25),
                                             translate=0.1),
    )  # fmt: skip
    torch.manual_seed(a.seed)
    loader = build_multiperson_loader(cfg, "train", a.batch_size, drop_last=True)
    config = DetectorTrainConfig(
        name=DETECTOR, steps=a.steps, seed=a.seed, warmup_steps=min(50, a.steps)
    )
    result = train_detector(
        loader, config, run_dir / "detector.pt", device=a.device, log=print, log_every=50
    )
    val = MultiPersonDataset.from_coco(val_ann, data / "images/val")
    box = evaluate_detector(result.model.to("cpu"), val, val_ann)
    n = max(1, min(20, len(result.losses)))
    metrics = {
        "box_ap": box.ap, "box_ap50": box.ap50, "train_seconds": result.seconds,
        "first_loss": sum(result.losses[:n]) / n, "last_loss": sum(result.losses[-n:]) / n,
        "steps": len(result.losses),
    }  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics))


# ------------------------------------------------------------------ evaluation


def _val_images(ann_file: Path) -> list[tuple[int, str]]:
    images = json.loads(ann_file.read_text())["images"]
    return [(int(im["id"]), im["file_name"]) for im in images]


def _truth_by_image(ann_file: Path) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """image id -> (clean truth (M, K, 3), areas (M,), boxes (M, 4) x y w h) of its non-crowd
    people."""
    out: dict[int, list] = {}
    for a in json.loads(ann_file.read_text())["annotations"]:
        if a.get("iscrowd"):
            continue
        kp = np.asarray(a.get("keypoints_clean", a["keypoints"]), dtype=np.float64).reshape(-1, 3)
        out.setdefault(int(a["image_id"]), []).append((kp, float(a["area"]), a["bbox"]))
    return {
        i: (np.stack([k for k, _, _ in v]), np.array([s for _, s, _ in v]),
            np.array([b for _, _, b in v], dtype=np.float64).reshape(-1, 4))
        for i, v in out.items()
    }  # fmt: skip


class TopDownPipeline:
    """The person detector's boxes, then the top-down model on each: one image in, a PoseResult."""

    def __init__(self, detector_ckpt: Path, pose_ckpt: Path, score_threshold: float) -> None:
        from posereg.detect import PersonDetector
        from posereg.predict import Predictor

        self.detector = PersonDetector(DETECTOR, detector_ckpt, score_threshold=score_threshold)
        self.pose = Predictor.from_checkpoint(pose_ckpt, device="cpu", flip_test=False)

    def __call__(self, bgr: np.ndarray):
        found = self.detector(bgr)
        return self.pose(bgr, boxes=found.boxes, box_scores=found.scores)


def load_pipeline(pipeline: str, run_dir: Path, detector_dir: Path | None, threshold: float):
    """A callable ``(H, W, 3) uint8 BGR -> PoseResult`` of a trained arm's last checkpoint, its
    box score threshold ``threshold``."""
    from dataclasses import replace

    from posereg.predict import Predictor

    if pipeline == "topdown":
        assert detector_dir is not None
        return TopDownPipeline(detector_dir / "detector.pt", run_dir / "last.pt", threshold)
    predictor = Predictor.from_checkpoint(run_dir / "last.pt", device="cpu")
    predictor.config = replace(
        predictor.config, eval=replace(predictor.config.eval, score_threshold=threshold)
    )
    return predictor


def score_predictions(ann: Path, ids: list[int], results: list[Any]) -> dict[str, Any]:
    """AP against the clean truth and the labels, the people found, their keypoint error and the
    predictive regions' coverage, of one pipeline's results on a COCO json's images.

    Arguments:
        ann: the COCO json (annotations with ``keypoints_clean``: the synthetic sets).
        ids: the image ids predicted. results: their :class:`posereg.result.PoseResult`.

    Returns:
        ``{"people_predicted", "ap_clean", "ap_labels" (COCOeval's AP, pycocotools; 0 when
        nobody was predicted), "people": true people with a labelled keypoint, "found": the
        share of them matched (:func:`posereg.metrics.coco.match_by_box`, box IoU >= 0.5),
        "err_sqrt_area": the mean :func:`keypoint_error` of the matched people against the
        clean truth (NaN when none), "coverage": :func:`region_coverage` of the matched people
        plus ``matched_people``, or None without regions}``.
    """
    from posereg.engine.multiperson import coco_entries
    from posereg.metrics.coco import evaluate_coco, match_by_box

    truths = _truth_by_image(ann)
    inside, vis, errors = [], [], []
    people = found = 0
    for image_id, result in zip(ids, results, strict=True):
        if image_id not in truths:
            continue
        truth, areas, boxes = truths[image_id]
        labelled = (truth[..., 2] > 0).any(axis=1)
        pairs = match_by_box(result.boxes, result.scores, boxes, labelled, MATCH_IOU)
        people, found = people + int(labelled.sum()), found + len(pairs)
        if not pairs:
            continue
        p, t = (list(x) for x in zip(*pairs, strict=True))
        errors.append(keypoint_error(result.keypoints[p], truth[t], areas[t]))
        if result.region is not None:
            if result.region_p is None or abs(result.region_p - REGION_P) > 1e-9:
                raise ValueError(f"regions at p = {result.region_p}, expected {REGION_P}")
            hit, v = region_hits(result.keypoints[p], result.region[p], truth[t])
            inside.append(hit)
            vis.append(v)
    entries = coco_entries(ids, results)
    err = np.concatenate(errors) if errors else np.zeros(0)
    out: dict[str, Any] = {
        "people_predicted": len(entries), "people": people,
        "found": found / people if people else math.nan,
        "err_sqrt_area": float(err.mean()) if err.size else math.nan,
    }  # fmt: skip
    for key, clean in (("ap_clean", True), ("ap_labels", False)):
        out[key] = (
            float(evaluate_coco(ann, entries, use_clean=clean, image_ids=ids).ap)
            if entries
            else 0.0
        )
    out["coverage"] = None
    if any(r.region is not None for r in results):
        out["coverage"] = region_coverage(
            np.concatenate(inside) if inside else np.zeros(0, bool),
            np.concatenate(vis) if vis else np.zeros(0),
        )
        out["coverage"]["matched_people"] = int(sum(len(h) for h in inside))
    return out


_FIELDS = ("keypoints", "confidence", "boxes", "scores", "sigma", "region")


def save_results(path: Path, ids: list[int], results: list[Any]) -> None:
    """One pipeline's PoseResults of the val images in one ``.npz`` (people concatenated,
    ``counts`` per image), so that a change of the scoring does not need the inference again."""
    arrays: dict[str, np.ndarray] = {
        "ids": np.asarray(ids, dtype=np.int64),
        "counts": np.asarray([len(r.scores) for r in results], dtype=np.int64),
        "region_p": np.asarray(
            next((r.region_p for r in results if r.region_p is not None), np.nan), dtype=float
        ),
    }
    for name in _FIELDS:
        parts = [getattr(r, name) for r in results]
        if all(x is not None for x in parts) and parts:
            arrays[name] = np.concatenate(parts)
    np.savez_compressed(path, **arrays)


def load_results(path: Path) -> tuple[list[int], list[Any]]:
    """(ids, PoseResults) written by :func:`save_results`."""
    from posereg.result import PoseResult

    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    cuts = np.cumsum(data["counts"])[:-1]
    split = {k: np.split(data[k], cuts) for k in _FIELDS if k in data}
    p = float(data["region_p"])
    results = []
    for i in range(len(data["ids"])):
        get = {k: (split[k][i] if k in split else None) for k in _FIELDS}
        results.append(
            PoseResult(get["keypoints"], get["sigma"], get["confidence"], get["boxes"],
                       get["scores"], get["region"], None if get["region"] is None else p)
        )  # fmt: skip
    return [int(i) for i in data["ids"]], results


def evaluate_arm(
    pipeline: str, run_dir: Path, detector_dir: Path | None, data: Path
) -> dict[str, Any]:
    """AP (clean truth, labels) and region coverage (:func:`score_predictions`) of one trained
    arm on the val split, through its inference; cached in ``run_dir/bench_eval.json``."""
    cache, saved = run_dir / "bench_eval.json", run_dir / "bench_predictions.npz"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("scoring") == SCORING:
            return cached
    ann = data / "annotations/person_keypoints_val.json"
    if saved.is_file():  # the inference is done: score it again
        ids, results = load_results(saved)
        seconds = json.loads(cache.read_text())["eval_seconds"] if cache.is_file() else math.nan
    else:
        run = load_pipeline(pipeline, run_dir, detector_dir, EVAL_THRESHOLD)
        ids, results = [], []
        start = time.perf_counter()
        for image_id, name in _val_images(ann):
            results.append(run(_read(data / "images/val" / name)))
            ids.append(image_id)
        seconds = time.perf_counter() - start
        save_results(saved, ids, results)
    out = {**score_predictions(ann, ids, results), "eval_seconds": seconds, "scoring": SCORING}
    own = json.loads((run_dir / "metrics.json").read_text())
    out["run_metrics"] = own.get("val", own)
    cache.write_text(json.dumps(out, indent=1))
    return out


def _read(path: Path) -> np.ndarray:
    from posereg.data.image_io import read_image

    return read_image(path, exif_orientation=False)


# ------------------------------------------------------------------ latency


def latency_images(root: Path, counts: Sequence[int], per_count: int) -> dict[int, list[Path]]:
    """``per_count`` ``multi`` images with exactly n annotated people (each with a labelled
    keypoint) per n of ``counts``, generated once under ``root/data/latency``."""
    from posereg.synth.generate import SynthConfig, generate

    out: dict[int, list[Path]] = {}
    for n in counts:
        split = f"people{n}"
        folder = root / LATENCY_DATA
        ann = folder / "annotations" / f"person_keypoints_{split}.json"
        picked: list[Path] = []
        tries = 0
        while len(picked) < per_count and tries < 4:
            num = per_count * (3 if n < 8 else 8) * (tries + 1)
            if not ann.is_file() or tries:
                config = SynthConfig.preset("multi", people_per_image=(n, n))
                generate(folder, split, num, seed=100 + n, config=config, num_workers=0,
                         progress=False, preset="multi")  # fmt: skip
            d = json.loads(ann.read_text())
            people: dict[int, int] = {}
            for a in d["annotations"]:
                if any(a["keypoints"][2::3]) and not a.get("iscrowd"):
                    people[a["image_id"]] = people.get(a["image_id"], 0) + 1
            picked = [folder / "images" / split / im["file_name"]
                      for im in d["images"] if people.get(im["id"], 0) == n][:per_count]  # fmt: skip
            tries += 1
        if not picked:
            raise SystemExit(f"no generated multi image with exactly {n} annotated people")
        out[n] = picked
    return out


def measure_latency(
    pipelines: dict[str, Any], images: dict[int, list[Path]], rounds: int
) -> dict[str, dict[int, dict[str, float]]]:
    """Median ms per image (batch 1, one thread) of each pipeline per people count, rounds
    interleaved across pipelines and images, after one warm-up call each; ``found``: the median
    number of people the pipeline returned."""
    import torch

    torch.set_num_threads(1)
    decoded = {n: [_read(p) for p in paths] for n, paths in images.items()}
    times: dict[str, dict[int, list[float]]] = {p: {n: [] for n in decoded} for p in pipelines}
    found: dict[str, dict[int, list[int]]] = {p: {n: [] for n in decoded} for p in pipelines}
    with torch.inference_mode():
        for name, run in pipelines.items():
            for n, bgrs in decoded.items():
                for bgr in bgrs:
                    found[name][n].append(len(run(bgr).scores))
        for _ in range(rounds):
            for name, run in pipelines.items():
                for n, bgrs in decoded.items():
                    for bgr in bgrs:
                        t0 = time.perf_counter()
                        run(bgr)
                        times[name][n].append((time.perf_counter() - t0) * 1000.0)
    return {
        name: {n: {"ms": statistics.median(times[name][n]),
                   "found": float(statistics.median(found[name][n]))} for n in decoded}
        for name in pipelines
    }  # fmt: skip


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train-detector"]:
        detector_main(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, help="working folder (data, runs, logs); required")
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps of every arm")
    p.add_argument("--batch-size", type=int, default=4, help="samples per step of every arm")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=[a.name for a in ARMS])
    p.add_argument("--jobs", type=int, default=2, help="trainings side by side (1 thread each)")
    p.add_argument("--device", default=None, help="training device (default: posereg's)")
    p.add_argument("--latency-images", type=int, default=5, help="images per people count")
    p.add_argument("--rounds", type=int, default=10, help="latency rounds")
    p.add_argument("--latency-threshold", type=float, default=0.5,
                   help="box score threshold of every pipeline in the latency runs")  # fmt: skip
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script works")
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path, help="the latency curves (a PNG)")
    p.add_argument("--from-json", type=Path, help="only print the tables (and --plot) of a "
                   "finished run's --json file")  # fmt: skip
    args = p.parse_args(argv)
    if args.from_json is not None:
        summary = _from_json(args.from_json)
        print(markdown_tables(summary))
        if args.plot is not None and summary.get("latency"):
            plot_latency(summary["latency"], args.plot)
        return
    if args.root is None:
        p.error("--root is required (or --from-json to print a finished run's tables)")
    if args.smoke:
        args.num_train, args.num_val, args.steps, args.batch_size = 8, 4, 3, 2
        args.seeds, args.latency_images, args.rounds = args.seeds[:1], 1, 2
    unknown = sorted(set(args.arms) - {a.name for a in ARMS})
    if unknown:
        p.error(f"--arms: unknown {unknown}; valid: {', '.join(a.name for a in ARMS)}")
    root = args.root.resolve()
    json_path = args.json.resolve() if args.json is not None else None
    plot_path = args.plot.resolve() if args.plot is not None else None  # before the chdir
    root.mkdir(parents=True, exist_ok=True)
    t_start, load = time.time(), os.getloadavg()

    # one synthetic multi set for every arm, generated here once, reused by each run
    from posereg.config import SynthDataConfig
    from posereg.engine.synthdata import ensure_synthetic_dataset

    os.chdir(root)  # the configs' data paths are relative
    ensure_synthetic_dataset(
        SynthDataConfig(root=DATA, preset="multi", num_train=args.num_train,
                        num_val=args.num_val, seed=0, workers=0)
    )  # fmt: skip
    data = root / DATA
    crops = count_crops(data / "annotations/person_keypoints_train.json")
    arms = [a for a in ARMS if a.name in args.arms]

    jobs: list[tuple[str, int, Any]] = []
    for seed in args.seeds:
        for arm in arms:
            jobs.append((arm.name, seed, lambda a=arm, s=seed: train_arm(a, s, args, root, crops)))
        if any(a.pipeline == "topdown" for a in arms):
            jobs.append(("detector", seed, lambda s=seed: train_detector_run(s, args, root)))
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {(name, seed): pool.submit(fn) for name, seed, fn in jobs}
        for key, fut in futures.items():
            runs[key] = fut.result()
            how = "reused" if runs[key].get("reused") else f"{runs[key]['train_wall_s']:.0f} s"
            print(f"trained {key[0]} seed {key[1]}: {how}", flush=True)

    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in arms:
        for seed in args.seeds:
            det = Path(runs[("detector", seed)]["run_dir"]) if arm.pipeline == "topdown" else None
            run_dir = Path(runs[(arm.name, seed)]["run_dir"])
            row = {**runs[(arm.name, seed)], **evaluate_arm(arm.pipeline, run_dir, det, data)}
            if det is not None:
                row["detector"] = json.loads((det / "metrics.json").read_text())
            per_seed.setdefault(arm.name, {})[seed] = row
            print(f"evaluated {arm.name} seed {seed}: AP clean {row['ap_clean']:.3f}", flush=True)

    latency = None
    present = {p: a for p, a in PIPELINES.items() if a in args.arms}
    if present and not args.no_latency:
        images = latency_images(root, PEOPLE_COUNTS, args.latency_images)
        seed = args.seeds[0]
        pipelines = {
            p: load_pipeline(
                next(x.pipeline for x in ARMS if x.name == a), root / "runs" / f"{a}_s{seed}",
                root / "runs" / f"detector_s{seed}", args.latency_threshold,
            )
            for p, a in present.items()
        }  # fmt: skip
        latency = measure_latency(pipelines, images, args.rounds)

    summary = summarize(per_seed, latency)
    summary["setup"] = {
        "smoke": args.smoke, "num_train": args.num_train, "num_val": args.num_val,
        "train_people_with_keypoints": crops, "steps": args.steps,
        "batch_size": args.batch_size, "seeds": args.seeds, "device": args.device or "default",
        "latency_images_per_count": args.latency_images, "latency_rounds": args.rounds,
        "latency_threshold": args.latency_threshold, "eval_threshold": EVAL_THRESHOLD,
        "topdown_input": list(TOPDOWN_INPUT), "region_p": REGION_P, "match_iou": MATCH_IOU,
        "wall_s": time.time() - t_start, "loadavg_start": [round(x, 2) for x in load],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "per_seed": {a: {str(s): r for s, r in by.items()} for a, by in per_seed.items()},
    }  # fmt: skip
    if latency is not None:
        summary["latency"] = {
            p: {str(n): r for n, r in rows.items()} for p, rows in latency.items()
        }
    print(markdown_tables({**summary, "latency": latency}))
    if plot_path is not None and latency is not None:
        plot_latency(latency, plot_path)
    text = json.dumps(summary, indent=2)
    if json_path is not None:
        json_path.write_text(text + "\n")
    print(f"wall time {summary['setup']['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
