"""Inference on images: ``Predictor.from_checkpoint(path)(image, boxes)``.

Top-down: each person box is cropped (box -> centre/scale with the model's aspect ratio and
1.25 padding), the model's ``predict`` (the same call as evaluation's) gives crop-normalized
keypoints, scores and, for heads that predict one, sigma, and they are mapped back to image
pixels. The network's flow is never run per image: the predictive region it defines (a radius
r_p in units of sigma, :mod:`posereg.uncertainty`) is computed once when the predictor is made,
and each keypoint's p-region is the ellipse with semi-axes r_p x sigma (``PoseResult.region``).

Detector-free families (:mod:`posereg.family`: Keypoint R-CNN, the dense one-stage model) find
the people of the whole image themselves: ``Predictor.from_checkpoint`` of such a checkpoint (or
its ONNX export) gives a :class:`PeoplePredictor`, the same calls and results without boxes.

Colour order: an image file is decoded by posereg (:func:`posereg.data.image_io.read_image`,
BGR); an array is taken as BGR, OpenCV's order (``cv2.imread``, ``cv2.VideoCapture`` frames),
unless ``color="rgb"`` says otherwise (Pillow, imageio, matplotlib). Photos read from files are
turned upright by their EXIF orientation tag, so keypoints are in the upright image's pixels.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from posereg.data.badinput import BadInputError, LoadReport
from posereg.data.dataset import image_to_tensor
from posereg.data.depth import DEPTH_RANGE_MM, root_joints
from posereg.data.image_io import read_image
from posereg.data.transforms import box_to_center_scale, get_affine_transform, warp_crop
from posereg.decode import decode_crops
from posereg.family import detector_free_family
from posereg.metrics.coco import instance_score, make_coco_predictions
from posereg.models.build import model_from_checkpoint
from posereg.outputs import os_error, write_atomic
from posereg.result import PoseResult
from posereg.runtime import is_onnx, load_onnx_model
from posereg.skeletons import Skeleton, resolve_skeleton
from posereg.uncertainty import (
    DRAW_LEVEL,
    FAST_NUM_SAMPLES,
    REPORT_LEVELS,
    PredictiveRegion,
    SigmaCalibration,
    region_from_criterion,
)

if TYPE_CHECKING:
    from posereg.config import Config
    from posereg.detect import PersonDetector

__all__ = [
    "Predictor",
    "PeoplePredictor",
    "PoseResult",
    "PredictSummary",
    "box_problem",
    "image_ids",
    "overlay_names",
    "predict_files",
    "result_entries",
]

# A box larger than this many times the image's longer side is not a person in that image
# (a detector never produces one); its crop would shrink the whole image to a few pixels.
MAX_BOX_TO_IMAGE = 10.0


def box_problem(box: np.ndarray, image_size: tuple[int, int]) -> str | None:
    """Why a person box (x, y, w, h) cannot be cropped from an (h, w) image; None if it can.

    A usable box has 4 finite numbers, sides of at least 1 pixel and at most
    ``MAX_BOX_TO_IMAGE`` x the image's longer side, and overlaps the image. Boxes that reach
    past the image border are kept (the crop is padded with black, as in evaluation).
    """
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        return f"box is not 4 finite numbers (x, y, w, h): {box.tolist()}"
    x, y, w, h = box.tolist()
    if w < 1 or h < 1:
        return f"box has no area: w={w:g}, h={h:g} (need >= 1 pixel)"
    height, width = image_size
    if max(w, h) > MAX_BOX_TO_IMAGE * max(height, width):
        return f"box {w:g}x{h:g} is over {MAX_BOX_TO_IMAGE:g}x the image ({width}x{height})"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return (
            f"box {[round(v, 2) for v in box.tolist()]} lies outside the image ({width}x{height})"
        )
    return None


class Predictor:
    """A trained top-down model ready for images.

    Arguments:
        model: a :class:`posereg.models.TopDownModel` (its head's criterion may be None).
        skeleton: keypoint layout (flip pairs for the flip test, limbs for drawing).
        input_size: (h, w) of the model input.
        padding: box context factor (1.25).
        flip_test: average with the prediction on the mirrored crop.
        device: where the model runs.
        exif_orientation: turn photos read from files upright by their EXIF orientation tag
            (default); False predicts on the stored raster, as datasets do.
        score_rule: the instance score rule (:func:`posereg.metrics.instance_score`), the
            checkpoint's ``eval.score_rule``.
        region_level: the level p of the predictive regions in the results (``region``).

    Attributes:
        region: the model's :class:`posereg.uncertainty.PredictiveRegion` (radii r_p in units of
            sigma), computed once here from the head's loss and flow; None without a density.
        calibration: the per-keypoint scales c_k of ``PoseResult.sigma_calibrated``
            (:class:`posereg.uncertainty.SigmaCalibration`, from the checkpoint; c = 1 and
            ``fitted=False`` when it holds none).

    Example:
        >>> predictor = Predictor.from_checkpoint("runs/synth_rle/best.pt")  # doctest: +SKIP
        >>> result = predictor("photo.jpg", boxes=[[50, 30, 120, 300]])  # doctest: +SKIP
        >>> result.keypoints.shape  # doctest: +SKIP
        (1, 17, 2)
        >>> frame = cv2.imread("photo.jpg")  # BGR: the default  # doctest: +SKIP
        >>> rgb = np.asarray(PIL.Image.open("photo.jpg"))  # doctest: +SKIP
        >>> result = predictor(rgb, boxes=[[50, 30, 120, 300]], color="rgb")  # doctest: +SKIP
    """

    #: whether the model finds the people itself (:class:`PeoplePredictor`): no boxes
    finds_people = False

    def __init__(
        self,
        model: nn.Module,
        skeleton: Skeleton,
        input_size: tuple[int, int],
        padding: float = 1.25,
        flip_test: bool = True,
        device: str | torch.device = "cpu",
        exif_orientation: bool = True,
        score_rule: str = "official",
        region_level: float = DRAW_LEVEL,
    ) -> None:
        instance_score(np.ones((1, 1)), None, score_rule)  # an unknown rule fails here
        levels = tuple(sorted({*REPORT_LEVELS, float(region_level)}))
        # 2D models only: a 3D model's region is a ball in (u, v, d), not an image ellipse
        three_d = getattr(getattr(model, "head", None), "dim", 2) == 3
        # an ONNX export carries the radii its flow gave at export (posereg.runtime)
        exported = getattr(model, "predictive_region", None)
        if exported is not None:
            missing = [p for p in levels if all(abs(p - q) > 1e-9 for q in exported.levels)]
            if missing:
                raise ValueError(
                    f"region_level {region_level:g}: the ONNX export holds regions at levels "
                    f"{list(exported.levels)} only"
                )
        self.region: PredictiveRegion | None = (
            None
            if three_d
            else exported
            if exported is not None
            else region_from_criterion(
                getattr(model, "criterion", None), levels, num_samples=FAST_NUM_SAMPLES
            )
        )
        self.region_level = float(region_level)
        self.score_rule = score_rule
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.skeleton = skeleton
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.padding = padding
        self.flip_test = flip_test
        self.exif_orientation = exif_orientation
        # median |error| / sigma of the checkpoint's evaluation (1 when unknown): the video
        # Kalman smoother's measurement noise is sigma x this; drawings use ``region``.
        self.sigma_scale = 1.0
        self.calibration = SigmaCalibration.identity(skeleton.num_keypoints, 2)
        self.depth_range = DEPTH_RANGE_MM  # mm per unit of a 3D model's depth (data.depth_range_mm)
        self.name = "model"  # the run's name (set from a checkpoint)
        self.config: Config | None = None  # the checkpoint's config
        self.metrics: dict[str, Any] = {}  # the checkpoint's evaluation metrics

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        flip_test: bool | None = None,
        exif_orientation: bool = True,
        backend: Literal["pytorch", "onnxruntime"] | None = None,
    ) -> Predictor:
        """Build the model a posereg checkpoint was trained with and load its weights.

        ``backend``: ``"pytorch"`` (a ``.pt`` checkpoint) or ``"onnxruntime"`` (an ``.onnx`` file
        that ``posereg export`` wrote, run by :class:`posereg.runtime.OnnxPoseModel` with the
        same crops, flip test and decoding); None: by the file's suffix.

        A checkpoint (or export) of a detector-free family gives a :class:`PeoplePredictor`
        (the family's own loader and inference; the backend by the file's suffix).
        """
        if backend not in (None, "pytorch", "onnxruntime"):
            raise ValueError(f"backend must be 'pytorch' or 'onnxruntime', got {backend!r}")
        people = detector_free_family(path)
        if people is not None:  # a family that finds the people itself: whole images in
            model, cfg, state = people.model_from_checkpoint(path)
            return PeoplePredictor(people, model, cfg, state, device, exif_orientation, path)
        if backend is None:
            backend = "onnxruntime" if is_onnx(path) else "pytorch"
        if backend == "onnxruntime":
            model, cfg, state = load_onnx_model(path)
        else:
            model, cfg, state = model_from_checkpoint(path)
        predictor = cls.from_config(model, cfg, device, flip_test, exif_orientation)
        predictor.metrics = dict(state.get("metrics") or {})
        predictor.sigma_scale = float(predictor.metrics.get("sigma_calibration", 1.0))
        predictor.calibration = SigmaCalibration.from_state(
            state, predictor.skeleton.num_keypoints, 2, str(path)
        )
        return predictor

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        cfg: Config,
        device: str | torch.device | None = None,
        flip_test: bool | None = None,
        exif_orientation: bool = True,
    ) -> Predictor:
        """A predictor for ``model`` with the crops, flip test and score rule of ``cfg`` (its
        skeleton resolved); no sigma calibration (c = 1), as for a model not yet evaluated."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        predictor = cls(
            model,
            resolve_skeleton(cfg.data.skeleton),
            tuple(cfg.data.input_size),
            cfg.data.transform.padding,
            cfg.eval.flip_test if flip_test is None else flip_test,
            device,
            exif_orientation,
            cfg.eval.score_rule,
        )
        predictor.name, predictor.config = cfg.name, cfg
        predictor.depth_range = cfg.data.depth_range_mm
        return predictor

    def load_image(
        self, image: str | Path | np.ndarray, color: Literal["bgr", "rgb"] = "bgr"
    ) -> np.ndarray:
        """The (H, W, 3) uint8 BGR pixels the predictor crops from.

        Arguments:
            image: a file path (decoded by posereg, EXIF orientation applied when
                ``self.exif_orientation``), or an (H, W, 3) uint8 array in ``color`` order.
            color: ``"bgr"`` (OpenCV, the default) or ``"rgb"`` (Pillow, imageio); ignored for
                file paths.

        Raises:
            BadInputError: an unreadable image file. ValueError: a wrong array or ``color``.
        """
        if color not in ("bgr", "rgb"):
            raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
        if isinstance(image, str | Path):
            return read_image(image, exif_orientation=self.exif_orientation)
        pixels = np.asarray(image)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(
                f"image must be an (H, W, 3) uint8 {color.upper()} array, "
                f"got {pixels.shape} {pixels.dtype}"
            )
        return np.ascontiguousarray(pixels[..., ::-1]) if color == "rgb" else pixels

    @torch.no_grad()
    def __call__(
        self,
        image: str | Path | np.ndarray,
        boxes: np.ndarray | list | None = None,
        box_scores: np.ndarray | list | None = None,
        *,
        color: Literal["bgr", "rgb"] = "bgr",
    ) -> PoseResult:
        """Predict the poses in ``image``.

        Arguments:
            image: a file path, or an (H, W, 3) uint8 array, BGR unless ``color="rgb"``.
            boxes: (N, 4) person boxes (x, y, w, h) in pixels of the (upright) image; None: the
                whole image is one box.
            box_scores: (N,) detection scores (default 1).
            color: channel order of an array ``image``: ``"bgr"`` (OpenCV) or ``"rgb"``.

        Raises:
            ValueError: a box that :func:`box_problem` rejects (named by its index), or
                ``box_scores`` of another length.
        """
        bgr = self.load_image(image, color)
        h_img, w_img = bgr.shape[:2]
        box_arr = np.array(
            [[0, 0, w_img, h_img]] if boxes is None else boxes, dtype=np.float64
        ).reshape(-1, 4)
        for i, box in enumerate(box_arr):
            problem = box_problem(box, (h_img, w_img))
            if problem is not None:
                raise ValueError(f"box #{i}: {problem}")
        det = (
            np.ones(len(box_arr))
            if box_scores is None
            else np.asarray(box_scores, dtype=np.float64).reshape(-1)
        )
        if len(det) != len(box_arr):
            raise ValueError(f"{len(det)} box_scores for {len(box_arr)} boxes")
        k = self.skeleton.num_keypoints
        three_d = getattr(self.model.head, "dim", 2) == 3
        if len(box_arr) == 0:
            empty = np.zeros((0, k, 2))
            region = None if self.region is None else empty.copy()
            depth = np.zeros((0, k)) if three_d else None
            return PoseResult(
                empty, empty.copy(), np.zeros((0, k)), box_arr, np.zeros(0), region,
                None if region is None else self.region_level, depth, depth, empty.copy(),
            )  # fmt: skip
        h, w = self.input_size
        center, scale = box_to_center_scale(box_arr, w / h, self.padding)
        crops = [
            image_to_tensor(
                warp_crop(bgr, get_affine_transform(c, s, 0.0, self.input_size), self.input_size)
            )
            for c, s in zip(center, scale, strict=True)
        ]
        images = torch.stack(crops).to(self.device)
        dec = self.model.predict(images, self.flip_test, self.skeleton.flip_index)
        root = root_joints(self.skeleton) if three_d else None
        poses = decode_crops(dec, center, scale, root, self.depth_range)
        sigma = poses.sigma
        region = None
        if sigma is not None and self.region is not None:
            region = self.region.semi_axes(sigma, self.region_level)  # (N, K, 2) px
        return PoseResult(
            keypoints=poses.keypoints,
            sigma=sigma,
            confidence=poses.confidence,
            boxes=box_arr,
            scores=instance_score(poses.confidence, det, self.score_rule),
            region=region,
            region_p=None if region is None else self.region_level,
            depth=poses.depth,
            depth_sigma=poses.depth_sigma,
            sigma_calibrated=None if sigma is None else self.calibration.apply(sigma),
        )


