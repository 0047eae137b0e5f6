"""Evaluation of a top-down model on a TopDownDataset: COCO AP (labels and clean truth), PCK, errors.

One :class:`Benchmark` object per kind of evaluation data (COCO-format labels, synthetic data with
its clean truth, MPII) says which :class:`Metric` is primary (what picks ``best.pt``, what a
comparison reports first) and whether lower is better; training validation, ``posereg eval`` and
``posereg bench`` all get a typed :class:`EvalResult` from :func:`evaluate_predictions` and read
its primary value through ``result.benchmark``. Single-stage 3D (:data:`POSE3D_MPJPE`, lower is
better) computes its numbers in :mod:`posereg.engine.eval3d`.

Also the mean-pose baseline the main job is compared against: the training set's mean
crop-normalized pose placed in every evaluation box.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from posereg.config import Config, ConfigError
from posereg.data.dataset import TopDownDataset, collate
from posereg.data.depth import DEPTH_RANGE_MM, root_joints
from posereg.data.transforms import crop_to_image
from posereg.decode import decode_crops
from posereg.engine import distributed as D
from posereg.engine.builders import build_datasets
from posereg.engine.eval3d import evaluate_depth
from posereg.metrics import (
    COCOKeypointResult,
    evaluate_coco,
    make_coco_predictions,
    oks_nms_per_image,
    pck,
    pckh,
)
from posereg.metrics.mpjpe import Pose3DMetrics
from posereg.models.build import model_from_checkpoint
from posereg.runtime import is_onnx, load_onnx_model
from posereg.uncertainty import SigmaCalibration

logger = logging.getLogger("posereg.eval")

__all__ = [
    "Metric",
    "Benchmark",
    "COCO_AP",
    "SYNTHETIC_AP",
    "MPII_PCKH",
    "MPJPE",
    "benchmark_for",
    "EvalResult",
    "Predictions",
    "predict_dataset",
    "evaluate",
    "mean_pose",
    "mean_pose_predictions",
    "evaluate_predictions",
    "kept_instances",
    "coco_results",
    "run_evaluation",
    "primary",
    "primary_metric",
    "primary_score",
    "METRIC_NAMES",
    "LOWER_IS_BETTER",
]


@dataclass
class Predictions:
    """Image-space predictions for every instance of a dataset, in dataset order.

    Attributes:
        keypoints: (N, K, 2) image pixels.
        sigma: (N, K, 2) sigma in image pixels (sigma_hat x crop size), for heads that predict
            one (regression, integral_rle); None otherwise.
        confidence: (N, K) the head's per-keypoint score (``1 - mean_d sigma_hat``, Eq. 9, for
            heads with sigma; the heatmap maximum for the heatmap head).
        normalized: (N, K, 2) crop-normalized predictions.
        valid: (N,) False where the image was unreadable (``on_bad_image="skip"``): those rows
            are zeros and no metric uses them. None: all valid.
        bad_files: the unreadable images' paths, one per invalid instance.
        depth: (N, K) a 3D model's (``data.depth``) predicted root-relative depth, mm
            (:func:`posereg.decode.root_relative_depth`); None for 2D models.
    """

    keypoints: np.ndarray
    sigma: np.ndarray | None
    confidence: np.ndarray
    normalized: np.ndarray
    valid: np.ndarray | None = None
    bad_files: list[str] = field(default_factory=list)
    depth: np.ndarray | None = None

    @property
    def valid_mask(self) -> np.ndarray:
        """(N,) bool, all True when ``valid`` is None."""
        n = len(self.keypoints)
        return np.ones(n, dtype=bool) if self.valid is None else self.valid.astype(bool)


@dataclass(frozen=True)
class Metric:
    """One number of an evaluation, and which way is better.

    Arguments:
        name: the name :meth:`EvalResult.summary` reports it under (``eval.primary_metric``).
        higher_is_better: False for errors (MPJPE, ``error``): ``best.pt`` keeps the lowest.
    """

    name: str
    higher_is_better: bool = True

    def score(self, value: float) -> float:
        """``value`` as a score where higher is better; NaN (not measured) scores -inf."""
        value = float(value)
        if math.isnan(value):
            return -math.inf
        return value if self.higher_is_better else -value


@dataclass(frozen=True)
class Benchmark:
    """An evaluation protocol: what data it reads and which metric is primary.

    Arguments:
        name: ``coco`` (COCO-format labels: COCO, custom sets), ``synthetic`` (posereg.synth sets,
            which carry the clean truth beside the noisy labels) or ``mpii``.
        primary: the metric that picks ``best.pt`` and that comparisons report first.
        read: the primary metric's value in an :class:`EvalResult` (NaN when not measured).
    """

    name: str
    primary: Metric
    read: Callable[[EvalResult], float]

    def primary_value(self, result: EvalResult) -> float:
        """The primary metric of ``result`` (NaN when this evaluation did not measure it)."""
        return float(self.read(result))


def _coco_ap(truth: str) -> Callable[[EvalResult], float]:
    def read(result: EvalResult) -> float:
        r = result.coco.get(truth)
        return math.nan if r is None else r.ap

    return read


#: COCO-format data (COCO val2017, custom sets): OKS AP against the labels.
COCO_AP = Benchmark("coco", Metric("AP"), _coco_ap("labels"))
#: Synthetic data (posereg.synth): OKS AP against the clean truth, not the noisy labels.
SYNTHETIC_AP = Benchmark("synthetic", Metric("AP_clean"), _coco_ap("clean"))
#: MPII: PCKh@0.5.
MPII_PCKH = Benchmark("mpii", Metric("PCKh_0.5"), lambda r: r.pckh.get("0.5", math.nan))
#: The 3D benchmarks' primary (posereg.metrics.mpjpe, millimetres; lower is better).
MPJPE = Metric("MPJPE", higher_is_better=False)
#: Single-stage 3D (``data.depth``): root-relative MPJPE of the back-projected joints (eval3d).
POSE3D_MPJPE = Benchmark(
    "pose3d", MPJPE, lambda r: math.nan if r.pose3d is None else r.pose3d.mpjpe
)


def benchmark_for(cfg: Config, dataset: TopDownDataset | None = None) -> Benchmark:
    """The benchmark of ``cfg``'s validation data: MPII for ``data.format: mpii``; synthetic when
    ``dataset`` carries the clean truth (a posereg.synth set); COCO otherwise (and when the
    dataset is not known yet); single-stage 3D for ``data.depth``."""
    if cfg.data.depth:
        return POSE3D_MPJPE
    if cfg.data.format == "mpii":
        return MPII_PCKH
    if dataset is not None and dataset.table.keypoints_clean is not None:
        return SYNTHETIC_AP
    return COCO_AP


@dataclass
class EvalResult:
    """Numbers of one evaluation; ``summary()`` flattens them for logs and metrics.json."""

    coco: dict[str, COCOKeypointResult] = field(default_factory=dict)  # "labels", "clean"
    pck: float = float("nan")  # PCK@0.1 of sqrt(area), against the clean truth when known
    pckh: dict[str, float] = field(default_factory=dict)  # MPII-style, when the skeleton has a head
    error: float = float("nan")  # mean keypoint error / sqrt(area)
    truth: str = "labels"  # what `pck` and `error` were measured against
    num_instances: int = 0  # instances the metrics count (unreadable ones are left out)
    num_unreadable: int = 0  # instances left out because their image was unreadable
    unreadable_files: list[str] = field(default_factory=list)  # their images, sorted
    # median |error| / sigma over labelled keypoints and both axes: what one sigma means in
    # pixels. RLE's sigma is a relative scale (the flow models the residual's shape and
    # spread), so drawings multiply sigma by this to show the typical error.
    sigma_calibration: float = float("nan")
    # per keypoint and axis c_kd of the calibrated sigma c x sigma (Laplace MLE on these residuals,
    # posereg.uncertainty.SigmaCalibration); saved in checkpoints; None without sigma or truth
    sigma_fit: SigmaCalibration | None = None
    predictions: Predictions | None = None
    # the COCO results that were scored (after OKS-NMS with detection boxes); what eval --out writes
    entries: list[dict] | None = None
    benchmark: Benchmark = COCO_AP  # which protocol this is, and its primary metric

    @property
    def primary(self) -> float:
        """The value of the benchmark's primary metric (NaN when not measured)."""
        return self.benchmark.primary_value(self)

    pose3d: Pose3DMetrics | None = None  # single-stage 3D (data.depth): MPJPE, PA-MPJPE, mm

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_instances": self.num_instances, "truth": self.truth}
        if self.num_unreadable:
            out["num_unreadable"] = self.num_unreadable
        if np.isfinite(self.sigma_calibration):
            out["sigma_calibration"] = self.sigma_calibration
        if "labels" in self.coco:
            labels = self.coco["labels"]
            out.update(AP=labels.ap, AP50=labels.ap50, AP75=labels.ap75, AR=labels.ar)
        if "clean" in self.coco:
            out.update(AP_clean=self.coco["clean"].ap, AP50_clean=self.coco["clean"].ap50)
        out["PCK"] = self.pck
        out["error"] = self.error
        out.update({f"PCKh_{k}": v for k, v in self.pckh.items()})
        if self.pose3d is not None:
            out.update({k: v for k, v in self.pose3d.summary().items() if k != "num_poses"})
        return out


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset: TopDownDataset,
    device: torch.device,
    batch_size: int = 64,
    flip_test: bool = True,
    workers: int = 0,
    info: D.DistInfo | None = None,
) -> Predictions:
    """Run ``model.predict`` on every instance (sharded across ranks, gathered on all) and map
    it to image space with :func:`posereg.decode.decode_crops` (as :class:`posereg.predict.Predictor`).

    Instances whose image was unreadable (``on_bad_image="skip"``) get zero rows and
    ``valid=False``.
    """
    info = info or D.DistInfo()
    was_training = model.training
    model.eval()
    sampler = D.EpochBatchSampler(
        len(dataset),
        batch_size,
        rank=info.rank,
        world_size=info.world_size,
        shuffle=False,
        drop_last=False,
    )
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate)
    parts: list[tuple[np.ndarray, ...]] = []
    bad_files: list[str] = []
    has_sigma = False
    indices = [i for batch in sampler for i in batch]
    three_d = getattr(getattr(model, "head", None), "dim", 2) == 3
    root = root_joints(dataset.skeleton) if three_d else None
    depth_range = dataset.depth_range if dataset.depth_range is not None else DEPTH_RANGE_MM
    for batch in loader:
        dec = model.predict(batch.image.to(device), flip_test, dataset.skeleton.flip_index)
        poses = decode_crops(dec, batch.center, batch.scale, root, depth_range)
        has_sigma = poses.sigma is not None
        sigma = poses.sigma if has_sigma else np.zeros_like(poses.normalized)
        # (B, K) root-relative depth of a 3D model, mm (zeros for 2D ones)
        depth = poses.depth if poses.depth is not None else np.zeros_like(poses.confidence)
        parts.append(
            (poses.normalized, poses.keypoints, sigma, poses.confidence, batch.valid, depth)
        )
        bad_files += batch.bad_files
    model.train(was_training)
    local = [np.concatenate(x) for x in zip(*parts, strict=True)] if parts else None
    gathered = D.all_gather_objects((indices, local, bad_files, has_sigma), info)
    k = dataset.skeleton.num_keypoints
    normalized = np.zeros((len(dataset), k, 2))
    keypoints, sig, conf = (
        np.zeros((len(dataset), k, 2)),
        np.zeros((len(dataset), k, 2)),
        np.zeros((len(dataset), k)),
    )
    valid = np.ones(len(dataset), dtype=bool)
    depth = np.zeros((len(dataset), k))
    all_bad: list[str] = []
    with_sigma = False
    for idx, arrays, files, rank_has_sigma in gathered:  # type: ignore[misc]
        all_bad += files
        with_sigma |= rank_has_sigma
        if arrays is None:
            continue
        normalized[idx], keypoints[idx], sig[idx], conf[idx], valid[idx], depth[idx] = arrays
    invalid = ~valid
    for a in (normalized, keypoints, sig, conf, depth):
        a[invalid] = 0.0
    return Predictions(
        keypoints, sig if with_sigma else None, conf, normalized, valid, all_bad,
        depth if three_d else None,
    )  # fmt: skip


