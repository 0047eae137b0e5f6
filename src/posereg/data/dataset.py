"""Top-down 2D pose dataset: one person crop per item, with targets from a codec.

Pipeline per item (one thread, no decoded-image cache): read the file's bytes, pick the
augmentation (half-body, scale, rotation, flip), choose the largest JPEG DCT reduction that keeps
>= 1 source pixel per crop pixel, decode, one ``cv2.warpAffine`` from the (reduced) source to the
crop with the flip folded into the matrix, cheap colour jitter by uint8 LUT, normalize to
ImageNet mean/std (RGB), and encode the keypoints with the codec.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from posereg.codecs import Codec, RegressionCodec
from posereg.config import TransformConfig
from posereg.data.badinput import BadInputError, LoadReport
from posereg.data.depth import depth_target, root_joints
from posereg.data.image_io import check_image_size, decode_bgr, max_reduction, read_bytes
from posereg.data.instances import InstanceTable
from posereg.data.transforms import (
    affine_points,
    box_to_center_scale,
    compose,
    fix_aspect_ratio,
    get_affine_transform,
    lower_body_mask,
    reduction_matrix,
    warp_crop,
)
from posereg.skeletons import Skeleton, resolve_skeleton

__all__ = [
    "TransformConfig",
    "Sample",
    "Batch",
    "collate",
    "SkippedImages",
    "TopDownDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

logger = logging.getLogger("posereg.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)


_MEAN_255 = (np.array(IMAGENET_MEAN) * 255.0).astype(np.float32)[:, None, None]
_INV_STD_255 = (1.0 / (np.array(IMAGENET_STD) * 255.0)).astype(np.float32)[:, None, None]


def image_to_tensor(crop_bgr: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 BGR crop -> (3, H, W) float32 RGB tensor, ImageNet mean/std normalized.

    The one place that turns pixels into model input (dataset, predictor, export checks).
    """
    planes = np.empty((3, *crop_bgr.shape[:2]), dtype=np.float32)
    blue, green, red = cv2.split(crop_bgr)
    planes[0], planes[1], planes[2] = red, green, blue
    planes -= _MEAN_255
    planes *= _INV_STD_255
    return torch.from_numpy(planes)


@dataclass
class Sample:
    """One item of :class:`TopDownDataset`.

    Attributes:
        image: (3, H, W) float32, RGB, ImageNet mean/std normalized.
        target, target_weight: from the codec (regression: (K, 2) and (K, 2)).
        image_id, ann_id: ids from the annotation file (ann_id -1 for detection boxes).
        center, scale: (2,) crop centre and size (w, h) in image pixels, after the aspect fix,
            padding and augmentation; :func:`crop_to_image` inverts the crop with them.
        rotation: degrees of the crop rotation (0 without augmentation); for a flipped sample
            it applies to the mirrored image (in the original image it is -rotation).
        flipped: whether the crop was mirrored about its centre (target is in the mirrored
            frame: u -> -u with left/right swapped).
        bbox_score: detection score (1 for ground-truth boxes).
        area: annotation area (box area for detections).
        keypoints: (K, 3) the label (x, y, v) in image pixels, never augmented.
        keypoints_clean: (K, 3) the noise-free truth when the file carries it, else None.
        valid: False when the image could not be read and ``on_bad_image="skip"``: the image is
            zeros and the weights are 0, so the loss ignores it; evaluation leaves it out.
        error: the reason when not valid.
        file: the unreadable image's path when not valid.
    """

    image: Tensor
    target: Tensor
    target_weight: Tensor
    image_id: int
    ann_id: int
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flipped: bool
    bbox_score: float
    area: float
    keypoints: np.ndarray
    keypoints_clean: np.ndarray | None = None
    valid: bool = True
    error: str = ""
    file: str = ""