class PeoplePredictor(Predictor):
    """A detector-free family's model ready for images: a whole image in, its people out.

    The calls of :class:`Predictor` (``load_image``, ``__call__``) and the attributes its users
    read (``posereg predict``, ``serve``, video), through the family's ``predict``
    (:class:`posereg.family.ImageFamily`); no boxes or crops. The predictive regions come from
    the family's trained loss (``family.criterion``: RLE heads; none for an ONNX export) as for
    top-down; ``sigma_calibrated`` is c_k x sigma with the checkpoint's calibration (fitted at
    its evaluation, :func:`posereg.engine.multiperson.fit_people_calibration`; c = 1 for an
    ONNX export or a checkpoint without one).

    Arguments:
        family: the image family (``finds_people``).
        model: its model (or ONNX export runner), from the family's ``model_from_checkpoint``.
        cfg: the run's config; state: the checkpoint dict (its ``metrics``).
        path: the checkpoint, for messages.
    """

    finds_people = True

    def __init__(
        self,
        family: Any,
        model: Any,
        cfg: Any,
        state: dict[str, Any],
        device: str | torch.device | None = None,
        exif_orientation: bool = True,
        path: str | Path = "",
    ) -> None:
        self.family = family
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval() if isinstance(model, nn.Module) else model
        self.skeleton = resolve_skeleton("coco17")
        self.input_size = (0, 0)  # whole images of any size (the model resizes them itself)
        self.padding = 1.0
        self.flip_test = False
        self.exif_orientation = exif_orientation
        self.region = region_from_criterion(
            family.criterion(model),
            tuple(sorted({*REPORT_LEVELS, DRAW_LEVEL})),
            num_samples=FAST_NUM_SAMPLES,
        )
        self.region_level = DRAW_LEVEL
        self.score_rule = ""
        self.sigma_scale = 1.0
        self.calibration = SigmaCalibration.from_state(
            state, self.skeleton.num_keypoints, 2, str(path)
        )
        self.depth_range = DEPTH_RANGE_MM
        self.name = str(getattr(cfg, "name", "model"))
        self.config = cfg
        metrics = dict(state.get("metrics") or {})
        self.metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        self.path = str(path)

    def refuse_boxes(self, given: str) -> None:
        """Raise the one-line error for boxes given (``given``: ``--boxes``, ``--detector``).

        Raises:
            ValueError: always.
        """
        raise ValueError(f"{self.path}: {given}: {self.family.no_boxes_message(given)}")

    @torch.no_grad()
    def __call__(
        self,
        image: str | Path | np.ndarray,
        boxes: np.ndarray | list | None = None,
        box_scores: np.ndarray | list | None = None,
        *,
        color: Literal["bgr", "rgb"] = "bgr",
    ) -> PoseResult:
        """The people of ``image`` (a file, or an (H, W, 3) uint8 array in ``color`` order), in
        its pixels; ``boxes`` must be None (ValueError otherwise)."""
        if boxes is not None:
            self.refuse_boxes("boxes")
        bgr = self.load_image(image, color)
        result = self.family.predict(self.model, self.config, [bgr])[0]
        if result.sigma is not None:
            result.sigma_calibrated = self.calibration.apply(result.sigma)
            if self.region is not None:
                result.region = self.region.semi_axes(result.sigma, self.region_level)
                result.region_p = self.region_level
        return result