def mean_pose(dataset: TopDownDataset) -> np.ndarray:
    """The mean crop-normalized pose (K, 2) over labelled keypoints (the baseline's prediction)."""
    kp = dataset.table.keypoints  # (N, K, 3)
    rel = (kp[..., :2] - dataset.centers[:, None, :]) / dataset.scales[:, None, :]
    labelled = kp[..., 2] > 0
    counts = labelled.sum(0)
    total = np.where(labelled[..., None], rel, 0.0).sum(0)
    return np.where(counts[:, None] > 0, total / np.maximum(counts, 1)[:, None], 0.0)


def mean_pose_predictions(
    pose: np.ndarray, dataset: TopDownDataset, like: Predictions | None = None
) -> Predictions:
    """The baseline: ``pose`` (K, 2) crop-normalized, placed in every box of ``dataset``.

    Its sigma is the spread a constant prediction implies (set to 0.5 of the crop), so its
    confidence is the same for every keypoint and instance. ``like``: the model's predictions,
    whose unreadable instances the baseline leaves out too, so both count the same instances.
    """
    n = len(dataset)
    normalized = np.broadcast_to(pose, (n, *pose.shape)).copy()
    keypoints = crop_to_image(normalized, dataset.centers, dataset.scales)
    sigma = 0.5 * np.broadcast_to(dataset.scales[:, None, :], keypoints.shape).copy()
    return Predictions(
        keypoints,
        sigma,
        np.full(pose.shape[:1], 0.5)[None].repeat(n, 0),
        normalized,
        None if like is None else like.valid,
        [] if like is None else list(like.bad_files),
    )