@dataclass
class Batch:
    """A collated batch: tensors stacked, meta as NumPy arrays (B, ...) and lists.

    ``keypoints_clean`` is (B, K, 3) when any sample has it (NaN rows for those without),
    else None. ``valid`` (B,) marks samples whose image was readable; ``errors`` and
    ``bad_files`` list the reasons and image paths of the others, so a training loop can count
    and report them (:class:`SkippedImages`).
    """

    image: Tensor
    target: Tensor
    target_weight: Tensor
    image_id: np.ndarray
    ann_id: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    flipped: np.ndarray
    bbox_score: np.ndarray
    area: np.ndarray
    keypoints: np.ndarray
    keypoints_clean: np.ndarray | None
    valid: np.ndarray
    errors: list[str] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @property
    def num_invalid(self) -> int:
        return int((~self.valid).sum())

    def pin_memory(self) -> Batch:
        """Pin the tensors (called by DataLoader(pin_memory=True))."""
        return replace(
            self,
            image=self.image.pin_memory(),
            target=self.target.pin_memory(),
            target_weight=self.target_weight.pin_memory(),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move the tensors to a device; meta stays in NumPy."""
        return replace(
            self,
            image=self.image.to(device, non_blocking=non_blocking),
            target=self.target.to(device, non_blocking=non_blocking),
            target_weight=self.target_weight.to(device, non_blocking=non_blocking),
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Batch :class:`Sample` items (the ``collate_fn`` for DataLoader)."""
    if not samples:
        raise ValueError("collate() needs at least one sample")
    clean = None
    if any(s.keypoints_clean is not None for s in samples):
        k = samples[0].keypoints.shape[0]
        clean = np.stack(
            [
                s.keypoints_clean if s.keypoints_clean is not None else np.full((k, 3), np.nan)
                for s in samples
            ]
        )
    return Batch(
        image=torch.stack([s.image for s in samples]),
        target=torch.stack([s.target for s in samples]),
        target_weight=torch.stack([s.target_weight for s in samples]),
        image_id=np.array([s.image_id for s in samples], dtype=np.int64),
        ann_id=np.array([s.ann_id for s in samples], dtype=np.int64),
        center=np.stack([s.center for s in samples]),
        scale=np.stack([s.scale for s in samples]),
        rotation=np.array([s.rotation for s in samples], dtype=np.float64),
        flipped=np.array([s.flipped for s in samples], dtype=bool),
        bbox_score=np.array([s.bbox_score for s in samples], dtype=np.float64),
        area=np.array([s.area for s in samples], dtype=np.float64),
        keypoints=np.stack([s.keypoints for s in samples]),
        keypoints_clean=clean,
        valid=np.array([s.valid for s in samples], dtype=bool),
        errors=[s.error for s in samples if not s.valid],
        bad_files=[s.file for s in samples if not s.valid],
    )


class SkippedImages:
    """Counts the items a loop skipped because their image was unreadable (``on_bad_image="skip"``).

    Feed it every batch; at the end of an epoch :meth:`end_epoch` merges what the ranks saw
    (through ``gather``), logs one line ``"N unreadable images skipped this epoch (M instances):
    <files>"`` and adds the epoch to the run's totals.

    Example:
        >>> skipped = SkippedImages()
        >>> for batch in loader:  # doctest: +SKIP
        ...     skipped.update(batch)
        >>> skipped.end_epoch()  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.epoch_files: list[str] = []  # one entry per skipped item
        self.total_items = 0
        self.total_files: set[str] = set()

    def update(self, batch: Batch) -> None:
        self.epoch_files += batch.bad_files

    def end_epoch(
        self,
        gather: Callable[[object], list[object]] | None = None,
        log: bool = True,
        what: str = "this epoch",
    ) -> int:
        """Merge the epoch over ranks, log it (when any), reset; returns the epoch's item count.

        Arguments:
            gather: every rank's object, in rank order (``distributed.all_gather_objects``); None
                for one process. Every rank must call it.
            log: write the log line (only the main rank should).
            what: the end of the log line's subject.
        """
        parts = gather(self.epoch_files) if gather is not None else [self.epoch_files]
        files = [f for part in parts for f in part]  # type: ignore[attr-defined]
        self.epoch_files = []
        self.total_items += len(files)
        self.total_files.update(files)
        unique = sorted(set(files))
        if files and log:
            shown = ", ".join(unique[:10]) + (
                f" and {len(unique) - 10} more" if len(unique) > 10 else ""
            )
            logger.warning(
                "%d unreadable images skipped %s (%d instances, left out of the loss): %s",
                len(unique), what, len(files), shown,
            )  # fmt: skip
        return len(files)


class TopDownDataset(Dataset):
    """Person crops with codec targets, from an :class:`InstanceTable`.

    Build it with :meth:`from_coco`, :meth:`from_mpii` or :meth:`from_h36m`, which also keep the
    loader's :class:`LoadReport` in ``self.report`` (logged at construction).

    Arguments:
        table: the instances.
        skeleton: keypoint layout (flip pairs, half-body split).
        input_size: (H, W) of the model input.
        codec: target codec; default :class:`RegressionCodec` for ``input_size``.
        transform: crop/augmentation settings; default evaluation (no augmentation).
        on_bad_image: ``"raise"`` a :class:`BadInputError` naming the file and record for an
            unreadable image (default), or ``"skip"``: return an invalid sample (zero weights,
            ``valid=False``) that the batch counts.
        report: the loader's report.
        depth_range: single-stage 3D (``data.depth``): each target row becomes ``(u, v, d)`` with
            the root-relative depth ``d = (Z - Z_root) / depth_range`` of :mod:`posereg.data.depth`
            (official: 2000 mm), weight 0 where ``|d| > 0.5``; needs ``table.joints_3d`` and a
            coordinate codec. None: 2D targets.

    Example:
        >>> ds = TopDownDataset.from_coco("coco/test_coco.json", "coco")  # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_size=32, collate_fn=collate)  # doctest: +SKIP
    """

    def __init__(
        self,
        table: InstanceTable,
        skeleton: Skeleton | str | dict,
        input_size: tuple[int, int] = (256, 192),
        codec: Codec | None = None,
        transform: TransformConfig | None = None,
        on_bad_image: Literal["raise", "skip"] = "raise",
        report: LoadReport | None = None,
        depth_range: float | None = None,
    ) -> None:
        self.table = table
        self.skeleton = resolve_skeleton(skeleton)
        if table.keypoints.shape[1] != self.skeleton.num_keypoints:
            raise ValueError(
                f"{table.source}: {table.keypoints.shape[1]} keypoints per instance but skeleton "
                f"{self.skeleton.name} has {self.skeleton.num_keypoints}"
            )
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.codec = codec if codec is not None else RegressionCodec(self.input_size)
        if tuple(self.codec.input_size) != self.input_size:
            raise ValueError(
                f"codec input_size {self.codec.input_size} differs from dataset input_size {self.input_size}"
            )
        self.depth_range = depth_range
        self.root: tuple[int, ...] = ()
        if depth_range is not None:
            if table.joints_3d is None:
                raise ValueError(f"{table.source}: depth targets need the instances' joints_3d")
            if self.codec.name == "heatmap":
                raise ValueError("depth targets need a coordinate codec, not heatmaps")
            self.root = root_joints(self.skeleton)
        self.transform = transform if transform is not None else TransformConfig()
        if on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
        self.on_bad_image = on_bad_image
        self.report = (
            report if report is not None else LoadReport(table.source, num_instances=len(table))
        )
        self.aspect_ratio = self.input_size[1] / self.input_size[0]
        self.centers, self.scales = box_to_center_scale(
            table.boxes, self.aspect_ratio, self.transform.padding
        )
        self._lower_body = lower_body_mask(self.skeleton)
        self._rng_seed: int | None = None
        self._generator: np.random.Generator | None = None
        self._epoch_seed: tuple[int, int] | None = None
        # OpenCV single-threaded, set here in the parent: DataLoader workers are the parallelism,
        # and reconfiguring OpenCV's thread pool inside a forked worker can deadlock.
        cv2.setNumThreads(1)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_coco(
        cls,
        ann_file: str | Path,
        image_root: str | Path,
        *,
        skeleton: Skeleton | str | dict = "coco17",
        input_size: tuple[int, int] = (256, 192),
        codec: Codec | None = None,
        transform: TransformConfig | None = None,
        detections: str | Path | Sequence[dict] | None = None,
        det_score_threshold: float = 0.0,
        skip_unlabelled: bool = True,
        check_files: bool = True,
        strict: bool = False,
        on_bad_image: Literal["raise", "skip"] = "raise",
        depth_range: float | None = None,
        keypoints_field: str = "keypoints",
    ) -> TopDownDataset:
        """From a COCO person_keypoints json (+ optional detections); see :func:`load_coco_instances`.

        With ``depth_range`` the annotations' ``joints_3d`` and ``camera`` are read and the
        targets are 3D (see the class arguments). ``keypoints_field`` is the annotation field
        the keypoints are read from (``data.keypoints_field``, e.g. ``keypoints_21``).
        """
        from posereg.data.coco import load_coco_instances

        skel = resolve_skeleton(skeleton, ann_file, keypoints_field)
        table, report = load_coco_instances(
            ann_file,
            image_root,
            skel,
            detections=detections,
            det_score_threshold=det_score_threshold,
            skip_unlabelled=skip_unlabelled,
            check_files=check_files,
            strict=strict,
            with_3d=depth_range is not None,
            keypoints_field=keypoints_field,
        )
        report.log()
        return cls(table, skel, input_size, codec, transform, on_bad_image, report, depth_range)

    @classmethod
    def from_mpii(
        cls,
        ann_file: str | Path,
        image_root: str | Path,
        *,
        input_size: tuple[int, int] = (256, 256),
        codec: Codec | None = None,
        transform: TransformConfig | None = None,
        skip_unlabelled: bool = True,
        check_files: bool = True,
        strict: bool = False,
        on_bad_image: Literal["raise", "skip"] = "raise",
    ) -> TopDownDataset:
        """From an MPII json; see :func:`load_mpii_instances` (default input 256 x 256)."""
        from posereg.data.mpii import load_mpii_instances

        table, report = load_mpii_instances(
            ann_file,
            image_root,
            skip_unlabelled=skip_unlabelled,
            check_files=check_files,
            strict=strict,
        )
        report.log()
        return cls(table, "mpii16", input_size, codec, transform, on_bad_image, report)

    @classmethod
    def from_h36m(
        cls,
        npz_file: str | Path,
        image_root: str | Path,
        *,
        input_size: tuple[int, int] = (256, 256),
        codec: Codec | None = None,
        transform: TransformConfig | None = None,
        check_files: bool = True,
        strict: bool = False,
        on_bad_image: Literal["raise", "skip"] = "raise",
    ) -> TopDownDataset:
        """From a Human3.6M ``*_body3d.npz``; see :func:`load_h36m_instances`."""
        from posereg.data.h36m import load_h36m_instances

        table, report = load_h36m_instances(
            npz_file, image_root, check_files=check_files, strict=strict
        )
        report.log()
        return cls(table, "h36m17", input_size, codec, transform, on_bad_image, report)

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.table)

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Make augmentation a function of (seed, epoch, index) alone.

        Then an item's augmentation does not depend on which worker or rank loads it, or on
        what was loaded before: data-parallel runs see what a single process sees, and a run
        resumed mid-epoch replays the same crops. Without it, each worker process draws from
        its own generator seeded by torch.
        """
        self._epoch_seed = (int(seed), int(epoch))

    def _rng(self, index: int) -> np.random.Generator:
        if self._epoch_seed is not None:
            return np.random.default_rng((*self._epoch_seed, int(index)))
        # A generator per process, seeded from torch: DataLoader gives every worker (and every
        # epoch without persistent workers) its own seed, so workers never repeat augmentations.
        seed = torch.initial_seed()
        if self._generator is None or seed != self._rng_seed:
            self._rng_seed = seed
            self._generator = np.random.default_rng(seed)
        return self._generator

    def _half_body(
        self, keypoints: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray] | None:
        labelled = keypoints[:, 2] > 0
        upper = keypoints[labelled & ~self._lower_body, :2]
        lower = keypoints[labelled & self._lower_body, :2]
        if rng.random() < 0.5 and len(upper) > 2:
            chosen = upper
        else:
            chosen = lower if len(lower) > 2 else upper
        if len(chosen) < 2:
            return None
        center = chosen.mean(axis=0)
        size = fix_aspect_ratio(chosen.max(axis=0) - chosen.min(axis=0), self.aspect_ratio)
        return center, size * self.transform.half_body_padding

    def _augmentation(
        self, index: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float, bool]:
        center, scale = self.centers[index].copy(), self.scales[index].copy()
        cfg = self.transform
        if not cfg.augment:
            return center, scale, 0.0, False
        keypoints = self.table.keypoints[index]
        if (
            cfg.half_body_prob > 0
            and np.sum(keypoints[:, 2] > 0) > cfg.half_body_min_joints
            and rng.random() < cfg.half_body_prob
        ):
            half = self._half_body(keypoints, rng)
            if half is not None:
                center, scale = half
        if cfg.scale_factor > 0:
            scale = scale * rng.uniform(1.0 - cfg.scale_factor, 1.0 + cfg.scale_factor)
        rotation = 0.0
        if cfg.rotation_factor > 0 and rng.random() < cfg.rotation_prob:
            rotation = float(rng.uniform(-cfg.rotation_factor, cfg.rotation_factor))
        flipped = bool(cfg.flip_prob > 0 and rng.random() < cfg.flip_prob)
        return center, scale, rotation, flipped

    def crop_matrix(
        self, center: np.ndarray, scale: np.ndarray, rotation: float, flipped: bool
    ) -> np.ndarray:
        """(2, 3) image -> crop map, mirrored about the crop centre when ``flipped``.

        Mirroring about the centre then cropping equals the official "flip the image
        (x -> w - 1 - x), flip the centre, crop" without needing the image width.
        """
        matrix = get_affine_transform(center, scale, rotation, self.input_size)
        if flipped:
            mirror = np.array([[-1.0, 0.0, 2.0 * center[0]], [0.0, 1.0, 0.0]])
            matrix = compose(matrix, mirror)
        return matrix

    def _load_image(self, index: int, scale: np.ndarray) -> tuple[np.ndarray, float]:
        path = self.table.image_path(index)
        record = self.table.describe(index)
        reduction = max_reduction(scale, self.input_size) if self.transform.fast_decode else 1.0
        decoded = decode_bgr(
            read_bytes(path, record), path, record, reduction, self.transform.jpeg_decoder
        )
        h, w = (int(v) for v in self.table.image_sizes[self.table.image_index[index]])
        check_image_size(decoded, h, w, path, record)
        return decoded.pixels, decoded.reduction

    def _jitter_and_occlude(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.transform
        if cfg.color_jitter > 0:
            gains = rng.uniform(1.0 - cfg.color_jitter, 1.0 + cfg.color_jitter, size=3)
            lut = np.clip(np.arange(256)[:, None] * gains[None, :] + 0.5, 0, 255).astype(np.uint8)
            crop = cv2.LUT(crop, lut.reshape(256, 1, 3))
        if cfg.occlusion_prob > 0 and rng.random() < cfg.occlusion_prob:
            h, w = crop.shape[:2]
            lo, hi = cfg.occlusion_size
            ph, pw = int(h * rng.uniform(lo, hi)), int(w * rng.uniform(lo, hi))
            y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            crop = crop.copy() if not crop.flags.writeable else crop
            crop[y0 : y0 + ph, x0 : x0 + pw] = rng.integers(0, 256, size=3, dtype=np.uint8)
        return crop

    def _meta(self, index: int) -> dict:
        t = self.table
        return {
            "image_id": int(t.image_ids[t.image_index[index]]),
            "ann_id": int(t.ann_ids[index]),
            "bbox_score": float(t.bbox_scores[index]),
            "area": float(t.areas[index]),
            "keypoints": t.keypoints[index].copy(),
            "keypoints_clean": None
            if t.keypoints_clean is None
            else t.keypoints_clean[index].copy(),
        }

    def __getitem__(self, index: int) -> Sample:
        rng = self._rng(index) if self.transform.augment else None
        center, scale, rotation, flipped = self._augmentation(index, rng)  # type: ignore[arg-type]
        try:
            image, factor = self._load_image(index, scale)
        except BadInputError as e:
            if self.on_bad_image == "raise":
                raise
            return self._invalid_sample(index, center, scale, str(e))
        matrix = self.crop_matrix(center, scale, rotation, flipped)
        crop = warp_crop(image, compose(matrix, reduction_matrix(factor)), self.input_size)
        if self.transform.augment:
            crop = self._jitter_and_occlude(crop, rng)  # type: ignore[arg-type]
        keypoints = self.table.keypoints[index]
        xy = affine_points(keypoints[:, :2], matrix)
        visibility = keypoints[:, 2]
        if flipped:
            xy, visibility = xy[self.skeleton.flip_index], visibility[self.skeleton.flip_index]
        target, weight = self._targets(index, xy, visibility, flipped)
        return Sample(
            image=image_to_tensor(crop),
            target=torch.from_numpy(target),
            target_weight=torch.from_numpy(weight),
            center=center,
            scale=scale,
            rotation=rotation,
            flipped=flipped,
            **self._meta(index),
        )

    def _targets(
        self, index: int, xy: np.ndarray, visibility: np.ndarray, flipped: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The codec's targets of crop keypoints (K, 2); with ``depth_range`` (K, 3) = (u, v, d)
        and per-joint weights (K, 3): the codec's (visible, inside the crop) and ``|d| <= 0.5``."""
        encoded = self.codec.encode(xy, visibility)
        if self.depth_range is None:
            return encoded.target, encoded.target_weight
        assert self.table.joints_3d is not None
        depth = depth_target(self.table.joints_3d[index], self.root, self.depth_range)  # (K,)
        if flipped:  # left and right swap; depth keeps its sign
            depth = depth[self.skeleton.flip_index]
        weight = encoded.target_weight[:, :1] * (np.abs(depth) <= 0.5)[:, None]  # official
        target = np.concatenate([encoded.target, depth[:, None]], axis=1).astype(np.float32)
        return target, np.repeat(weight, 3, axis=1).astype(np.float32)

    def _invalid_sample(
        self, index: int, center: np.ndarray, scale: np.ndarray, error: str
    ) -> Sample:
        k = self.skeleton.num_keypoints
        target, weight = self._targets(index, np.zeros((k, 2)), np.zeros(k), False)
        return Sample(
            image=torch.zeros((3, *self.input_size), dtype=torch.float32),
            target=torch.from_numpy(target),
            target_weight=torch.zeros_like(torch.from_numpy(weight)),
            center=center,
            scale=scale,
            rotation=0.0,
            flipped=False,
            valid=False,
            error=error,
            file=str(self.table.image_path(index)),
            **self._meta(index),
        )

    # ------------------------------------------------------------------ checks
    def verify_images(self, drop: bool = False) -> LoadReport:
        """Decode every image once (at 1/8 size) to find unreadable files before training.

        Arguments:
            drop: remove the instances of unreadable images from this dataset.

        Returns:
            A report with one skipped record per instance whose image is unreadable.
        """
        report = LoadReport(f"{self.table.source} (image check)")
        bad_images: set[int] = set()
        checked: set[int] = set()
        keep = np.ones(len(self), dtype=bool)
        for i in range(len(self)):
            img = int(self.table.image_index[i])
            if img not in checked:
                checked.add(img)
                try:
                    self._load_image(i, np.array([1e9, 1e9]))  # smallest decode
                except BadInputError as e:
                    bad_images.add(img)
                    report.skip(e.file, e.record, "unreadable image", e.problem)
                    keep[i] = False
                    continue
            if img in bad_images:
                keep[i] = False
                report.skip(self.table.image_path(i), self.table.describe(i), "unreadable image")
        report.num_records = len(self)
        report.num_instances = int(keep.sum())
        report.log()
        if drop and not keep.all():
            self._select(keep)
        return report

    def _select(self, keep: np.ndarray) -> None:
        t = self.table
        per_instance = ("image_index", "ann_ids", "boxes", "keypoints", "bbox_scores", "areas")
        changes = {name: getattr(t, name)[keep] for name in per_instance}
        for name in ("keypoints_clean", "joints_3d", "intrinsics"):
            if getattr(t, name) is not None:
                changes[name] = getattr(t, name)[keep]
        self.table = replace(t, **changes)
        self.centers, self.scales = self.centers[keep], self.scales[keep]
        if len(self.table) == 0:
            raise BadInputError(t.source, "", "no usable instance left after the image check")