def result_entries(
    result: PoseResult, image_id: int, people: np.ndarray | None = None
) -> list[dict]:
    """COCO results entries (``image_id``, ``category_id``, ``bbox``, ``keypoints`` as x, y,
    confidence triplets, ``score``, ``sigma`` (K x 2 pixels, the head's) and ``sigma_calibrated``
    (K x 2 pixels, c_k x sigma) for heads that predict one,
    ``region`` (K x 2 semi-axes in pixels of the predictive ``region_p``-region) with
    ``region_p`` for heads whose loss learned a density, and for 3D models ``depth`` (K
    root-relative mm) and ``depth_sigma`` (K mm, with sigma)) of the people ``people`` (indices;
    default all) of ``result``, rounded as posereg writes them
    (:func:`posereg.metrics.make_coco_predictions`, the writer evaluation uses too)."""
    r = result if people is None else result.select(np.asarray(people, dtype=int))
    if len(r.keypoints) == 0:  # an image without people (a detector-free model found none)
        return []
    return make_coco_predictions(
        np.full(len(r.keypoints), image_id),
        r.keypoints,
        r.confidence,
        scores=r.scores,
        boxes=r.boxes,
        sigma=r.sigma,
        sigma_calibrated=r.sigma_calibrated,
        region=r.region,
        region_p=r.region_p,
        depth=r.depth,
        depth_sigma=r.depth_sigma,
        decimals=3,
    )


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _image_files(inputs: list[str]) -> list[Path]:
    """The image files of ``inputs`` (files, and each folder's images sorted by name), each
    file once (a file given twice, or inside a folder also given, is predicted once)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}")
    unique = {f.resolve(): f for f in reversed(files)}  # the first mention of each file wins
    return [f for f in files if unique[f.resolve()] is f]


_ASCII_DIGITS = re.compile(r"[0-9]+")


def _image_id(path: Path) -> int | None:
    """COCO's convention: the file name is the zero-padded image id (000000000785.jpg -> 785).

    Only ASCII digits count: ``str.isdigit`` also accepts '²' or '١٢٣', which are not ids.
    """
    return int(path.stem) if _ASCII_DIGITS.fullmatch(path.stem) else None


def _detection_key(value: object) -> int | str | None:
    """A detection's ``image_id`` as an int (ints, integral floats, ASCII-digit strings) or a
    file stem (any other non-empty string); None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and np.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if _ASCII_DIGITS.fullmatch(text) else text
    return None