def kept_instances(preds: Predictions, dataset: TopDownDataset) -> np.ndarray:
    """(N,) bool: the instances the metrics count, i.e. not on an image that was unreadable."""
    table = dataset.table
    keep = preds.valid_mask
    if not keep.all():  # every instance of an unreadable image goes, whatever its crop size
        keep = keep & ~np.isin(table.image_index, table.image_index[~keep])
    return keep


def coco_results(
    preds: Predictions, dataset: TopDownDataset, cfg: Config, with_areas: bool = False
) -> list[dict]:
    """COCO results entries of the instances :func:`kept_instances` keeps (none for unreadable images).

    Written by :func:`posereg.metrics.make_coco_predictions`, the writer of ``posereg predict``
    too, at full precision (``decimals=None``: AP is that of the unrounded predictions). Each
    entry also carries ``sigma`` (K x 2 image pixels) when the model predicts one, and ``depth``
    (K root-relative mm) for a 3D model.
    """
    table = dataset.table
    keep = kept_instances(preds, dataset)
    det = cfg.eval.use_detections and cfg.data.detections
    areas = dataset.scales[:, 0] * dataset.scales[:, 1]
    return make_coco_predictions(
        table.image_ids[table.image_index][keep],
        preds.keypoints[keep],
        preds.confidence[keep],
        bbox_scores=table.bbox_scores[keep] if det else None,
        areas=areas[keep] if with_areas else None,
        rule=cfg.eval.score_rule,
        sigma=None if preds.sigma is None else preds.sigma[keep],
        depth=None if preds.depth is None else preds.depth[keep],
    )


