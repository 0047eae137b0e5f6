"""The bench's evaluation of one finished run: the numbers of ``bench_result.json`` and the arrays
of ``predictions.npz`` (docs/bench.md says what each number means).

The model is loaded from the run's ``best.pt`` (else ``last.pt``) through
:func:`posereg.models.build.model_from_checkpoint` and predicts the synthetic validation set
with the run's own config (flip test included); the COCO-format numbers come from the shared
evaluation (:func:`posereg.engine.evaluate.evaluate_predictions`, benchmark ``synthetic``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posereg.engine.builders import build_datasets
from posereg.engine.evaluate import (
    coco_results,
    evaluate_predictions,
    kept_instances,
    predict_dataset,
)
from posereg.metrics import calibration, evaluate_coco, instance_score, oks
from posereg.models.build import model_from_checkpoint
from posereg.runtime import is_onnx, load_onnx_model
from posereg.uncertainty import (
    RELIABILITY_LEVELS,
    REPORT_LEVELS,
    PredictiveRegion,
    region_from_criterion,
)

__all__ = ["MISS_THRESHOLD", "RunMetrics", "evaluate_run"]


#: A keypoint misses when its error against the clean truth exceeds this fraction of sqrt(area).
MISS_THRESHOLD = 0.1


@dataclass
class RunMetrics:
    """The metrics of ``bench_result.json`` (all against the clean truth unless named noisy).

    Attributes:
        ap_noisy: COCO OKS AP against the noisy labels (what a COCO-style benchmark reports).
        ap_clean: the same predictions and scores against the clean truth.
        pck_0_1: fraction of visible keypoints within 0.1 sqrt(area) of the truth.
        err_sqrt_area: mean keypoint error / sqrt(area).
        ap_clean_const_score: AP against the clean truth with every instance scored 1 (the
            location alone; the gap to ``ap_clean`` is what the instance score adds).
        conf_oks_pearson, conf_oks_spearman: correlation of the instance score with the OKS of
            the prediction against the truth (paper Tab. 6).
        kpt_auroc_miss: AUROC of ``-keypoint confidence`` for flagging misses (error >
            :data:`MISS_THRESHOLD` sqrt(area)): 1 ranks every miss below every hit, 0.5 is chance.
        coverage: for p in REPORT_LEVELS, the fraction of truth points inside the predicted
            p-region (null for models without a density).
        reliability: [[p, observed fraction]] for p in RELIABILITY_LEVELS (null without a density).
    """

    ap_noisy: float
    ap_clean: float
    pck_0_1: float
    err_sqrt_area: float
    ap_clean_const_score: float
    conf_oks_pearson: float
    conf_oks_spearman: float
    kpt_auroc_miss: float
    coverage: dict[str, float] | None
    reliability: list[list[float]] | None

    def to_json(self) -> dict[str, Any]:
        """The contract's ``metrics`` object (NaN written as null)."""

        def num(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {
            "ap_noisy": num(self.ap_noisy),
            "ap_clean": num(self.ap_clean),
            "pck_0.1": num(self.pck_0_1),
            "err_sqrt_area": num(self.err_sqrt_area),
            "conf_oks_pearson": num(self.conf_oks_pearson),
            "conf_oks_spearman": num(self.conf_oks_spearman),
            "kpt_auroc_miss": num(self.kpt_auroc_miss),
            "coverage": None
            if self.coverage is None
            else {k: num(v) for k, v in self.coverage.items()},
            "reliability": self.reliability,
            "ap_clean_const_score": num(self.ap_clean_const_score),
        }


def _region(model: torch.nn.Module) -> PredictiveRegion | None:
    """The calibrated predictive region of the model's loss (None: no density, e.g. L1); an
    ONNX export's is the one in its metadata (:mod:`posereg.runtime`)."""
    exported = getattr(model, "predictive_region", None)
    if exported is not None:
        return exported
    criterion = getattr(model, "criterion", None)
    return None if criterion is None else region_from_criterion(criterion)


def _trains_sigma(model: torch.nn.Module) -> bool:
    """Whether the model's loss trains sigma (L1 and L2 ignore it: its sigma is noise)."""
    from posereg.losses import L1Loss, L2Loss

    criterion = getattr(model, "criterion", None)
    return criterion is not None and not isinstance(criterion, L1Loss | L2Loss)


def checkpoint_of(run_dir: Path) -> Path:
    """``best.pt`` of a run, else ``last.pt``; FileNotFoundError naming the folder."""
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no best.pt or last.pt to evaluate")


@torch.no_grad()
def evaluate_run(
    run_dir: Path, npz_path: Path | None = None, checkpoint: Path | None = None
) -> RunMetrics:
    """Evaluate a finished run on its synthetic validation set; writes ``predictions.npz``.

    Arguments:
        run_dir: the run folder (``best.pt`` or ``last.pt``, ``config.yaml``).
        npz_path: where to write the predictions (default ``run_dir/predictions.npz``).
        checkpoint: evaluate this model instead of the run's: a checkpoint, or an ONNX export
            run by ONNX Runtime (:mod:`posereg.runtime`, its own config and regions).
    """
    path = checkpoint if checkpoint is not None else checkpoint_of(run_dir)
    load = load_onnx_model if is_onnx(path) else model_from_checkpoint
    model, cfg, _ = load(path)
    device = torch.device("cpu")
    model.to(device).eval()
    _, val = build_datasets(cfg, train_split=False)
    preds = predict_dataset(model, val, device, cfg.eval.batch_size, cfg.eval.flip_test)
    result = evaluate_predictions(preds, val, cfg)
    table = val.table
    if table.keypoints_clean is None:
        raise ValueError(f"{cfg.data.val_ann}: no keypoints_clean; the bench needs a synthetic set")
    keep = kept_instances(preds, val)
    skel = val.skeleton

    # AP against the clean truth with a constant instance score: location only
    entries = coco_results(preds, val, cfg, with_areas=True)
    const = [{**e, "score": 1.0} for e in entries]
    ap_const = evaluate_coco(str(cfg.data.val_ann), const, sigmas=skel.sigmas, use_clean=True).ap

    truth = table.keypoints_clean[keep]  # (N, K, 3)
    mu = preds.keypoints[keep]  # (N, K, 2) px
    conf = preds.confidence[keep]  # (N, K)
    visible = truth[..., 2] > 0  # (N, K)
    area = table.areas[keep]  # (N,)
    score = instance_score(conf, None, cfg.eval.score_rule)  # (N,) as ranked by COCO AP
    oks_truth = np.array(
        [
            oks(t[:, :2], m[None], a, skel.sigmas, v)[0]
            for t, m, a, v in zip(truth, mu, area, visible, strict=True)
        ]
    )  # (N,)
    err = np.linalg.norm(mu - truth[..., :2], axis=-1) / np.sqrt(np.maximum(area, 1e-6))[:, None]
    miss = err > MISS_THRESHOLD  # (N, K)

    has_pose = visible.any(1)
    pearson = calibration.pearson(score[has_pose], oks_truth[has_pose])
    spearman = calibration.spearman(score[has_pose], oks_truth[has_pose])
    auroc = calibration.auroc(-conf[visible], miss[visible])

    coverage = reliability = None
    region = _region(model)
    if region is not None and preds.sigma is not None:
        sigma = preds.sigma[keep]  # (N, K, 2) px
        bar_mu = (truth[..., :2] - mu) / np.maximum(sigma, 1e-9)  # (N, K, 2)
        pts = bar_mu[visible]  # (M, 2)
        coverage = {
            f"{p:g}": calibration.coverage(region.contains(pts, p))[0] for p in REPORT_LEVELS
        }
        reliability = [
            [float(p), float(calibration.coverage(region.contains(pts, p))[0])]
            for p in RELIABILITY_LEVELS
        ]

    if npz_path is None:
        npz_path = run_dir / "predictions.npz"
    arrays: dict[str, np.ndarray] = {
        "keypoints": mu,
        "keypoint_conf": conf,
        "instance_score": score,
        "truth_clean": truth[..., :2],
        "visible": visible,
        "area": area,
        "image_id": table.image_ids[table.image_index][keep],
        "ann_id": table.ann_ids[keep],
    }
    if preds.sigma is not None and _trains_sigma(model):
        arrays["sigma"] = preds.sigma[keep]
    tmp = npz_path.with_name(f".{npz_path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(npz_path)

    labels = result.coco.get("labels")
    return RunMetrics(
        ap_noisy=labels.ap if labels is not None else float("nan"),
        ap_clean=result.primary,
        pck_0_1=result.pck,
        err_sqrt_area=result.error,
        ap_clean_const_score=ap_const,
        conf_oks_pearson=pearson,
        conf_oks_spearman=spearman,
        kpt_auroc_miss=auroc,
        coverage=coverage,
        reliability=reliability,
    )
