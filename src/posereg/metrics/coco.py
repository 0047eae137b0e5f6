"""COCO keypoint evaluation (OKS AP/AR through pycocotools' COCOeval), OKS-NMS and instance scores.

``evaluate_coco`` runs the official COCOeval (or, optionally, faster-coco-eval, which gives the
same numbers) with any OKS sigma table, and can evaluate against the synthetic sets' noise-free
truth (``keypoints_clean``) instead of the labels. The ground truth first goes through
:func:`prepare_coco_gt`, which makes COCO-format files as they are (no ``area``, no ``iscrowd``,
an annotation id 0) evaluate as the labels mean. The official RLE evaluation with detected boxes
is: per-keypoint confidence -> instance score (det score + mean + max) -> OKS-NMS (0.9) per image
-> COCOeval; :func:`make_coco_predictions` and :func:`oks_nms_per_image` do those steps.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posereg.data.badinput import BadInputError
from posereg.data.coco import person_category
from posereg.data.instances import AREA_PER_BOX_AREA
from posereg.skeletons import COCO17

__all__ = [
    "COCOKeypointResult",
    "COCOBoxResult",
    "evaluate_coco_boxes",
    "load_coco_gt",
    "prepare_coco_gt",
    "AREA_PER_BOX_AREA",
    "evaluate_coco",
    "evaluate_coco_reports",
    "oks",
    "oks_nms",
    "oks_nms_per_image",
    "match_by_box",
    "INSTANCE_SCORE_RULES",
    "instance_score",
    "make_coco_predictions",
    "COCO_EVAL_BACKENDS",
]

COCO_EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")
logger = logging.getLogger("posereg.metrics")

_STAT_NAMES = ("ap", "ap50", "ap75", "ap_m", "ap_l", "ar", "ar50", "ar75", "ar_m", "ar_l")


@dataclass(frozen=True)
class COCOKeypointResult:
    """The ten COCOeval keypoint numbers, in [0, 1] (-1 where COCOeval has nothing to average).

    Attributes:
        ap, ap50, ap75, ap_m, ap_l: AP over OKS .50:.05:.95, at .50, at .75, medium, large.
        ar, ar50, ar75, ar_m, ar_l: the same for AR.
        truth: ``"labels"`` or ``"clean"`` (evaluated against ``keypoints_clean``).
        backend: ``"pycocotools"`` or ``"faster_coco_eval"``.
        num_predictions: predictions evaluated.
        summary: COCOeval's printed table.
    """

    ap: float
    ap50: float
    ap75: float
    ap_m: float
    ap_l: float
    ar: float
    ar50: float
    ar75: float
    ar_m: float
    ar_l: float
    truth: str
    backend: str
    num_predictions: int
    summary: str

    @property
    def stats(self) -> np.ndarray:
        """The COCOeval ``stats`` vector (10,)."""
        return np.array([getattr(self, n) for n in _STAT_NAMES])

    def as_dict(self) -> dict[str, float | str | int]:
        """Plain dict without the summary text (for logs and json)."""
        out = asdict(self)
        out.pop("summary")
        return out

    def __str__(self) -> str:
        head = (
            f"COCO keypoints vs {self.truth} ({self.backend}, {self.num_predictions} predictions)"
        )
        body = " ".join(f"{n.upper()}={getattr(self, n):.4f}" for n in _STAT_NAMES)
        return f"{head}\n{body}"


def _quiet(fn: Callable, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _coco_from_dataset(dataset: dict, backend: str):
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as FastCOCO

        coco = FastCOCO()
    else:
        coco = COCO()
    coco.dataset = dataset
    _quiet(coco.createIndex)
    return coco


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _malformed(ann: dict, num_keypoints: int | None) -> str:
    """Why pycocotools cannot evaluate an annotation ("" when it can)."""
    if not (_number(ann.get("image_id")) and float(ann["image_id"]).is_integer()):
        return f"image_id {ann.get('image_id')!r} is not an integer"
    if not (_number(ann.get("category_id")) and float(ann["category_id"]).is_integer()):
        return f"category_id {ann.get('category_id')!r} is not an integer"
    box = ann.get("bbox")
    if not (isinstance(box, list | tuple) and len(box) == 4 and all(_number(v) for v in box)):
        return f"bbox {box!r} is not four numbers"
    if box[2] < 0 or box[3] < 0:
        return f"bbox {list(box)} has a negative size"
    kpts = ann.get("keypoints")
    if not (isinstance(kpts, list | tuple) and all(_number(v) for v in kpts)):
        return "keypoints are not a list of finite numbers"
    if len(kpts) % 3 or (num_keypoints is not None and len(kpts) != 3 * num_keypoints):
        expected = "a multiple of 3" if num_keypoints is None else str(3 * num_keypoints)
        return f"{len(kpts)} keypoint values, expected {expected}"
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1):  # True/False compare equal to 1/0
        return f"iscrowd {crowd!r} is not 0 or 1"
    return ""


_REPORTED: set[str] = set()


def prepare_coco_gt(
    dataset: Mapping, source: str, num_keypoints: int | None = None
) -> tuple[dict, Counter]:
    """A copy of a COCO keypoint ground truth that pycocotools evaluates as the labels mean.

    - ``area`` missing (or not a finite number > 0): ``AREA_PER_BOX_AREA x w x h`` of the box.
    - ``iscrowd`` missing: 0. ``num_keypoints`` missing: the count of keypoints with v > 0.
    - Annotation ids are renumbered 1..N in file order: pycocotools marks an unmatched ground
      truth with id 0, so an annotation whose id is 0 could never be matched (perfect
      predictions scored AP 0.69 on the fixtures); duplicate or non-integer ids are fixed too.
      Nothing outside the evaluation sees these ids (predictions name images, not annotations).
    - An annotation pycocotools cannot read (non-integer image or category id, a bbox that is
      not four numbers, keypoints that are not 3 x K finite numbers, iscrowd not 0/1) is left
      out of the evaluation, as the loader leaves it out of the dataset.

    What was changed is counted and logged once per source (a WARNING).

    Arguments:
        dataset: the COCO dict (``images``, ``annotations``, ``categories``).
        source: the file, for messages.
        num_keypoints: K, when known (the length of the sigma table).

    Returns:
        (the prepared copy, counts per change).

    Raises:
        BadInputError: no ``images``/``annotations`` list, an image entry without an integer id,
            or ``categories`` without a person category (:func:`posereg.data.coco.person_category`;
            pycocotools would score every prediction AP -1).
    """
    person_category(dict(dataset), source)
    images = dataset.get("images")
    anns = dataset.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        raise BadInputError(
            source, "", "a COCO ground truth needs 'images' and 'annotations' lists"
        )
    for i, img in enumerate(images):
        iid = img.get("id") if isinstance(img, dict) else None
        if not (_number(iid) and float(iid).is_integer()):
            raise BadInputError(source, f"image entry #{i}", f"image id {iid!r} is not an integer")
    counts: Counter = Counter()
    examples: dict[str, str] = {}
    out_anns = []
    ids = [a.get("id") if isinstance(a, dict) else None for a in anns]
    valid_ids = [i for i in ids if _number(i) and float(i).is_integer() and i > 0]
    if len(set(valid_ids)) != len(ids):
        counts["annotation ids renumbered (an id 0, negative, duplicate or non-integer)"] += 1
    for i, ann in enumerate(anns):
        record = (
            f"annotation #{i} (id {ann.get('id')!r})"
            if isinstance(ann, dict)
            else f"annotation #{i}"
        )
        why = _malformed(ann, num_keypoints) if isinstance(ann, dict) else "not an object"
        if why:
            key = "left out (malformed)"
            counts[key] += 1
            examples.setdefault(key, f"{record}: {why}")
            continue
        ann = dict(ann)
        ann["id"] = len(out_anns) + 1
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
            counts["iscrowd missing, set to 0"] += 1
        area = ann.get("area")
        if not (_number(area) and area > 0):
            w, h = ann["bbox"][2], ann["bbox"][3]
            ann["area"] = AREA_PER_BOX_AREA * float(w) * float(h)
            key = f"area missing or invalid, set to {AREA_PER_BOX_AREA} x box area"
            counts[key] += 1
            examples.setdefault(key, record)
        if not _number(ann.get("num_keypoints")):
            ann["num_keypoints"] = int(sum(1 for v in ann["keypoints"][2::3] if v > 0))
            counts["num_keypoints missing, counted from the keypoints"] += 1
        out_anns.append(ann)
    said = f"{source} {sorted(counts.items())}"
    if counts and said not in _REPORTED:  # once per file and outcome, not at every validation
        _REPORTED.add(said)
        shown = "; ".join(
            f"{k}: {n}" + (f" (e.g. {examples[k]})" if k in examples else "")
            for k, n in counts.items()
        )
        logger.warning("%s: evaluation ground truth adjusted: %s", source, shown)
    out = dict(dataset)
    out["annotations"] = out_anns
    out.setdefault("categories", [{"id": 1, "name": "person"}])
    return out, counts


def _with_clean_truth(dataset: dict, source: str) -> dict:
    """A copy of a COCO dataset whose keypoints are replaced by ``keypoints_clean``."""
    out = dict(dataset)
    anns = []
    missing = []
    for ann in dataset["annotations"]:
        ann = dict(ann)
        if "keypoints_clean" not in ann:
            missing.append(ann.get("id"))
            continue
        ann["keypoints"] = list(ann["keypoints_clean"])
        ann["num_keypoints"] = int(sum(1 for v in ann["keypoints"][2::3] if v > 0))
        anns.append(ann)
    if missing:
        shown = ", ".join(str(m) for m in missing[:5])
        raise BadInputError(
            source,
            f"annotation ids {shown}{' ...' if len(missing) > 5 else ''}",
            f"{len(missing)} annotations have no keypoints_clean; evaluation against the clean "
            "truth needs it on every annotation (use_clean=False evaluates against the labels)",
        )
    out["annotations"] = anns
    return out


def _with_keypoints_field(dataset: dict, source: str, field: str) -> dict:
    """A copy of a COCO dataset whose ``keypoints`` are each annotation's ``field`` (an annotation
    without it is left out by :func:`prepare_coco_gt`, as the loader leaves it out)."""
    anns = dataset.get("annotations")
    if not isinstance(anns, list):
        return dataset  # prepare_coco_gt says what is wrong
    dicts = [a for a in anns if isinstance(a, dict)]
    if dicts and not any(field in a for a in dicts):
        raise BadInputError(
            source, "", f"no annotation has a {field!r} field (data.keypoints_field)"
        )
    out = []
    for ann in anns:
        if isinstance(ann, dict):
            ann = dict(ann)
            ann["keypoints"] = ann.get(field)
            values = ann["keypoints"]
            if isinstance(values, list):
                ann["num_keypoints"] = sum(1 for v in values[2::3] if _number(v) and v > 0)
        out.append(ann)
    return {**dataset, "annotations": out}


def load_coco_gt(
    gt: str | Path | Mapping | COCO,
    *,
    use_clean: bool = False,
    backend: str = "pycocotools",
    num_keypoints: int | None = None,
    keypoints_field: str = "keypoints",
):
    """A COCO ground-truth object from a json path, a dict or a COCO object.

    The annotations go through :func:`prepare_coco_gt` (missing area / iscrowd filled, ids
    renumbered, malformed annotations left out), so every evaluation path gets the same truth.

    Arguments:
        gt: the ground truth.
        use_clean: replace every annotation's keypoints by its ``keypoints_clean``.
        backend: which COCO class to build (``pycocotools`` or ``faster_coco_eval``).
        num_keypoints: K when known; annotations with another keypoint count are left out.
        keypoints_field: the annotation field the truth is read from (``data.keypoints_field``,
            as the loader reads it); another than ``keypoints`` replaces ``keypoints`` and
            ``num_keypoints`` is counted from it.

    Raises:
        BadInputError: unreadable file, or no annotation has ``keypoints_field``.
    """
    if backend not in COCO_EVAL_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(COCO_EVAL_BACKENDS)}")
    if isinstance(gt, str | Path):
        source = str(gt)
        from posereg.data.coco import read_json

        dataset = read_json(gt)
    elif isinstance(gt, Mapping):
        source, dataset = "<ground-truth dict>", dict(gt)
    else:
        source, dataset = "<COCO object>", gt.dataset
    if not isinstance(dataset, dict):
        raise BadInputError(
            source, "", "top level must be a JSON object with 'images' and 'annotations'"
        )
    if keypoints_field != "keypoints":
        dataset = _with_keypoints_field(dataset, source, keypoints_field)
    dataset, _ = prepare_coco_gt(dataset, source, num_keypoints)
    if use_clean:
        dataset = _with_clean_truth(dataset, source)
    return _coco_from_dataset(dataset, backend)


def _load_predictions(predictions: Sequence[Mapping] | str | Path) -> list[dict]:
    if isinstance(predictions, str | Path):
        with open(predictions, encoding="utf-8") as f:
            predictions = json.load(f)
    # pycocotools' loadRes writes 'area', 'bbox' and 'id' into the dicts: work on copies.
    out = []
    for p in predictions:
        q = {k: v for k, v in p.items()}
        q["keypoints"] = [float(v) for v in np.asarray(p["keypoints"], dtype=np.float64).ravel()]
        q["score"] = float(p["score"])
        q["image_id"] = int(p["image_id"])
        q["category_id"] = int(p.get("category_id", 1))
        out.append(q)
    return out


def _run_cocoeval(
    evaluator: Any, person_id: int, image_ids: Sequence[int] | None
) -> tuple[list[float], str]:
    """Run a COCOeval (keypoints or boxes) on the person category (and ``image_ids``, when
    given): its ``stats`` as floats and the text ``summarize()`` printed."""
    evaluator.params.catIds = [person_id]
    if image_ids is not None:
        evaluator.params.imgIds = list(image_ids)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats], buf.getvalue()


def evaluate_coco(
    gt: str | Path | Mapping | COCO,
    predictions: Sequence[Mapping] | str | Path,
    *,
    sigmas: Sequence[float] | np.ndarray | None = None,
    use_clean: bool = False,
    backend: str = "pycocotools",
    image_ids: Sequence[int] | None = None,
    keypoints_field: str = "keypoints",
) -> COCOKeypointResult:
    """COCO OKS AP/AR of keypoint predictions.

    Arguments:
        gt: ground truth (json path, dict or COCO object).
        predictions: COCO results, ``[{image_id, category_id, keypoints (3K), score}]``, or a
            json file of them; each is scored as the ground truth's person category
            (:func:`posereg.data.coco.person_category`), whatever its ``category_id``.
        sigmas: per-keypoint OKS sigmas (K,); default COCO-17's.
        use_clean: evaluate against ``keypoints_clean`` (the synthetic sets' noise-free truth).
        backend: ``"pycocotools"`` (reference) or ``"faster_coco_eval"`` (same numbers, faster
            on large sets; ``pip install posereg[fast-eval]``).
        image_ids: restrict to these images (default: all images in the ground truth).
        keypoints_field: the annotation field the truth is read from (see :func:`load_coco_gt`).

    Returns:
        The ten numbers of COCOeval.summarize().

    Raises:
        ValueError: no predictions, or keypoint arrays of a length other than 3 x len(sigmas).
    """
    preds = _load_predictions(predictions)
    if not preds:
        raise ValueError("evaluate_coco() got no predictions")
    sig = np.asarray(COCO17.sigmas if sigmas is None else sigmas, dtype=np.float64)
    for i, p in enumerate(preds):
        if len(p["keypoints"]) != 3 * len(sig):
            raise ValueError(
                f"prediction #{i} (image id {p['image_id']}) has {len(p['keypoints'])} keypoint "
                f"values, expected {3 * len(sig)} for {len(sig)} sigmas"
            )
    coco_gt = load_coco_gt(
        gt,
        use_clean=use_clean,
        backend=backend,
        num_keypoints=len(sig),
        keypoints_field=keypoints_field,
    )
    known = set(coco_gt.getImgIds())
    unknown = sorted({p["image_id"] for p in preds} - known)
    if unknown:
        raise ValueError(
            f"predictions for image ids {unknown[:5]}{' ...' if len(unknown) > 5 else ''} that "
            "the ground truth does not have"
        )
    # posereg predicts people only: every prediction is scored as the file's person category,
    # whatever its id (a file whose person is id 7 would leave category-1 predictions unmatched).
    person = person_category(dict(coco_gt.dataset), "ground truth")
    person_id = 1 if person is None else int(person["id"])
    for p in preds:
        p["category_id"] = person_id
    coco_dt = _quiet(coco_gt.loadRes, preds)
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCOeval_faster

        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="keypoints", kpt_oks_sigmas=list(sig))
    else:
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = sig
    stats, summary = _run_cocoeval(evaluator, person_id, image_ids)
    return COCOKeypointResult(
        **dict(zip(_STAT_NAMES, stats[:10], strict=True)),
        truth="clean" if use_clean else "labels",
        backend=backend,
        num_predictions=len(preds),
        summary=summary,
    )


_BOX_STAT_NAMES = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "ar1", "ar10", "ar100", "ar_s",
                   "ar_m", "ar_l")  # fmt: skip


@dataclass(frozen=True)
class COCOBoxResult:
    """The twelve COCOeval box (``iouType="bbox"``) numbers, in [0, 1] (-1 where COCOeval has
    nothing to average): AP over IoU .50:.05:.95 (``ap``, the primary metric), at .50, at .75,
    small, medium, large; AR at 1, 10, 100 detections per image, small, medium, large.

    Attributes:
        num_detections: detections evaluated.
        summary: COCOeval's printed table.
    """

    ap: float
    ap50: float
    ap75: float
    ap_s: float
    ap_m: float
    ap_l: float
    ar1: float
    ar10: float
    ar100: float
    ar_s: float
    ar_m: float
    ar_l: float
    num_detections: int
    summary: str

    def __str__(self) -> str:
        body = " ".join(f"{n.upper()}={getattr(self, n):.4f}" for n in _BOX_STAT_NAMES)
        return f"COCO boxes ({self.num_detections} detections)\n{body}"


def evaluate_coco_boxes(
    gt: str | Path | Mapping | COCO,
    detections: Sequence[Mapping],
    *,
    image_ids: Sequence[int] | None = None,
) -> COCOBoxResult:
    """COCO box AP/AR of person detections (pycocotools' COCOeval, ``iouType="bbox"``).

    Arguments:
        gt: ground truth (json path, dict or COCO object), prepared as for keypoints
            (:func:`load_coco_gt`: crowd regions are ignore regions, as COCO evaluates them).
        detections: ``[{image_id, bbox (x, y, w, h) pixels, score}]``; each is scored as the
            ground truth's person category.
        image_ids: restrict to these images (default: all images of the ground truth).

    Returns:
        The twelve numbers of COCOeval.summarize(); with no detection at all every AP and AR is
        0 (pycocotools cannot load an empty result list) and ``num_detections`` says 0.

    Raises:
        ValueError: detections for images the ground truth does not have.
    """
    coco_gt = load_coco_gt(gt)
    person = person_category(dict(coco_gt.dataset), "ground truth")
    person_id = 1 if person is None else int(person["id"])
    dets = [
        {
            "image_id": int(d["image_id"]),
            "category_id": person_id,
            "bbox": [float(v) for v in d["bbox"]],
            "score": float(d["score"]),
        }
        for d in detections
    ]
    unknown = sorted({d["image_id"] for d in dets} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(
            f"detections for image ids {unknown[:5]}{' ...' if len(unknown) > 5 else ''} that "
            "the ground truth does not have"
        )
    if not dets:
        zeros = dict.fromkeys(_BOX_STAT_NAMES, 0.0)
        return COCOBoxResult(**zeros, num_detections=0, summary="no detections")
    evaluator = COCOeval(coco_gt, _quiet(coco_gt.loadRes, dets), iouType="bbox")
    stats, summary = _run_cocoeval(evaluator, person_id, image_ids)
    return COCOBoxResult(
        **dict(zip(_BOX_STAT_NAMES, stats[:12], strict=True)),
        num_detections=len(dets),
        summary=summary,
    )


def evaluate_coco_reports(
    gt: str | Path | Mapping | COCO,
    predictions: Sequence[Mapping] | str | Path,
    **kwargs,
) -> dict[str, COCOKeypointResult]:
    """The label report and, when every annotation carries ``keypoints_clean``, the clean one.

    Returns:
        ``{"labels": ...}`` or ``{"labels": ..., "clean": ...}``.
    """
    reports = {"labels": evaluate_coco(gt, predictions, use_clean=False, **kwargs)}
    dataset = load_coco_gt(gt).dataset
    if dataset.get("annotations") and all("keypoints_clean" in a for a in dataset["annotations"]):
        reports["clean"] = evaluate_coco(gt, predictions, use_clean=True, **kwargs)
    return reports


# --------------------------------------------------------------------------- OKS and NMS
def oks(
    keypoints: np.ndarray,
    others: np.ndarray,
    area: float | np.ndarray,
    sigmas: Sequence[float] | np.ndarray | None = None,
    visible: np.ndarray | None = None,
) -> np.ndarray:
    """Object keypoint similarity of one pose against N others.

    ``OKS = mean_i exp(-d_i^2 / (2 s^2 k_i^2))`` over the counted keypoints, ``s^2 = area``,
    ``k_i = 2 sigma_i`` (METHOD.md).

    Arguments:
        keypoints: (K, >=2) the reference pose.
        others: (N, K, >=2) poses compared with it.
        area: s^2, a scalar or (N,) (OKS-NMS uses the mean of the two areas).
        sigmas: (K,) per-keypoint sigmas; default COCO-17's.
        visible: (K,) or (N, K) mask of keypoints counted; default all.

    Returns:
        (N,) similarities in [0, 1].
    """
    sig = np.asarray(COCO17.sigmas if sigmas is None else sigmas, dtype=np.float64)
    var = (2.0 * sig) ** 2
    d2 = ((np.asarray(others)[..., :2] - np.asarray(keypoints)[None, :, :2]) ** 2).sum(-1)  # (N, K)
    area = np.asarray(area, dtype=np.float64).reshape(-1, 1)
    e = d2 / var / (area + np.spacing(1)) / 2.0
    sim = np.exp(-e)
    if visible is None:
        return sim.mean(axis=1)
    mask = np.broadcast_to(np.asarray(visible, dtype=bool), sim.shape)
    count = mask.sum(axis=1)
    return np.where(count > 0, (sim * mask).sum(axis=1) / np.maximum(count, 1), 0.0)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    threshold: float = 0.9,
    sigmas: Sequence[float] | np.ndarray | None = None,
    vis_threshold: float | None = None,
) -> np.ndarray:
    """Greedy OKS non-maximum suppression (the official rule, threshold 0.9).

    Visit poses by decreasing score; keep one, drop every remaining pose whose OKS with it
    (area = mean of the two areas) exceeds ``threshold``.

    Arguments:
        keypoints: (N, K, 3) poses (x, y, confidence) of one image.
        scores: (N,) instance scores.
        areas: (N,) areas (the official code uses the crop box area).
        threshold: OKS above which a lower-scored pose is suppressed.
        sigmas: (K,) OKS sigmas; default COCO-17's.
        vis_threshold: when set, only keypoints whose confidence exceeds it in both poses count.

    Returns:
        Indices kept, by decreasing score.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        if rest.size == 0:
            break
        visible = None
        if vis_threshold is not None:
            visible = (keypoints[i, :, 2] > vis_threshold)[None, :] & (
                keypoints[rest, :, 2] > vis_threshold
            )
        sim = oks(keypoints[i], keypoints[rest], (areas[i] + areas[rest]) / 2.0, sigmas, visible)
        order = rest[sim <= threshold]
    return np.asarray(keep, dtype=np.int64)


def match_by_box(
    boxes: np.ndarray,
    scores: np.ndarray,
    truth_boxes: np.ndarray,
    labelled: np.ndarray,
    threshold: float = 0.5,
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of predicted people to true people by box IoU, in COCOeval's
    order: predictions by decreasing score, each to the unmatched truth of highest IoU >=
    ``threshold`` (torchvision's ``box_iou``).

    By boxes, not OKS: whether a person is found does not depend on the keypoints then measured
    on it (an OKS match keeps only the people whose keypoints are already good, and biases an
    error or a coverage measured on them).

    Arguments:
        boxes: (N, 4) predicted (x, y, w, h). scores: (N,) instance scores.
        truth_boxes: (M, 4) true (x, y, w, h).
        labelled: (M,) whether each true person has a labelled keypoint; one without is never
            matched.
        threshold: the smallest IoU of a match.

    Returns:
        ``[(prediction index, truth index)]`` in the order matched.

    Example:
        >>> match_by_box(np.array([[0, 0, 10, 10], [1, 0, 10, 10.0]]), np.array([0.2, 0.9]),
        ...              np.array([[0, 0, 10, 10.0]]), np.array([True]))
        [(1, 0)]
    """
    import torch
    from torchvision.ops import box_convert, box_iou

    n, m = len(boxes), len(truth_boxes)
    if n == 0 or m == 0:
        return []
    xyxy = [
        box_convert(torch.as_tensor(np.asarray(b, dtype=np.float64)).reshape(-1, 4), "xywh", "xyxy")
        for b in (boxes, truth_boxes)
    ]
    sim = box_iou(*xyxy).numpy()  # (N, M)
    sim[:, ~np.asarray(labelled, dtype=bool)] = -1.0
    pairs: list[tuple[int, int]] = []
    free = np.ones(m, dtype=bool)
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        cand = np.where(free, sim[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= threshold:
            pairs.append((int(i), j))
            free[j] = False
    return pairs


def oks_nms_per_image(
    predictions: Sequence[Mapping],
    threshold: float = 0.9,
    sigmas: Sequence[float] | np.ndarray | None = None,
    vis_threshold: float | None = None,
) -> list[dict]:
    """Run :func:`oks_nms` within each image of a COCO results list.

    Every prediction needs ``image_id``, ``keypoints`` (3K), ``score`` and ``area``.
    """
    by_image: dict[int, list[Mapping]] = defaultdict(list)
    for p in predictions:
        by_image[int(p["image_id"])].append(p)
    out: list[dict] = []
    for image_id in sorted(by_image):
        group = by_image[image_id]
        k = len(group[0]["keypoints"]) // 3
        kpts = np.array([np.asarray(p["keypoints"], dtype=np.float64).reshape(k, 3) for p in group])
        keep = oks_nms(
            kpts,
            np.array([p["score"] for p in group]),
            np.array([p["area"] for p in group]),
            threshold,
            sigmas,
            vis_threshold,
        )
        out.extend(dict(group[i]) for i in keep)
    return out


# --------------------------------------------------------------------------- instance scores
def _score_official(keypoint_scores: np.ndarray, bbox_scores: np.ndarray | None) -> np.ndarray:
    # rlepose/trainer.py: det score + mean_k(c) + max_k(c); with ground-truth boxes mean + max.
    base = keypoint_scores.mean(axis=1) + keypoint_scores.max(axis=1)
    return base if bbox_scores is None else bbox_scores + base


def _score_mean(keypoint_scores: np.ndarray, bbox_scores: np.ndarray | None) -> np.ndarray:
    return keypoint_scores.mean(axis=1)


def _score_box_times_mean(
    keypoint_scores: np.ndarray, bbox_scores: np.ndarray | None
) -> np.ndarray:
    # SimpleBaseline / MMPose: box score x mean of the keypoint scores above 0.2.
    above = keypoint_scores > 0.2
    mean = np.where(
        above.any(axis=1),
        (keypoint_scores * above).sum(axis=1) / np.maximum(above.sum(axis=1), 1),
        0.0,
    )
    return mean if bbox_scores is None else bbox_scores * mean


def _score_box(keypoint_scores: np.ndarray, bbox_scores: np.ndarray | None) -> np.ndarray:
    return np.ones(len(keypoint_scores)) if bbox_scores is None else np.asarray(bbox_scores, float)


INSTANCE_SCORE_RULES: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]] = {
    "official": _score_official,
    "mean": _score_mean,
    "box_times_mean": _score_box_times_mean,
    "box": _score_box,
}


def instance_score(
    keypoint_scores: np.ndarray, bbox_scores: np.ndarray | None = None, rule: str = "official"
) -> np.ndarray:
    """Instance score for COCO ranking from per-keypoint confidences.

    Rules:
        ``official`` (default): ``det_score + mean_k(c) + max_k(c)``; without detection scores
        (ground-truth boxes) ``mean_k(c) + max_k(c)`` (rlepose/trainer.py).
        ``mean``: ``mean_k(c)``.
        ``box_times_mean``: ``det_score x mean of c over keypoints with c > 0.2`` (SimpleBaseline).
        ``box``: the detection score alone.

    Arguments:
        keypoint_scores: (N, K) confidences (RLE: ``c = 1 - mean_d sigma_d``).
        bbox_scores: (N,) detection scores, or None for ground-truth boxes.
        rule: one of :data:`INSTANCE_SCORE_RULES`.

    Returns:
        (N,) scores.
    """
    try:
        fn = INSTANCE_SCORE_RULES[rule]
    except KeyError:
        raise ValueError(
            f"unknown instance score rule {rule!r}; valid: {', '.join(INSTANCE_SCORE_RULES)}"
        ) from None
    kp = np.asarray(keypoint_scores, dtype=np.float64)
    bs = None if bbox_scores is None else np.asarray(bbox_scores, dtype=np.float64)
    return fn(kp, bs)


def _rounded(a: np.ndarray, decimals: int | None) -> list:
    return (a if decimals is None else a.round(decimals)).tolist()


def make_coco_predictions(
    image_ids: Sequence[int] | np.ndarray,
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray,
    bbox_scores: np.ndarray | None = None,
    areas: np.ndarray | None = None,
    *,
    rule: str = "official",
    category_id: int = 1,
    scores: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    sigma_calibrated: np.ndarray | None = None,
    region: np.ndarray | None = None,
    region_p: float | None = None,
    depth: np.ndarray | None = None,
    depth_sigma: np.ndarray | None = None,
    decimals: int | None = None,
) -> list[dict]:
    """COCO results entries from image-space predictions: the one writer of ``posereg eval``
    (:func:`posereg.engine.evaluate.coco_results`) and ``posereg predict``
    (:func:`posereg.predict.result_entries`).

    Arguments:
        image_ids: (N,) each person's image id (``Batch.image_id``).
        keypoints: (N, K, 2) image-pixel keypoints (:func:`posereg.decode.decode_crops` output).
        keypoint_scores: (N, K) per-keypoint confidences (each triplet's third value).
        bbox_scores: (N,) detection scores, or None with ground-truth boxes.
        areas: (N,) areas kept for OKS-NMS (the official code uses the crop box area,
            ``scale_w * scale_h``).
        rule: instance score rule (:func:`instance_score`).
        category_id: the person category.
        scores: (N,) instance scores already computed (``PoseResult.scores``); None:
            ``instance_score(keypoint_scores, bbox_scores, rule)``.
        boxes: (N, 4) (x, y, w, h) pixels -> ``bbox``.
        sigma, sigma_calibrated, region: (N, K, 2) pixels -> ``sigma``, ``sigma_calibrated``,
            ``region`` (with ``region_p``).
        depth, depth_sigma: (N, K) root-relative mm -> ``depth``, ``depth_sigma``.
        decimals: round the pixel values (keypoint triplets, sigma, region) to this many
            decimals, boxes to 2 and depths to 1, as ``posereg predict`` writes them; None (the
            default, evaluation's) keeps full precision, so AP is that of the unrounded
            predictions. Scores are never rounded.

    Returns:
        ``[{image_id, category_id, keypoints (3K, confidence as the third value), score[, bbox,
        sigma, sigma_calibrated, region, region_p, depth, depth_sigma, area]}]``, in order.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    kp_scores = np.asarray(keypoint_scores, dtype=np.float64)
    if scores is None:
        scores = instance_score(kp_scores, bbox_scores, rule)
    flat = np.concatenate([keypoints[..., :2], kp_scores[..., None]], axis=-1).reshape(
        len(keypoints), -1
    )
    box_decimals = None if decimals is None else 2
    depth_decimals = None if decimals is None else 1
    out = []
    for n in range(len(keypoints)):
        entry = {
            "image_id": int(image_ids[n]),
            "category_id": int(category_id),
            "keypoints": _rounded(flat[n], decimals),
            "score": float(scores[n]),
        }
        if boxes is not None:
            entry["bbox"] = _rounded(np.asarray(boxes[n], dtype=np.float64), box_decimals)
        if sigma is not None:
            entry["sigma"] = _rounded(sigma[n], decimals)
        if sigma_calibrated is not None:
            entry["sigma_calibrated"] = _rounded(sigma_calibrated[n], decimals)
        if region is not None:
            entry["region"] = _rounded(region[n], decimals)
            entry["region_p"] = region_p
        if depth is not None:
            entry["depth"] = _rounded(depth[n], depth_decimals)
        if depth_sigma is not None:
            entry["depth_sigma"] = _rounded(depth_sigma[n], depth_decimals)
        if areas is not None:
            entry["area"] = float(areas[n])
        out.append(entry)
    return out