def image_ids(files: list[Path], dets: Detections | None = None) -> list[int]:
    """One ``image_id`` per file of ``posereg predict``, no two alike.

    The rule: a file whose stem is a number in ASCII digits keeps that number (COCO's
    ``000000000785.jpg`` is 785); another file takes the integer ``image_id`` of the detections
    :meth:`Detections.for_image` matches to it when they agree on one; every other file is
    numbered after the largest id so taken (from 0 when none is), in order.

    Raises:
        ValueError: two files would have the same id (``4.jpg`` and ``4.png``, ``4.jpg`` and
            ``004.jpg``, two files matched to detections of one id): names both files.
    """
    ids: list[int | None] = []
    owner: dict[int, tuple[Path, str]] = {}
    for path in files:
        image_id, how = _image_id(path), "the number in its file name"
        if image_id is None and dets is not None:
            found = {d.image_id for d in dets.for_image(path)}
            if len(found) == 1 and None not in found:
                image_id, how = found.pop(), f"the image_id of its detections in {dets.source}"
        if image_id is not None and image_id in owner:
            first, first_how = owner[image_id]
            why = how.replace("its ", "each one's ") if how == first_how else f"{first_how}; {how}"
            raise ValueError(
                f"{first} and {path} would both be image_id {image_id} ({why}): rename one of "
                "them or predict them separately"
            )
        if image_id is not None:
            owner[image_id] = (path, how)
        ids.append(image_id)
    next_id = max(owner) + 1 if owner else 0
    out = []
    for image_id in ids:
        if image_id is None:
            image_id, next_id = next_id, next_id + 1
        out.append(image_id)
    return out


