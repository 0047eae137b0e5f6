"""Reliability of the calibrated sigma (issue 19, item 3): raw sigma vs c_k x sigma, held out.

    python benchmarks/bench_sigma_calibration.py --checkpoint runs/calib_synth_rle/last.pt \
        [--out docs/images/sigma_reliability.png] [--json sigma_reliability.json]
    python benchmarks/bench_sigma_calibration.py --lift-checkpoint runs/calib_lift_synth_rle/last.pt \
        [--lift-out docs/images/lift_sigma_reliability.png]

For a top-down checkpoint with sigma: predict its validation set (the config's, flip test as
configured), take the residuals r = truth - mu per axis in image pixels (against the clean truth
for a synthetic set, else the labels; labelled keypoints only) and sigma in pixels, and compare
three readings of sigma as a Laplace scale b (P(|r_d| <= t b) = 1 - exp(-t) if right):

- ``raw``: b = sigma (the head's output);
- ``global c``: b = c sigma, one c for all keypoints (the Laplace MLE, mean |r| / sigma);
- ``per-keypoint c_k``: b = c_k sigma (:func:`posereg.uncertainty.fit_sigma_scale`, what
  training saves in the checkpoint for 2D models);
- ``per-keypoint-axis c_kd``: one c per keypoint and axis (``per_axis=True``).

The scales are fitted and scored on different halves (2-fold by image: fit on even image
indices, score on odd ones and the reverse, pooled), so the diagram is held out. The reliability
diagram plots, at levels p = 0.05 ... 0.95, the observed fraction of |r_d| within t_p b,
t_p = -ln(1 - p), against p; the gap is mean |observed - p| over the levels, pooled over x and
y, and (``gap per axis``) over the levels and the two axes scored apart. Printed besides: the per-keypoint c_k on the whole set, the per-axis
ratio c_y / c_x (whether one c per keypoint suffices), the mean |observed - p| over the levels,
and the flow's predictive-region coverage at 0.5 / 0.8 / 0.9 / 0.95 (``PoseResult.region``).

For a lifting checkpoint (``--lift-checkpoint``) the same on its config's validation pairs, in
mm, per joint and axis (x, y, z), the pelvis left out (0 by definition); the folds are the even
and odd pairs. What training saves there is the per-joint-axis c (``per_axis=True``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from posereg.engine.builders import build_datasets
from posereg.engine.evaluate import kept_instances, predict_dataset
from posereg.metrics.calibration import coverage
from posereg.models.build import lifter_from_checkpoint, model_from_checkpoint
from posereg.uncertainty import (
    RELIABILITY_LEVELS,
    REPORT_LEVELS,
    fit_sigma_scale,
    region_from_criterion,
)

ROOT = Path(__file__).resolve().parents[1]


def observed_within(ratio: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Fraction of |r| / b (M,) within t_p = -ln(1 - p), per level p."""
    t = -np.log1p(-np.asarray(levels))
    return (ratio[:, None] <= t[None, :]).mean(axis=0)


VARIANTS = ("raw", "global c", "per-keypoint c_k", "per-keypoint-axis c_kd")
COLORS = ("tab:red", "tab:orange", "tab:blue", "tab:green")


def held_out(
    residual: np.ndarray, sigma: np.ndarray, labelled: np.ndarray, fold: np.ndarray
) -> dict[str, np.ndarray]:
    """|r| / b (M, D) of each variant, b fitted on one fold and scored on the other, pooled.

    Arguments: residual, sigma (N, K, D); labelled (N, K) bool; fold (N,) 0 or 1.
    """
    d = residual.shape[2]
    ratios: dict[str, list[np.ndarray]] = {name: [] for name in VARIANTS}
    z = np.abs(residual) / sigma  # (N, K, D)
    for f in (0, 1):
        fit, score = labelled & (fold != f)[:, None], labelled & (fold == f)[:, None]
        c_all = fit_sigma_scale(
            residual.reshape(-1, 1, d), sigma.reshape(-1, 1, d), fit.reshape(-1, 1)
        )[0]
        scales = (1.0, c_all, fit_sigma_scale(residual, sigma, fit),
                  fit_sigma_scale(residual, sigma, fit, per_axis=True))  # fmt: skip
        for name, c in zip(VARIANTS, scales, strict=True):
            ratios[name].append((z / c)[score])
    return {name: np.concatenate(parts) for name, parts in ratios.items()}


