"""The run report: metrics.json, learning curves and a grid of validation predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posereg.config import Config
from posereg.data.dataset import IMAGENET_MEAN, IMAGENET_STD, TopDownDataset
from posereg.data.transforms import affine_points
from posereg.uncertainty import (
    DRAW_LEVEL,
    FAST_NUM_SAMPLES,
    PredictiveRegion,
    region_from_criterion,
)
from posereg.viz import draw_pose, tile

__all__ = ["write_report", "plot_curves", "draw_validation_grid", "format_summary"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


#: curves.png marks each logged step with a dot when a run logged at most this many steps.
CURVE_MARKERS_UP_TO = 100


def plot_curves(run_dir: Path) -> Path | None:
    """curves.png: training loss and learning rate per step, validation AP per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = _read_csv(run_dir / "train_log.csv")
    val = _read_csv(run_dir / "val_log.csv")
    if not train:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [int(r["step"]) for r in train]
    # a line through one point draws nothing: a short run's points are drawn as markers too
    marker = "o" if len(steps) <= CURVE_MARKERS_UP_TO else None
    axes[0].plot(steps, [float(r["loss"]) for r in train], marker=marker, markersize=4)
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(steps, [float(r["lr"]) for r in train], marker=marker, markersize=4)
    axes[1].set(title="learning rate", xlabel="step")
    if val:
        for key in ("AP", "AP_clean", "PCK"):
            ys = [float(r[key]) if r.get(key) not in ("", None) else np.nan for r in val]
            if not all(np.isnan(ys)):
                axes[2].plot([int(r["epoch"]) for r in val], ys, marker="o", label=key)
        axes[2].legend()
    axes[2].set(title="validation", xlabel="epoch")
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


# val_predictions.png layout: a legend band on top, then one tile per instance (left the truth,
# right the prediction, SEPARATOR pixels apart) arranged GRID_COLUMNS tiles per row by viz.tile.
GRID_MIN_PANEL_HEIGHT = 256  # crops are enlarged by a whole factor to at least this height
GRID_COLUMNS = 4
GRID_PAD = 4
GRID_SEPARATOR = 2
GRID_LEGEND_HEIGHT = 44
TRUTH_COLOR = (255, 0, 255)  # BGR magenta: no confidence colour (red-yellow-green) is close
TRUTH_LIMB_COLOR = (230, 230, 230)