def overlay_names(files: list[Path], ids: list[int]) -> list[str]:
    """The overlay PNG name of each file: ``STEM_pose.png``, or ``STEM_ID_pose.png`` (ID its
    ``image_id``) where two files would share a name (``x.jpg`` in two folders, ``x.jpg`` and
    ``x.png``). With unique ids the ``STEM_ID`` names cannot clash, so every name is unique."""
    names = [f"{p.stem}_pose.png" for p in files]
    while True:
        count = Counter(names)
        clash = [i for i, name in enumerate(names) if count[name] > 1]
        if not clash:
            return names
        for i in clash:  # each pass turns at least one plain name into a STEM_ID one
            names[i] = f"{files[i].stem}_{ids[i]}_pose.png"


@dataclass
class Detection:
    """One person box of a detections file: its index in the file, box (x, y, w, h), score."""

    index: int
    box: list[float]
    score: float
    image_id: int | None = None


@dataclass
class Detections:
    """Person boxes of a COCO results json, keyed the ways an image file can match them.

    The rule: a detection with a ``file_name`` matches the image file of that name (the base
    name; folders in it are ignored); otherwise its ``image_id`` matches an image whose file
    stem is that integer in ASCII digits (leading zeros allowed, COCO's ``000000000785.jpg``)
    or, for a string id that is not a number, whose stem is that string.
    """

    source: str
    by_name: dict[str, list[Detection]] = field(default_factory=dict)
    by_key: dict[int | str, list[Detection]] = field(default_factory=dict)
    report: LoadReport = field(default_factory=lambda: LoadReport(""))
    #: entries left out by choice: below the score threshold or of another category than 1
    num_filtered: int = 0

    def for_image(self, path: Path) -> list[Detection]:
        """The detections matching the image file ``path``, in file order."""
        number = _image_id(path)
        key: int | str = number if number is not None else path.stem
        found = self.by_name.get(path.name, []) + self.by_key.get(key, [])
        return sorted(found, key=lambda d: d.index)