def evaluate_predictions(
    preds: Predictions, dataset: TopDownDataset, cfg: Config, with_coco: bool = True
) -> EvalResult:
    """Metrics of image-space predictions on a dataset built from COCO-format or MPII files.

    Instances on an unreadable image (``on_bad_image="skip"``) are left out of every metric:
    no prediction is submitted for them and their images are left out of the COCO evaluation
    (so their people do not count as missed); ``num_unreadable`` counts them.
    """
    table = dataset.table
    keep = kept_instances(preds, dataset)
    result = EvalResult(
        num_instances=int(keep.sum()),
        num_unreadable=int((~keep).sum()),
        unreadable_files=sorted(set(preds.bad_files)),
        predictions=preds,
        benchmark=benchmark_for(cfg, dataset),
    )
    if result.num_unreadable:
        logger.warning(
            "%d instances left out of the evaluation, their images are unreadable: %s",
            result.num_unreadable,
            ", ".join(result.unreadable_files) or "?",
        )
    skel = dataset.skeleton
    if with_coco and cfg.data.format == "coco" and keep.any():
        det = cfg.eval.use_detections and cfg.data.detections
        entries = coco_results(preds, dataset, cfg, with_areas=True)
        if det:
            entries = oks_nms_per_image(entries, cfg.eval.nms_threshold, skel.sigmas)
        result.entries = entries
        gt = str(cfg.data.val_ann)
        image_ids = None
        if not keep.all():
            bad = np.unique(table.image_index[~keep])
            image_ids = np.delete(table.image_ids, bad).tolist()
        result.coco["labels"] = evaluate_coco(
            gt,
            entries,
            sigmas=skel.sigmas,
            image_ids=image_ids,
            keypoints_field=cfg.data.keypoints_field,
        )
        if table.keypoints_clean is not None:
            result.coco["clean"] = evaluate_coco(
                gt, entries, sigmas=skel.sigmas, use_clean=True, image_ids=image_ids
            )
    if not (cfg.eval.use_detections and cfg.data.detections):
        truth = table.keypoints_clean if table.keypoints_clean is not None else table.keypoints
        result.truth = "clean" if table.keypoints_clean is not None else "labels"
        visible = (truth[..., 2] > 0) & keep[:, None]
        ref = np.sqrt(np.maximum(table.areas, 1e-6))
        err = np.linalg.norm(preds.keypoints - truth[..., :2], axis=-1) / ref[:, None]
        result.error = float(err[visible].mean()) if visible.any() else float("nan")
        result.pck = pck(preds.keypoints, truth[..., :2], visible, ref, 0.1).value
        abs_err = np.abs(preds.keypoints - truth[..., :2])[visible]
        if abs_err.size and preds.sigma is not None:
            result.sigma_calibration = float(
                np.median(abs_err / np.maximum(preds.sigma[visible], 1e-9))
            )
            # per axis: the official head's sigma is ~0.6 as wide in y as in x relative to the
            # error (benchmarks/bench_sigma_calibration.py, docs/uncertainty.md)
            result.sigma_fit = SigmaCalibration.fit(
                truth[..., :2] - preds.keypoints, preds.sigma, visible, per_axis=True,
                truth=result.truth,
            )  # fmt: skip
        if "head_top" in skel.keypoint_names and "upper_neck" in skel.keypoint_names:
            from posereg.metrics.pck import head_size_from_joints

            head = head_size_from_joints(truth[..., :2])
            ok = visible & (head > 0)[:, None]
            r = pckh(preds.keypoints, truth[..., :2], ok, np.where(head > 0, head, 1.0), "joints")
            result.pckh = {"0.5": r.pckh_05, "0.1": r.pckh_01, "AUC": r.auc}
    return result