def grid_factor(input_size: tuple[int, int]) -> int:
    """The whole enlargement factor of a (H, W) crop in val_predictions.png (>= 1)."""
    return max(1, -(-GRID_MIN_PANEL_HEIGHT // int(input_size[0])))


def enlarge_points(xy: np.ndarray, factor: int) -> np.ndarray:
    """Crop pixel coordinates (..., 2) -> the enlarged crop's (pixel centres stay centres)."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) * factor - 0.5


def draw_validation_grid(
    dataset: TopDownDataset,
    predictions,
    out: Path,
    num: int = 16,
    region: PredictiveRegion | None = None,
    level: float = DRAW_LEVEL,
) -> Path | None:
    """val_predictions.png: evaluation crops, enlarged, the truth beside the prediction.

    Each instance is two panels of its crop enlarged ``grid_factor`` times (at least 256 px
    high): left the truth (the clean truth when the file has it, else the labels; labelled
    keypoints in magenta), right the prediction (keypoints coloured by confidence, red 0 to
    green 1, and for losses with a density the predictive ``level``-region, the ellipse of
    semi-axes r_p x sigma, :mod:`posereg.uncertainty`).
    A legend band on top says so.

    Arguments:
        dataset: the evaluation dataset (no augmentation).
        predictions: :class:`posereg.engine.evaluate.Predictions` in dataset order.
        out: the PNG to write.
        num: instances drawn, spread evenly over the dataset.
        region: the model's predictive regions (:func:`posereg.uncertainty.region_from_criterion`);
            None: no ellipses.
        level: the probability p of the drawn region.
    """
    if predictions is None or num <= 0 or len(dataset) == 0:
        return None
    idx = np.linspace(0, len(dataset) - 1, min(num, len(dataset))).round().astype(int)
    h, w = dataset.input_size
    f = grid_factor(dataset.input_size)
    thickness = max(1, f // 2)
    mean = np.array(IMAGENET_MEAN) * 255
    std = np.array(IMAGENET_STD) * 255
    tiles = []
    truth_kind = "labels"
    for i in idx:
        sample = dataset[int(i)]
        rgb = sample.image.numpy().transpose(1, 2, 0) * std + mean
        bgr = np.clip(rgb[..., ::-1] + 0.5, 0, 255).astype(np.uint8)
        big = cv2.resize(bgr, (w * f, h * f), interpolation=cv2.INTER_LINEAR)
        truth = sample.keypoints if sample.keypoints_clean is None else sample.keypoints_clean
        truth_kind = "labels" if sample.keypoints_clean is None else "clean truth"
        matrix = dataset.crop_matrix(sample.center, sample.scale, sample.rotation, sample.flipped)
        truth_xy = enlarge_points(affine_points(truth[:, :2], matrix), f)
        truth_xy[truth[:, 2] <= 0] = np.nan  # unlabelled: not drawn
        pred_xy = enlarge_points((predictions.normalized[i] + 0.5) * np.array([w, h]), f)
        axes = None  # the region's semi-axes in enlarged crop px
        if predictions.sigma is not None and region is not None:
            axes = region.semi_axes(
                predictions.sigma[i] / sample.scale * np.array([w, h]) * f, level
            )
        left = draw_pose(
            big, truth_xy, dataset.skeleton, thickness=thickness,
            limb_color=TRUTH_LIMB_COLOR, point_color=TRUTH_COLOR,
        )  # fmt: skip
        right = draw_pose(
            big, pred_xy, dataset.skeleton, predictions.confidence[i], axes,
            thickness=thickness,
        )  # fmt: skip
        gap = np.full((h * f, GRID_SEPARATOR, 3), 30, dtype=np.uint8)
        tiles.append(np.concatenate([left, gap, right], axis=1))
    grid = tile(tiles, columns=min(GRID_COLUMNS, len(tiles)), pad=GRID_PAD)
    legend = np.full((GRID_LEGEND_HEIGHT, grid.shape[1], 3), 30, dtype=np.uint8)
    lines = (
        f"left: {truth_kind} (magenta)   right: prediction",
        "dot colour = confidence (red 0 - green 1)"
        + (
            ""
            if predictions.sigma is None or region is None
            else f", ellipse = {level:.0%} region ({region.radius(level):.2f} x sigma)"
        ),
    )
    for n, text in enumerate(lines):
        cv2.putText(
            legend, text, (GRID_PAD, 17 + 20 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
            (235, 235, 235), 1, cv2.LINE_AA,
        )  # fmt: skip
    if not cv2.imwrite(str(out), np.concatenate([legend, grid], axis=0)):
        raise OSError(f"cannot write {out}")
    return out


def write_report(
    run_dir: Path, cfg: Config, result: Any, evaluation: Any, dataset: TopDownDataset, model: Any
) -> None:
    """Write metrics.json, curves.png and val_predictions.png into ``run_dir``."""
    metrics = {
        "name": cfg.name,
        "steps": result.steps,
        "epochs": result.epochs,
        "images_per_second": result.images_per_second,
        "wall_time_s": result.wall_time_s,
        "bad_steps": result.bad_steps,
        "skipped_unreadable": result.skipped_unreadable,
        "val": result.metrics,
    }
    (run_dir / "metrics.json").write_text(
        json.dumps(metrics, indent=2, sort_keys=True, default=float)
    )
    plot_curves(run_dir)
    criterion = getattr(getattr(model, "module", model), "criterion", None)  # DDP: .module
    region = region_from_criterion(criterion, (DRAW_LEVEL,), num_samples=FAST_NUM_SAMPLES)
    draw_validation_grid(
        dataset, evaluation.predictions, run_dir / "val_predictions.png", cfg.eval.num_vis, region
    )


def format_summary(result: Any) -> str:
    """The end-of-run summary: the model next to the mean-pose baseline."""
    m = result.metrics
    lines = [
        f"{result.run_dir.name}: {result.epochs} epochs, {result.steps} steps, "
        f"{result.images_per_second:.0f} img/s, {result.wall_time_s / 60:.1f} min",
        f"{'':26}{'model':>10}{'mean pose':>12}",
    ]
    rows = [
        ("AP (noisy labels)", "AP"),
        ("AP (clean truth)", "AP_clean"),
        (f"PCK@0.1 ({m.get('truth', 'labels')})", "PCK"),
        ("error / sqrt(area)", "error"),
    ]
    for label, key in rows:
        if key in m:
            base = m.get(f"baseline_{key}")
            base_text = f"{base:>12.4f}" if isinstance(base, float) else f"{'-':>12}"
            lines.append(f"{label:<26}{m[key]:>10.4f}{base_text}")
    if "error_ratio" in m:
        lines.append(f"error ratio model / baseline: {m['error_ratio']:.3f}")
    for key in ("PCKh_0.5", "PCKh_0.1", "PCKh_AUC"):
        if key in m:
            lines.append(f"{key}: {m[key]:.4f}")
    if "MPJPE" in m:  # single-stage 3D (data.depth)
        lines.append(f"MPJPE {m['MPJPE']:.1f} mm, PA-MPJPE {m['PA-MPJPE']:.1f} mm (root-relative)")
    lines.append(f"run directory: {result.run_dir} (metrics.json, curves.png, val_predictions.png)")
    return "\n".join(lines)