def load_detections(path: str | Path, score_threshold: float = 0.0) -> Detections:
    """Read person boxes from a COCO results json (``[{image_id, bbox, score, ...}]``).

    Entries of another ``category_id`` than 1 (person) or scored below ``score_threshold`` are
    left out. Entries that cannot be used (no usable ``image_id``/``file_name``, a ``bbox`` that
    is not 4 finite numbers with positive size, a non-finite score) are counted skips in
    ``report``, named by their index in the file.

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON, or not a list.
    """
    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"boxes file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a COCO results list of {{image_id, bbox, score}}")
    dets = Detections(str(path), report=LoadReport(str(path), num_records=len(entries)))
    for i, e in enumerate(entries):
        record = f"detection #{i}"
        if not isinstance(e, dict):
            dets.report.skip(path, record, "not an object", repr(e)[:80])
            continue
        name, key = e.get("file_name"), _detection_key(e.get("image_id"))
        if "image_id" in e:
            record += f" (image {e['image_id']!r})"
        if not (isinstance(name, str) and name.strip()) and key is None:
            dets.report.skip(path, record, "no image_id or file_name to match an image")
            continue
        try:
            box = [float(v) for v in e["bbox"]]
            score = float(e.get("score", 1.0))
        except (KeyError, TypeError, ValueError):
            dets.report.skip(path, record, "bbox is not [x, y, w, h] numbers", repr(e)[:80])
            continue
        if len(box) != 4 or not np.isfinite(box).all():
            dets.report.skip(path, record, "bbox is not 4 finite numbers", str(box))
            continue
        if box[2] < 1 or box[3] < 1:
            dets.report.skip(path, record, "bbox has no area", f"w={box[2]:g}, h={box[3]:g}")
            continue
        if not np.isfinite(score):
            dets.report.skip(path, record, "score is not finite", str(score))
            continue
        if e.get("category_id", 1) != 1 or score < score_threshold:
            dets.num_filtered += 1
            continue
        det = Detection(i, box, score, key if isinstance(key, int) else None)
        if isinstance(name, str) and name.strip():
            dets.by_name.setdefault(Path(name.replace("\\", "/")).name, []).append(det)
        else:
            dets.by_key.setdefault(key, []).append(det)  # type: ignore[arg-type]
    dets.report.num_instances = sum(map(len, [*dets.by_name.values(), *dets.by_key.values()]))
    return dets


