"""Reliability of the calibrated sigma (issue 19, item 3): raw sigma vs c_k x sigma, held out.

    python benchmarks/bench_sigma_calibration.py --checkpoint runs/calib_synth_rle/last.pt \
        [--out docs/images/sigma_reliability.png] [--json sigma_reliability.json]

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
from posereg.models.build import model_from_checkpoint
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "runs/calib_synth_rle/last.pt"))
    ap.add_argument("--out", default=str(ROOT / "docs/images/sigma_reliability.png"))
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

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
    k = residual.shape[1]

    fold = table.image_index % 2  # (N,) 2-fold by image
    names_v = ("raw", "global c", "per-keypoint c_k", "per-keypoint-axis c_kd")
    ratios: dict[str, list[np.ndarray]] = {name: [] for name in names_v}  # each (M, 2)
    for f in (0, 1):
        fit, score = labelled & (fold != f)[:, None], labelled & (fold == f)[:, None]
        c_k = fit_sigma_scale(residual, sigma, fit)  # (K, 2)
        c_all = fit_sigma_scale(
            residual.reshape(-1, 1, 2), sigma.reshape(-1, 1, 2), fit.reshape(-1, 1)
        )[0]
        c_kd = fit_sigma_scale(residual, sigma, fit, per_axis=True)
        z = np.abs(residual) / sigma  # (N, K, 2)
        ratios["raw"].append(z[score])
        ratios["global c"].append((z / c_all)[score])
        ratios["per-keypoint c_k"].append((z / c_k)[score])
        ratios["per-keypoint-axis c_kd"].append((z / c_kd)[score])
    pooled = {name: np.concatenate(parts) for name, parts in ratios.items()}  # (M, 2)
    observed = {name: observed_within(r.ravel(), RELIABILITY_LEVELS) for name, r in pooled.items()}
    levels = np.asarray(RELIABILITY_LEVELS)
    gap = {name: float(np.abs(obs - levels).mean()) for name, obs in observed.items()}
    gap_axes = {
        name: float(
            np.mean([np.abs(observed_within(r[:, d], RELIABILITY_LEVELS) - levels) for d in (0, 1)])
        )
        for name, r in pooled.items()
    }

    c_full = fit_sigma_scale(residual, sigma, labelled)[:, 0]
    c_axes = fit_sigma_scale(residual, sigma, labelled, per_axis=True)
    saved = state.get("sigma_calibration")
    region = region_from_criterion(getattr(model, "criterion", None), REPORT_LEVELS)
    region_cov = {}
    if region is not None:
        for p in REPORT_LEVELS:
            frac, se = coverage(region.contains(residual / sigma, p)[labelled])
            region_cov[str(p)] = (frac, se)

    names = val.skeleton.keypoint_names
    steps = state.get("step")
    print(f"checkpoint {args.checkpoint} (step {steps}); {int(labelled.sum())} labelled keypoints "
          f"of {len(residual)} instances, truth: {'clean' if clean else 'labels'}")  # fmt: skip
    print("mean |observed - p| over p = 0.05..0.95 (held out, 2-fold by image): pooled, per axis")
    for name, g in gap.items():
        print(f"  {name:24s} {g:.3f}  {gap_axes[name]:.3f}")
    print("observed fraction within t_p b at p = 0.5, 0.8, 0.9, 0.95:")
    at = [RELIABILITY_LEVELS.index(p) for p in REPORT_LEVELS]
    for name, obs in observed.items():
        print(f"  {name:24s} " + "  ".join(f"{obs[i]:.3f}" for i in at))
    print("c_k on the whole validation set (per axis: c_x, c_y):")
    for i in range(k):
        print(f"  {names[i]:16s} c={c_full[i]:.3f}  c_x={c_axes[i, 0]:.3f} c_y={c_axes[i, 1]:.3f}")
    ratio_xy = c_axes[:, 1] / c_axes[:, 0]
    print(f"c_y / c_x over keypoints: median {np.median(ratio_xy):.3f}, "
          f"range {ratio_xy.min():.3f}-{ratio_xy.max():.3f}")  # fmt: skip
    if saved is not None:
        diff = np.abs(np.asarray(saved["scale"])[:, 0] - c_full).max()
        print(f"the checkpoint's saved c_k: max |difference| to this fit {diff:.2e}")
    else:
        print("the checkpoint holds no sigma_calibration (saved before posereg fitted one)")
    if region_cov:
        print(f"flow region ({region.family}) coverage: " + ", ".join(
            f"p={p}: {f:.3f} +- {se:.3f}" for p, (f, se) in region_cov.items()))  # fmt: skip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated Laplace")
    styles = {"raw": "tab:red", "global c": "tab:orange", "per-keypoint c_k": "tab:blue",
              "per-keypoint-axis c_kd": "tab:green"}  # fmt: skip
    for name, obs in observed.items():
        ax.plot(levels, obs, marker="o", ms=3, color=styles[name],
                label=f"{name} (gap {gap[name]:.3f})")  # fmt: skip
    ax.set(xlabel="Laplace's predicted fraction p = 1 - exp(-t)",
           ylabel="observed fraction of |r_d| <= t b", xlim=(0, 1), ylim=(0, 1),
           title="reliability of sigma as a Laplace scale b (held out)")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")
    bx.barh(range(k), c_full, color="tab:blue")
    bx.axvline(1.0, color="tab:red", lw=1, ls="--")
    bx.set_yticks(range(k), names, fontsize=7)
    bx.invert_yaxis()
    bx.set(xlabel="c_k (calibrated sigma = c_k x sigma)", title="per-keypoint scale")
    fig.suptitle(f"{Path(args.checkpoint).parent.name}: {cfg.model.loss} "
                 f"({cfg.model.loss_options.get('convention', '')}), step {steps}", fontsize=9)  # fmt: skip
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"-> {out}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "checkpoint": str(args.checkpoint), "step": steps, "levels": list(levels),
            "observed": {n: o.tolist() for n, o in observed.items()}, "gap": gap,
            "gap_per_axis": gap_axes,
            "c_k": dict(zip(names, c_full.tolist(), strict=True)),
            "c_y_over_c_x": ratio_xy.tolist(), "region_coverage": region_cov,
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