def gaps(pooled: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    """(observed fraction per level, mean |observed - p| pooled, the same per axis) per variant."""
    levels = np.asarray(RELIABILITY_LEVELS)
    observed = {n: observed_within(r.ravel(), RELIABILITY_LEVELS) for n, r in pooled.items()}
    gap = {n: float(np.abs(o - levels).mean()) for n, o in observed.items()}
    gap_axes = {
        n: float(np.mean([np.abs(observed_within(r[:, d], RELIABILITY_LEVELS) - levels)
                          for d in range(r.shape[1])]))
        for n, r in pooled.items()
    }  # fmt: skip
    return observed, gap, gap_axes


def report(observed: dict, gap: dict, gap_axes: dict) -> None:
    print("mean |observed - p| over p = 0.05..0.95 (held out, 2 folds): pooled, per axis")
    for name in VARIANTS:
        print(f"  {name:24s} {gap[name]:.3f}  {gap_axes[name]:.3f}")
    print("observed fraction within t_p b at p = 0.5, 0.8, 0.9, 0.95:")
    at = [RELIABILITY_LEVELS.index(p) for p in REPORT_LEVELS]
    for name in VARIANTS:
        print(f"  {name:24s} " + "  ".join(f"{observed[name][i]:.3f}" for i in at))


def plot(
    path: str, title: str, observed: dict, gap: dict, gap_axes: dict, names: list[str],
    scale: np.ndarray, axes: str, unit: str,
) -> None:  # fmt: skip
    """The reliability diagram (left) and the fitted c per keypoint and axis (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = np.asarray(RELIABILITY_LEVELS)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated Laplace")
    for name, color in zip(VARIANTS, COLORS, strict=True):
        ax.plot(levels, observed[name], marker="o", ms=3, color=color,
                label=f"{name} (gap {gap[name]:.3f}; per axis {gap_axes[name]:.3f})")  # fmt: skip
    ax.set(xlabel="Laplace's predicted fraction p = 1 - exp(-t)",
           ylabel="observed fraction of |r_d| <= t b", xlim=(0, 1), ylim=(0, 1),
           title=f"sigma as a Laplace scale b ({unit}), held out")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")
    k, d = scale.shape
    height = 0.8 / d
    for j in range(d):
        bx.barh(np.arange(k) + (j - (d - 1) / 2) * height, scale[:, j], height=height,
                label=f"c_{axes[j]}")  # fmt: skip
    bx.axvline(1.0, color="tab:red", lw=1, ls="--")
    bx.set_yticks(range(k), names, fontsize=7)
    bx.invert_yaxis()
    bx.legend(fontsize=8)
    bx.set(xlabel="c (calibrated sigma = c x sigma)", title="scale per keypoint and axis")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"-> {path}")


def run_2d(args: argparse.Namespace) -> dict:
    model, cfg, state = model_from_checkpoint(args.checkpoint)
    _, val = build_datasets(cfg, train_split=False)
    preds = predict_dataset(
        model, val, torch.device("cpu"), cfg.eval.batch_size, cfg.eval.flip_test
    )
    if preds.sigma is None:
        raise SystemExit(f"{args.checkpoint}: the head predicts no sigma")
    table = val.table
    clean = table.keypoints_clean is not None
    truth = table.keypoints_clean if clean else table.keypoints
    labelled = (truth[..., 2] > 0) & kept_instances(preds, val)[:, None]  # (N, K)
    residual = truth[..., :2] - preds.keypoints  # (N, K, 2) px
    sigma = preds.sigma  # (N, K, 2) px
    observed, gap, gap_axes = gaps(held_out(residual, sigma, labelled, table.image_index % 2))
    steps = state.get("step")
    print(f"checkpoint {args.checkpoint} (step {steps}); {int(labelled.sum())} labelled keypoints "
          f"of {len(residual)} instances, truth: {'clean' if clean else 'labels'}")  # fmt: skip
    report(observed, gap, gap_axes)
    names = list(val.skeleton.keypoint_names)
    c_full = fit_sigma_scale(residual, sigma, labelled)[:, 0]
    c_axes = fit_sigma_scale(residual, sigma, labelled, per_axis=True)
    print("c on the whole validation set: c_k (c_x, c_y)")
    for i, name in enumerate(names):
        print(f"  {name:16s} {c_full[i]:.3f}  ({c_axes[i, 0]:.3f}, {c_axes[i, 1]:.3f})")
    ratio_xy = c_axes[:, 1] / c_axes[:, 0]
    print(f"c_y / c_x over keypoints: median {np.median(ratio_xy):.3f}, "
          f"range {ratio_xy.min():.3f}-{ratio_xy.max():.3f}")  # fmt: skip
    saved = state.get("sigma_calibration")
    if saved is not None:
        diff = np.abs(np.asarray(saved["scale"])[:, 0] - c_full).max()
        print(f"the checkpoint's saved c_k: max |difference| to this fit {diff:.2e}")
    else:
        print("the checkpoint holds no sigma_calibration (saved before posereg fitted one)")
    region = region_from_criterion(getattr(model, "criterion", None), REPORT_LEVELS)
    region_cov = {}
    if region is not None:
        for p in REPORT_LEVELS:
            region_cov[str(p)] = coverage(region.contains(residual / sigma, p)[labelled])
        print(f"flow region ({region.family}) coverage: " + ", ".join(
            f"p={p}: {f:.3f} +- {se:.3f}" for p, (f, se) in region_cov.items()))  # fmt: skip
    title = (f"{Path(args.checkpoint).parent.name}: {cfg.model.loss} "
             f"({cfg.model.loss_options.get('convention', '')}), step {steps}, "
             f"{len(residual)} validation instances")  # fmt: skip
    plot(args.out, title, observed, gap, gap_axes, names, c_axes, "xy", "px")
    return {"checkpoint": str(args.checkpoint), "step": steps,
            "observed": {n: o.tolist() for n, o in observed.items()}, "gap": gap,
            "gap_per_axis": gap_axes, "c_k": dict(zip(names, c_full.tolist(), strict=True)),
            "c_y_over_c_x": ratio_xy.tolist(), "region_coverage": region_cov}  # fmt: skip


def run_lift(args: argparse.Namespace) -> dict:
    from posereg.engine.lift import build_lift_data
    from posereg.models.lifter import predict_lifter

    model, cfg, state = lifter_from_checkpoint(args.lift_checkpoint)
    if not model.has_sigma:
        raise SystemExit(f"{args.lift_checkpoint}: the lifter predicts no sigma")
    _, val = build_lift_data(cfg, train=False)
    joints, sigma = predict_lifter(model, val.keypoints_2d)
    residual = (val.joints_3d - joints)[:, 1:]  # (N, 16, 3) mm; the pelvis is 0 in both
    sigma = sigma[:, 1:]
    labelled = np.ones(residual.shape[:2], dtype=bool)
    observed, gap, gap_axes = gaps(held_out(residual, sigma, labelled, np.arange(len(val)) % 2))
    print(f"lifter {args.lift_checkpoint} (epoch {state.get('epoch')}); {len(val)} validation "
          f"pairs ({cfg.data.source}, noise {cfg.data.noise})")  # fmt: skip
    report(observed, gap, gap_axes)
    names = list(model.joint_names)[1:]
    c_axes = fit_sigma_scale(residual, sigma, labelled, per_axis=True)
    print("c per joint and axis (x, y, z) on the whole validation set; mean |r| mm (x, y, z)")
    mean_abs = np.abs(residual).mean(axis=0)
    for i, name in enumerate(names):
        print(f"  {name:16s} ({c_axes[i, 0]:.3f}, {c_axes[i, 1]:.3f}, {c_axes[i, 2]:.3f})  "
              f"({mean_abs[i, 0]:.0f}, {mean_abs[i, 1]:.0f}, {mean_abs[i, 2]:.0f})")  # fmt: skip
    ratio_zx = c_axes[:, 2] / c_axes[:, 0]
    print(f"c_z / c_x over joints: median {np.median(ratio_zx):.3f}, "
          f"range {ratio_zx.min():.3f}-{ratio_zx.max():.3f}")  # fmt: skip
    saved = state.get("sigma_calibration")
    if saved is not None:
        diff = np.abs(np.asarray(saved["scale"])[1:] - c_axes).max()
        print(f"the checkpoint's saved c: max |difference| to this fit {diff:.2e}")
    title = (f"{Path(args.lift_checkpoint).parent.name}: lifter, {cfg.model.loss} "
             f"({cfg.model.loss_options.get('convention', '')}), {len(val)} validation pairs")  # fmt: skip
    plot(args.lift_out, title, observed, gap, gap_axes, names, c_axes, "xyz", "mm")
    return {"checkpoint": str(args.lift_checkpoint),
            "observed": {n: o.tolist() for n, o in observed.items()}, "gap": gap,
            "gap_per_axis": gap_axes, "c": dict(zip(names, c_axes.tolist(), strict=True)),
            "c_z_over_c_x": ratio_zx.tolist()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="a top-down checkpoint with sigma")
    ap.add_argument("--out", default=str(ROOT / "docs/images/sigma_reliability.png"))
    ap.add_argument("--lift-checkpoint", default=None, help="a task: lift checkpoint with sigma")
    ap.add_argument("--lift-out", default=str(ROOT / "docs/images/lift_sigma_reliability.png"))
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.checkpoint is None and args.lift_checkpoint is None:
        ap.error("give --checkpoint and/or --lift-checkpoint")
    torch.set_num_threads(args.threads)
    numbers = {}
    if args.checkpoint is not None:
        numbers["2d"] = run_2d(args)
    if args.lift_checkpoint is not None:
        numbers["lift"] = run_lift(args)
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
