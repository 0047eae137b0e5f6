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
from posereg.viz import draw_pose, tile

__all__ = ["write_report", "plot_curves", "draw_validation_grid", "format_summary"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


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
    axes[0].plot(steps, [float(r["loss"]) for r in train])
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(steps, [float(r["lr"]) for r in train])
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


def draw_validation_grid(
    dataset: TopDownDataset, predictions, out: Path, num: int = 16, sigma_scale: float = 1.0
) -> Path | None:
    """val_predictions.png: evaluation crops with predicted skeletons, confidences and sigma ellipses.

    Ellipse half-axes are ``sigma_scale`` x sigma (the evaluation's ``sigma_calibration``).
    """
    if predictions is None or num <= 0 or len(dataset) == 0:
        return None
    idx = np.linspace(0, len(dataset) - 1, min(num, len(dataset))).round().astype(int)
    h, w = dataset.input_size
    mean = np.array(IMAGENET_MEAN) * 255
    std = np.array(IMAGENET_STD) * 255
    crops = []
    for i in idx:
        sample = dataset[int(i)]
        rgb = sample.image.numpy().transpose(1, 2, 0) * std + mean
        bgr = np.ascontiguousarray(np.clip(rgb[..., ::-1], 0, 255).astype(np.uint8))
        kp = (predictions.normalized[i] + 0.5) * np.array([w, h])  # crop pixels
        sigma = predictions.sigma[i] / sample.scale * np.array([w, h])
        crops.append(
            draw_pose(
                bgr,
                kp,
                dataset.skeleton,
                predictions.confidence[i],
                sigma,
                sigma_scale,
                thickness=1,
            )
        )
    cv2.imwrite(str(out), tile(crops, columns=min(8, len(crops))))
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
    scale = evaluation.sigma_calibration if np.isfinite(evaluation.sigma_calibration) else 1.0
    draw_validation_grid(
        dataset, evaluation.predictions, run_dir / "val_predictions.png", cfg.eval.num_vis, scale
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
    lines.append(f"run directory: {result.run_dir} (metrics.json, curves.png, val_predictions.png)")
    return "\n".join(lines)