def evaluate(
    model: nn.Module,
    dataset: TopDownDataset,
    cfg: Config,
    device: torch.device,
    info: D.DistInfo | None = None,
) -> EvalResult:
    """Predict on ``dataset`` and compute every metric that applies."""
    preds = predict_dataset(
        model, dataset, device, cfg.eval.batch_size, cfg.eval.flip_test, cfg.data.workers, info
    )
    result = evaluate_predictions(preds, dataset, cfg)
    if preds.depth is not None and dataset.depth_range is not None:  # single-stage 3D
        keep = kept_instances(preds, dataset)
        result.pose3d = evaluate_depth(preds.keypoints, preds.depth, dataset, keep)
    return result


#: What :meth:`EvalResult.summary` can report (the names ``eval.primary_metric`` may take).
METRIC_NAMES = (
    "AP", "AP50", "AP75", "AR", "AP_clean", "AP50_clean", "PCK", "error",
    "PCKh_0.5", "PCKh_0.1", "PCKh_AUC", "sigma_calibration",
    "MPJPE", "PA-MPJPE", "N-MPJPE", "PCK3D_150", "AUC3D",
)  # fmt: skip
#: Metrics where lower is better: best.pt keeps the lowest.
LOWER_IS_BETTER = frozenset({"error", "MPJPE", "PA-MPJPE", "N-MPJPE"})