def _output_dir(out_dir: str | Path) -> Path:
    """Create (if needed) and return the output folder; an OSError names it and says why."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e, f"cannot create the output folder {out}") from None
    return out


@dataclass
class PredictSummary:
    """What ``posereg predict`` did.

    Attributes:
        predictions: the predictions.json written.
        num_images: image files given.
        num_instances: poses written.
        failed: (file, reason) of each image that could not be read or predicted, and of every
            image when the detections file gave no usable box at all.
        no_boxes: files skipped because the detections file has no usable box for them (while
            other images had one).
        detections: the detections file's report (skipped entries and boxes), if one was given.
        num_boxes: the detections' boxes that were used (cropped and predicted).
    """

    predictions: Path
    num_images: int
    num_instances: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    no_boxes: list[str] = field(default_factory=list)
    detections: LoadReport | None = None
    num_boxes: int = 0
    num_filtered_boxes: int = 0
    calibration: str = ""  # where sigma_calibrated's c_k come from (SigmaCalibration.describe)

    def lines(self) -> list[str]:
        """The end-of-run report: boxes used, skips, then failures last (one summary line)."""
        out = [self.calibration] if self.calibration else []
        d = self.detections
        if d is not None:
            filtered = self.num_filtered_boxes
            out.append(
                f"{self.num_boxes} usable boxes in {d.source} ({d.num_records} entries, "
                f"{d.num_skipped} skipped"
                + (
                    f", {filtered} below --score-threshold or not of the person category)"
                    if filtered
                    else ")"
                )
            )
        if d is not None and d.num_skipped:
            out.append(d.summary())
        if self.no_boxes:
            out.append(
                f"skipped {len(self.no_boxes)} image(s) with no usable box in the detections: "
                + ", ".join(self.no_boxes[:10])
                + (" ..." if len(self.no_boxes) > 10 else "")
            )
        if self.failed:
            shown = "; ".join(f"{Path(f).name} ({why})" for f, why in self.failed[:5])
            more = f"; and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
            out.append(f"{len(self.failed)} of {self.num_images} images failed: {shown}{more}")
        return out


def predict_files(
    checkpoint: str | Path,
    inputs: list[str],
    out_dir: str | Path,
    boxes: str | None = None,
    score_threshold: float = 0.0,
    draw: bool = True,
    device: str | None = None,
    exif_orientation: bool = True,
    detector: PersonDetector | None = None,
) -> PredictSummary:
    """``posereg predict``: poses for image files; writes predictions.json (+ overlay PNGs).

    predictions.json is a COCO results list (``image_id``, ``category_id``, ``keypoints`` with the
    confidence as third value, ``score``) with ``file_name``, ``source`` (the image's path as
    given), ``bbox`` and, for heads that predict one, ``sigma`` and ``sigma_calibrated`` (K x 2
    pixels) and ``region``/``region_p`` (see :func:`result_entries`) added. ``image_id`` is unique per file
    (:func:`image_ids`: the file name's number as in COCO, else the matched detections' integer
    ``image_id``, else a number after the largest so taken); overlays are ``STEM_pose.png``, or
    ``STEM_ID_pose.png`` where two files share a stem (:func:`overlay_names`). With ``boxes`` (COCO results json) each
    image takes the boxes :class:`Detections` matches to it; images without one are skipped and
    counted, as are unusable boxes; when not one box is usable (all outside, empty, NaN, not
    numbers, or none in the file) every image counts as failed (``no usable box in FILE``), as
    an unreadable one does, so that the command exits 1. With a ``detector`` (and no ``boxes``) each image takes the
    people it finds, and each entry gets the detector's ``box_score``; images where it finds
    nobody are skipped and counted.

    An image that cannot be read (corrupt, truncated, not an image) is reported on stderr as it
    happens and the batch goes on; the summary lists the failures and predictions.json holds the
    rest. Photos are turned upright by their EXIF orientation (``exif_orientation``).

    Raises:
        OSError: the output folder or a file in it cannot be written (named in the message).
        ValueError: two files would have the same ``image_id`` (both named).
    """
    import cv2

    from posereg.viz import draw_people

    files = _image_files(inputs)
    dets = load_detections(boxes, score_threshold) if boxes else None
    ids = image_ids(files, dets)  # two files of one id fail here, before the model loads
    overlays = overlay_names(files, ids)
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    if isinstance(predictor, PeoplePredictor) and (dets is not None or detector is not None):
        predictor.refuse_boxes("--boxes" if dets is not None else "--detector")
    predictor.exif_orientation = exif_orientation
    out = _output_dir(out_dir)
    summary = PredictSummary(
        out / "predictions.json",
        len(files),
        detections=dets.report if dets else None,
        num_filtered_boxes=dets.num_filtered if dets else 0,
    )
    results = []
    unboxed: list[Path] = []  # images the detections gave no usable box
    for path, image_id, overlay in zip(files, ids, overlays, strict=True):
        try:
            image = predictor.load_image(path)
        except BadInputError as e:
            summary.failed.append((str(path), e.problem or str(e)))
            print(f"posereg predict: skipped {path}: {e.problem or e}", file=sys.stderr)
            continue
        found = None
        if dets is not None:
            usable = []
            for d in dets.for_image(path):
                problem = box_problem(np.array(d.box), image.shape[:2])
                if problem is None:
                    usable.append(d)
                else:
                    record = f"detection #{d.index} ({path.name})"
                    dets.report.skip(dets.source, record, "unusable box", problem)
                    dets.report.num_instances -= 1
            if not usable:
                summary.no_boxes.append(path.name)
                unboxed.append(path)
                continue
            summary.num_boxes += len(usable)
            result = predictor(image, [d.box for d in usable], [d.score for d in usable])
        elif detector is not None:
            found = detector(image)
            if len(found.boxes) == 0:
                summary.no_boxes.append(path.name)
                continue
            result = predictor(image, found.boxes, found.scores)
        else:
            result = predictor(image)
        finite = np.isfinite(result.keypoints).all(axis=(1, 2)) & np.isfinite(result.scores)
        if result.sigma is not None:
            summary.calibration = predictor.calibration.describe("pixels")
            finite &= np.isfinite(result.sigma).all(axis=(1, 2))
        if not finite.all():
            summary.failed.append((str(path), f"{int((~finite).sum())} non-finite prediction(s)"))
            print(f"posereg predict: {path}: the model gave non-finite keypoints", file=sys.stderr)
        for i, entry in zip(
            np.flatnonzero(finite),
            result_entries(result, image_id, np.flatnonzero(finite)),
            strict=True,
        ):
            entry = {
                "image_id": entry.pop("image_id"), "file_name": path.name, "source": str(path),
                **entry,
            }  # fmt: skip
            if found is not None:
                entry["box_score"] = round(float(found.scores[i]), 5)
            results.append(entry)
        summary.num_instances += int(finite.sum())
        if draw:
            keep = np.flatnonzero(finite)
            canvas = draw_people(
                image, result.keypoints[keep], predictor.skeleton, result.confidence[keep],
                None if result.region is None else result.region[keep], result.boxes[keep],
                None if result.sigma_calibrated is None else result.sigma_calibrated[keep],
            )  # fmt: skip
            ok, png = cv2.imencode(".png", canvas)
            if not ok:
                raise OSError(f"cannot encode the overlay of {path} as PNG")
            write_atomic(out / overlay, png.tobytes())
    if dets is not None and summary.num_boxes == 0:
        # not one box to predict: no image had usable input, as when every image is unreadable
        summary.failed += [(str(p), f"no usable box in {dets.source}") for p in unboxed]
        summary.no_boxes = []
    write_atomic(summary.predictions, json.dumps(results, allow_nan=False).encode())
    return summary