def primary_metric(cfg: Config, dataset: TopDownDataset | None = None) -> str:
    """The name of the metric that picks ``best.pt``: ``eval.primary_metric``, by default the
    primary of :func:`benchmark_for` (AP for COCO-format data, AP_clean for a synthetic
    ``dataset``, PCKh_0.5 for MPII, MPJPE (lower is better) for single-stage 3D).

    Raises:
        ConfigError: a name that no evaluation reports (listing the valid ones).
    """
    return primary(cfg, dataset).name


def primary(cfg: Config, dataset: TopDownDataset | None = None) -> Metric:
    """The :class:`Metric` that picks ``best.pt`` (see :func:`primary_metric`)."""
    name = cfg.eval.primary_metric
    if name is None:
        return benchmark_for(cfg, dataset).primary
    if name not in METRIC_NAMES:
        raise ConfigError(
            f"eval.primary_metric: {name!r} is not a metric; valid: {', '.join(METRIC_NAMES)}"
        )
    return Metric(name, higher_is_better=name not in LOWER_IS_BETTER)


def primary_score(
    metrics: dict[str, Any] | EvalResult, cfg: Config, dataset: TopDownDataset | None = None
) -> float:
    """The primary metric of an evaluation as a score where higher is better.

    ``metrics``: an :class:`EvalResult` (scored by its own benchmark's primary unless
    ``eval.primary_metric`` names another) or a ``summary()`` dict. A metric this evaluation did not
    report (e.g. PCKh on a skeleton without a head) or a NaN scores -inf, so no best.pt is written
    for it; an error is negated.
    """
    if isinstance(metrics, EvalResult):
        if cfg.eval.primary_metric is None:  # the result knows its benchmark
            return metrics.benchmark.primary.score(metrics.primary)
        metrics = metrics.summary()
    metric = primary(cfg, dataset)
    return metric.score(float(metrics.get(metric.name, math.nan)))


def run_evaluation(
    cfg: Config, checkpoint: str, device: str | None = None, out: str | None = None
) -> EvalResult:
    """``posereg eval``: load a checkpoint, evaluate it on ``cfg``'s validation set.

    Reads only: a synthetic validation set (``data.synth``) that is missing is an error saying
    how to make it, never generated here.

    Arguments:
        cfg: the evaluation config (data and eval sections; the model section must describe the
            checkpoint's model, which :func:`load_model_state` checks).
        checkpoint: a posereg checkpoint, or an ONNX file ``posereg export`` wrote (run by ONNX
            Runtime, :mod:`posereg.runtime`).
        device: where to run (default: CUDA when available).
        out: optional path for the COCO-results predictions json.
    """

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if is_onnx(checkpoint):  # ONNX Runtime's model goes through the same predict_dataset
        model, cfg, _ = load_onnx_model(checkpoint, cfg)
    else:
        model, cfg, _ = model_from_checkpoint(checkpoint, cfg)
    model.to(dev)
    _, val = build_datasets(cfg, train_split=False)
    result = evaluate(model, val, cfg, dev)
    if out is not None and result.predictions is not None:
        entries = result.entries  # what was scored: after OKS-NMS with detection boxes
        if entries is None:  # not COCO-format data: every kept instance
            entries = coco_results(result.predictions, val, cfg)
        from pathlib import Path

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(entries))
    return result
