"""Keypoint specifications (names, flip pairs, limbs, OKS sigmas): the built-in tables and custom ones.

The one table of skeletons in posereg: datasets, transforms, metrics, the synthetic generator and
visualisation all read from here. A run's skeleton comes from :func:`resolve_skeleton`, which
takes a built-in name (:data:`SKELETONS`), a YAML file, ``auto`` (read from a COCO json's person
category) or a dict saved by :meth:`Skeleton.to_dict` (run configs and checkpoints keep that).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Skeleton",
    "SkeletonError",
    "SKELETONS",
    "get_skeleton",
    "resolve_skeleton",
    "skeleton_from_coco",
    "skeleton_from_yaml",
    "field_keypoint_count",
    "keypoint_field_holding",
    "infer_flip_pairs",
    "default_sigmas",
    "MEAN_COCO_SIGMA",
    "COCO17",
    "MPII16",
    "H36M17",
    "CROWDPOSE14",
    "AIC14",
    "POSETRACK17",
    "HALPE26",
    "HUMANART21",
]

logger = logging.getLogger("posereg.skeletons")


class SkeletonError(ValueError):
    """A skeleton specification posereg cannot use; the message names the file (or config key)
    and the field at fault: ``<source>: <field>: <what is wrong>``."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source, self.field, self.problem = str(source), field, problem
        where = f"{self.source}: {field}" if field else self.source
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        return (type(self), (self.source, self.field, self.problem))


@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout.

    Arguments:
        name: short identifier (``"coco17"``, ``"crowdpose14"``, a YAML file's stem, ``"auto:person"``).
        keypoint_names: the K joint names, in dataset order.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip; each index in at most
            one pair.
        limbs: (a, b) index pairs drawn as bones.
        sigmas: per-keypoint OKS constants sigma_i (OKS uses k_i = 2 sigma_i), K positive numbers.

    Raises:
        SkeletonError: names not unique, a pair index outside 0..K-1, a keypoint in two flip
            pairs, or sigmas of the wrong length or not positive.

    Example:
        >>> COCO17.num_keypoints, COCO17.index("left_wrist")
        (17, 9)
        >>> Skeleton.from_dict(COCO17.to_dict()) == COCO17
        True
    """

    name: str
    keypoint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]

    def __post_init__(self) -> None:
        k = len(self.keypoint_names)
        src = f"skeleton {self.name}"
        if k == 0:
            raise SkeletonError(src, "keypoint_names", "no keypoints")
        dup = sorted({n for n in self.keypoint_names if self.keypoint_names.count(n) > 1})
        if dup:
            raise SkeletonError(src, "keypoint_names", f"names must be unique, repeated: {dup}")
        if len(self.sigmas) != k:
            raise SkeletonError(src, "sigmas", f"{len(self.sigmas)} sigmas for {k} keypoints")
        if not all(math.isfinite(s) and s > 0 for s in self.sigmas):
            raise SkeletonError(
                src, "sigmas", f"sigmas must be positive numbers, got {self.sigmas}"
            )
        for field, pairs in (("flip_pairs", self.flip_pairs), ("limbs", self.limbs)):
            for a, b in pairs:
                if not (0 <= a < k and 0 <= b < k) or a == b:
                    raise SkeletonError(
                        src,
                        field,
                        f"index pair ({a}, {b}) must be two different indices in 0..{k - 1}",
                    )
        flat = [i for pair in self.flip_pairs for i in pair]
        twice = sorted({self.keypoint_names[i] for i in flat if flat.count(i) > 1})
        if twice:
            raise SkeletonError(src, "flip_pairs", f"keypoints in more than one pair: {twice}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def index(self, keypoint_name: str) -> int:
        """Index of a keypoint by name; ValueError listing the valid names if unknown."""
        try:
            return self.keypoint_names.index(keypoint_name)
        except ValueError:
            raise ValueError(
                f"{self.name} has no keypoint {keypoint_name!r}; valid: {', '.join(self.keypoint_names)}"
            ) from None

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation (K,) such that ``flipped[:, i] = keypoints[:, flip_index[i]]`` after mirroring."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def oks_k(self) -> np.ndarray:
        """COCO's k_i = 2 sigma_i (K,), the per-keypoint spread used by OKS."""
        return 2.0 * np.asarray(self.sigmas, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, 0-based indices) for YAML/json and checkpoints; :meth:`from_dict` inverts it."""
        return {
            "name": self.name,
            "keypoint_names": list(self.keypoint_names),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "limbs": [list(p) for p in self.limbs],
            "sigmas": [float(s) for s in self.sigmas],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "skeleton dict") -> Skeleton:
        """A skeleton from :meth:`to_dict`'s layout (pairs as 0-based indices or as names).

        Raises:
            SkeletonError: a missing or malformed field, named with ``source``.
        """
        return _skeleton_from_mapping(data, source, default_name="custom", sigmas_required=True)


COCO17 = Skeleton(
    name="coco17",
    keypoint_names=(
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),  # fmt: skip
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    limbs=(
        (15, 13),
        (13, 11),
        (16, 14),
        (14, 12),
        (11, 12),
        (5, 11),
        (6, 12),
        (5, 6),
        (5, 7),
        (6, 8),
        (7, 9),
        (8, 10),
        (1, 2),
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (3, 5),
        (4, 6),
    ),  # fmt: skip  (COCO's own "skeleton" field, 0-based)
    # COCO's per-keypoint OKS sigmas (pycocotools COCOeval.Params.kpt_oks_sigmas).
    sigmas=(
        0.026,
        0.025,
        0.025,
        0.035,
        0.035,
        0.079,
        0.079,
        0.072,
        0.072,
        0.062,
        0.062,
        0.107,
        0.107,
        0.087,
        0.087,
        0.089,
        0.089,
    ),  # fmt: skip
)

MPII16 = Skeleton(
    name="mpii16",
    keypoint_names=(
        "right_ankle",
        "right_knee",
        "right_hip",
        "left_hip",
        "left_knee",
        "left_ankle",
        "pelvis",
        "thorax",
        "upper_neck",
        "head_top",
        "right_wrist",
        "right_elbow",
        "right_shoulder",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
    ),  # fmt: skip
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    limbs=(
        (0, 1),
        (1, 2),
        (2, 6),
        (6, 3),
        (3, 4),
        (4, 5),
        (6, 7),
        (7, 8),
        (8, 9),
        (7, 12),
        (12, 11),
        (11, 10),
        (7, 13),
        (13, 14),
        (14, 15),
    ),  # fmt: skip
    # MPII has no official OKS constants; these are the ones MMPose uses for MPII.
    sigmas=(
        0.089,
        0.083,
        0.107,
        0.107,
        0.083,
        0.089,
        0.026,
        0.026,
        0.026,
        0.026,
        0.062,
        0.072,
        0.179,
        0.179,
        0.072,
        0.062,
    ),  # fmt: skip
)

H36M17 = Skeleton(
    name="h36m17",
    keypoint_names=(
        "pelvis",
        "right_hip",
        "right_knee",
        "right_ankle",
        "left_hip",
        "left_knee",
        "left_ankle",
        "spine",
        "thorax",
        "neck",
        "head",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
    ),  # fmt: skip
    flip_pairs=((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16)),
    limbs=(
        (0, 1),
        (1, 2),
        (2, 3),
        (0, 4),
        (4, 5),
        (5, 6),
        (0, 7),
        (7, 8),
        (8, 9),
        (9, 10),
        (8, 11),
        (11, 12),
        (12, 13),
        (8, 14),
        (14, 15),
        (15, 16),
    ),  # fmt: skip
    # Human3.6M has no OKS constants: each joint takes the COCO sigma of its nearest COCO
    # counterpart (pelvis/spine as hips, thorax as shoulders, neck as nose, head as ears).
    sigmas=(
        0.107,
        0.107,
        0.087,
        0.089,
        0.107,
        0.087,
        0.089,
        0.107,
        0.079,
        0.026,
        0.035,
        0.079,
        0.072,
        0.062,
        0.079,
        0.072,
        0.062,
    ),  # fmt: skip
)

# The tables below follow MMPose's dataset descriptions (configs/_base_/datasets/*.py), which
# cite each dataset's own evaluation code for the sigmas.
CROWDPOSE14 = Skeleton(
    name="crowdpose14",
    keypoint_names=(
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
        "top_head",
        "neck",
    ),  # fmt: skip
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    limbs=(
        (10, 8),
        (8, 6),
        (11, 9),
        (9, 7),
        (6, 7),
        (0, 6),
        (1, 7),
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (3, 5),
        (12, 13),
        (1, 13),
        (0, 13),
    ),  # fmt: skip
    # crowdposetools (CrowdPose's COCO API fork): COCO's body sigmas, head top and neck 0.079.
    sigmas=(
        0.079,
        0.079,
        0.072,
        0.072,
        0.062,
        0.062,
        0.107,
        0.107,
        0.087,
        0.087,
        0.089,
        0.089,
        0.079,
        0.079,
    ),  # fmt: skip
)

AIC14 = Skeleton(
    name="aic14",
    keypoint_names=(
        "right_shoulder",
        "right_elbow",
        "right_wrist",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "right_hip",
        "right_knee",
        "right_ankle",
        "left_hip",
        "left_knee",
        "left_ankle",
        "head_top",
        "neck",
    ),  # fmt: skip
    flip_pairs=((0, 3), (1, 4), (2, 5), (6, 9), (7, 10), (8, 11)),
    limbs=(
        (2, 1),
        (1, 0),
        (0, 13),
        (13, 3),
        (3, 4),
        (4, 5),
        (8, 7),
        (7, 6),
        (6, 9),
        (9, 10),
        (10, 11),
        (12, 13),
        (0, 6),
        (3, 9),
    ),  # fmt: skip
    # AI Challenger's keypoint_eval.py gives delta = 2 sigma per keypoint; these are delta / 2.
    sigmas=(
        0.01388152,
        0.01515228,
        0.01057665,
        0.01417709,
        0.01497891,
        0.01402144,
        0.03909642,
        0.03686941,
        0.01981803,
        0.03843971,
        0.03412318,
        0.02415081,
        0.01291456,
        0.01236173,
    ),  # fmt: skip
)

POSETRACK17 = Skeleton(
    name="posetrack17",
    keypoint_names=(
        "nose",
        "head_bottom",
        "head_top",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),  # fmt: skip
    # head_bottom and head_top sit where COCO has the eyes, but they are centre joints: no pair.
    flip_pairs=((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    limbs=(
        (15, 13),
        (13, 11),
        (16, 14),
        (14, 12),
        (11, 12),
        (5, 11),
        (6, 12),
        (5, 6),
        (5, 7),
        (6, 8),
        (7, 9),
        (8, 10),
        (0, 1),
        (0, 2),
        (1, 5),
        (1, 6),
    ),  # fmt: skip
    # PoseTrack's evaluation (poseval) and MMPose use COCO-17's sigmas position by position.
    sigmas=COCO17.sigmas,
)

HALPE26 = Skeleton(
    name="halpe26",
    keypoint_names=(
        *COCO17.keypoint_names,
        "head",
        "neck",
        "hip",
        "left_big_toe",
        "right_big_toe",
        "left_small_toe",
        "right_small_toe",
        "left_heel",
        "right_heel",
    ),  # fmt: skip
    flip_pairs=(*COCO17.flip_pairs, (20, 21), (22, 23), (24, 25)),
    limbs=(
        (15, 13),
        (13, 11),
        (11, 19),
        (16, 14),
        (14, 12),
        (12, 19),
        (17, 18),
        (18, 19),
        (18, 5),
        (5, 7),
        (7, 9),
        (18, 6),
        (6, 8),
        (8, 10),
        (1, 2),
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (3, 5),
        (4, 6),
        (15, 20),
        (15, 22),
        (15, 24),
        (16, 21),
        (16, 23),
        (16, 25),
    ),  # fmt: skip
    # Halpe-FullBody's halpecocotools cocoeval.py (body and feet part): COCO-17's sigmas, head
    # and neck 0.026, hip 0.066, the six foot points 0.079.
    sigmas=(*COCO17.sigmas, 0.026, 0.026, 0.066, 0.079, 0.079, 0.079, 0.079, 0.079, 0.079),
)

# Human-Art (MMPose's humanart21.py): COCO-17 and a finger tip per hand and a toe tip per foot,
# in the annotations' ``keypoints_21`` field (their ``keypoints`` field holds the COCO-17 part).
HUMANART21 = Skeleton(
    name="humanart21",
    keypoint_names=(
        *COCO17.keypoint_names,
        "left_finger",
        "right_finger",
        "left_toe",
        "right_toe",
    ),  # fmt: skip
    flip_pairs=(*COCO17.flip_pairs, (17, 18), (19, 20)),
    limbs=(*COCO17.limbs, (15, 19), (16, 20), (9, 17), (10, 18)),
    # MMPose's humanart21.py: COCO-17's sigmas, the four new points 0.089 (as the ankles).
    sigmas=(*COCO17.sigmas, 0.089, 0.089, 0.089, 0.089),
)

SKELETONS: dict[str, Skeleton] = {
    s.name: s
    for s in (COCO17, MPII16, H36M17, CROWDPOSE14, AIC14, POSETRACK17, HALPE26, HUMANART21)
}

#: sigma of a keypoint whose name no built-in table knows: the mean of COCO-17's sigmas.
MEAN_COCO_SIGMA = float(np.mean(COCO17.sigmas))


def get_skeleton(name: str) -> Skeleton:
    """Look up a built-in skeleton by name; ValueError listing the valid names if unknown."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; valid: {', '.join(SKELETONS)}") from None


# --------------------------------------------------------------------------- custom skeletons
def resolve_skeleton(
    spec: str | Mapping[str, Any] | Skeleton,
    ann_file: str | Path | None = None,
    keypoints_field: str = "keypoints",
) -> Skeleton:
    """The skeleton a config's ``data.skeleton`` names: the one place a spec becomes a Skeleton.

    Arguments:
        spec: a built-in name (:data:`SKELETONS`), a YAML file (``*.yaml``/``*.yml``, see
            :func:`skeleton_from_yaml`), ``"auto"`` (read from ``ann_file``'s person category, see
            :func:`skeleton_from_coco`), a dict from :meth:`Skeleton.to_dict` (what runs save), or
            a Skeleton (returned as is).
        ann_file: the COCO annotation json ``auto`` reads.
        keypoints_field: the annotations' keypoint field the data is read from
            (``data.keypoints_field``); ``auto`` takes as many names as it holds keypoints.

    Raises:
        SkeletonError: an unknown name, a missing or malformed file, ``auto`` without a json.
    """
    if isinstance(spec, Skeleton):
        return spec
    if isinstance(spec, Mapping):
        return Skeleton.from_dict(spec, source="data.skeleton")
    if not isinstance(spec, str):
        raise SkeletonError(
            "data.skeleton", "", f"expected a name, a YAML file or 'auto', got {spec!r}"
        )
    if spec in SKELETONS:
        return SKELETONS[spec]
    if spec == "auto":
        if ann_file is None:
            raise SkeletonError(
                "data.skeleton",
                "",
                "'auto' reads the skeleton from a COCO annotation file; none given",
            )
        return skeleton_from_coco(ann_file, keypoints_field)
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return skeleton_from_yaml(spec)
    raise SkeletonError(
        "data.skeleton",
        "",
        f"unknown skeleton {spec!r}; give a built-in name ({', '.join(SKELETONS)}), a YAML file "
        "(*.yaml) or 'auto' (read from the COCO json's person category)",
    )


def skeleton_from_yaml(path: str | Path) -> Skeleton:
    """A skeleton from a YAML file.

    Fields: ``keypoint_names`` (K strings, required), ``flip_pairs`` and ``limbs`` (lists of
    pairs of names or 0-based indices; default none), ``sigmas`` (K positive numbers; when
    missing, :func:`default_sigmas` with a warning), ``name`` (default: the file's stem).

    Example file::

        name: dog5
        keypoint_names: [nose, left_ear, right_ear, left_paw, right_paw]
        flip_pairs: [[left_ear, right_ear], [left_paw, right_paw]]
        limbs: [[nose, left_ear], [nose, right_ear]]
        sigmas: [0.026, 0.035, 0.035, 0.089, 0.089]

    Raises:
        SkeletonError: naming the file and the field.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SkeletonError(path, "", "skeleton file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SkeletonError(path, "", f"cannot read the skeleton file ({e})") from None
    except yaml.YAMLError as e:
        raise SkeletonError(path, "", f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SkeletonError(
            path, "", "expected a mapping with keypoint_names, flip_pairs, limbs, sigmas"
        )
    return _skeleton_from_mapping(data, str(path), default_name=path.stem, sigmas_required=False)


def skeleton_from_coco(ann_file: str | Path, keypoints_field: str = "keypoints") -> Skeleton:
    """The skeleton of a COCO json's person category (``data.skeleton: auto``).

    The person category is the first category with a non-empty ``keypoints`` list (the one the
    loader reads). Names: its ``keypoints``. Limbs: its ``skeleton`` (1-based index pairs, as in
    COCO; a list that contains 0 and no K is read as 0-based, with a warning). Flip pairs:
    :func:`infer_flip_pairs`. Sigmas: its ``sigmas`` list when present, else
    :func:`default_sigmas` with a warning that AP is then not comparable with published numbers.

    When the annotations' ``keypoints_field`` holds fewer keypoints than the category lists
    names (Human-Art: 21 names, 17 keypoints in ``keypoints``, all 21 in ``keypoints_21``), the
    skeleton is the first that many names (their limbs and sigmas): the ones the field holds.

    Raises:
        SkeletonError: naming the file and the field.
    """
    source = str(ann_file)
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise SkeletonError(
            source, "", "annotation file not found (data.skeleton: auto reads it)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SkeletonError(source, "", f"not valid JSON ({e})") from None
    cats = data.get("categories") if isinstance(data, dict) else None
    person = next(
        (c for c in cats or [] if isinstance(c, dict) and c.get("keypoints")),
        None,
    )
    if person is None:
        raise SkeletonError(
            source,
            "categories",
            "no category with a 'keypoints' list, so data.skeleton: auto has nothing to read; "
            "give a built-in name or a YAML file",
        )
    cat = f"category {person.get('id')!r} ({person.get('name', '?')})"
    names = _names(person["keypoints"], source, f"{cat}: keypoints")
    k = len(names)
    held = field_keypoint_count(data, person.get("id"), keypoints_field)
    limbs_raw = person.get("skeleton") or []
    if not isinstance(limbs_raw, list) or not all(_is_int_pair(p) for p in limbs_raw):
        raise SkeletonError(source, f"{cat}: skeleton", "expected a list of [a, b] integer pairs")
    flat = [int(i) for p in limbs_raw for i in p]
    if flat and min(flat) >= 1 and max(flat) <= k:
        limbs = [(int(a) - 1, int(b) - 1) for a, b in limbs_raw]
    elif flat and min(flat) >= 0 and max(flat) < k:
        logger.warning(
            "%s: %s: skeleton holds index 0, read as 0-based (COCO's is 1-based)", source, cat
        )
        limbs = [(int(a), int(b)) for a, b in limbs_raw]
    elif flat:
        raise SkeletonError(
            source,
            f"{cat}: skeleton",
            f"limb indices must be in 1..{k} (1-based), got {min(flat)}..{max(flat)}",
        )
    else:
        limbs = []
    if person.get("sigmas") is not None:
        sigmas = _sigmas(person["sigmas"], k, source, f"{cat}: sigmas")
    else:
        sigmas = default_sigmas(names)
        _warn_default_sigmas(source, names)
    if held is not None and 0 < held < k:
        # the field holds the first `held` of the names (Human-Art's `keypoints`: COCO-17 of 21);
        # the loader warns once that the other names are not read
        logger.info(
            "%s: %s lists %d names, the annotations' %r hold %d keypoints: the skeleton is its "
            "first %d names",
            source,
            cat,
            k,
            keypoints_field,
            held,
            held,
        )
        names, sigmas, k = names[:held], sigmas[:held], held
        limbs = [(a, b) for a, b in limbs if a < k and b < k]
    flip_pairs = infer_flip_pairs(names)
    paired = {i for p in flip_pairs for i in p}
    lonely = [n for i, n in enumerate(names) if _side(n) is not None and i not in paired]
    if lonely:
        logger.warning(
            "%s: %s: no left/right partner found for %s; a flip leaves them in place",
            source,
            cat,
            lonely,
        )
    skeleton = Skeleton(
        name=f"auto:{person.get('name', 'person')}",
        keypoint_names=tuple(names),
        flip_pairs=tuple(flip_pairs),
        limbs=tuple(limbs),
        sigmas=tuple(sigmas),
    )
    logger.info(
        "%s: skeleton from %s: %d keypoints, flip pairs %s",
        source,
        cat,
        k,
        [(names[a], names[b]) for a, b in flip_pairs],
    )
    return skeleton


def field_keypoint_count(data: object, category_id: object, field: str) -> int | None:
    """How many keypoints a COCO json's annotations hold in ``field``: the most common length / 3
    among the annotations of ``category_id`` (None when none has a list there)."""
    anns = data.get("annotations") if isinstance(data, dict) else None
    lengths: dict[int, int] = {}
    for ann in anns if isinstance(anns, list) else []:
        if not isinstance(ann, dict) or ann.get("category_id", category_id) != category_id:
            continue
        values = ann.get(field)
        if isinstance(values, list) and len(values) % 3 == 0:
            lengths[len(values) // 3] = lengths.get(len(values) // 3, 0) + 1
    return max(lengths, key=lambda n: lengths[n]) if lengths else None


def keypoint_field_holding(data: object, category_id: object, num_keypoints: int) -> str | None:
    """The name of an annotation field that holds ``num_keypoints`` keypoints (``keypoints`` first,
    then fields named ``keypoints*``, e.g. Human-Art's ``keypoints_21``), or None."""
    anns = data.get("annotations") if isinstance(data, dict) else None
    ann = next(
        (
            a
            for a in (anns if isinstance(anns, list) else [])
            if isinstance(a, dict) and a.get("category_id", category_id) == category_id
        ),
        None,
    )
    if ann is None:
        return None
    fields = sorted(
        (f for f in ann if f.startswith("keypoints")), key=lambda f: (f != "keypoints", f)
    )
    return next(
        (f for f in fields if isinstance(ann[f], list) and len(ann[f]) == 3 * num_keypoints), None
    )


# A name is split into tokens at every character that is not a letter or digit and at case
# changes (camelCase, "LHip"); a token "left"/"l" or "right"/"r" marks the side.
_TOKEN = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SIDES = {"left": "L", "l": "L", "right": "R", "r": "R"}


def _side(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(side, the tokens with the side token blanked) or None when the name has no side token."""
    tokens = [t.lower() for t in _TOKEN.findall(name)]
    marks = [i for i, t in enumerate(tokens) if t in _SIDES]
    if len(marks) != 1:
        return None
    i = marks[0]
    return _SIDES[tokens[i]], tuple("<side>" if j == i else t for j, t in enumerate(tokens))


def infer_flip_pairs(names: list[str] | tuple[str, ...]) -> list[tuple[int, int]]:
    """Left/right pairs from keypoint names.

    Rule: split each name into tokens (at non-alphanumeric characters and at case changes, so
    ``left_eye``, ``left-eye``, ``Left Eye``, ``leftEye``, ``l_eye``, ``eye_l`` and ``LEye`` all
    give a side token and ``eye``). A name with exactly one side token (``left``/``l`` or
    ``right``/``r``, any case) pairs with the one name whose tokens are the same except for the
    opposite side, at the same position. Names with no side token are centre joints; a side
    name with no partner, or with more than one candidate, stays unpaired.

    Returns:
        (left index, right index) pairs, ordered by the left index.
    """
    keyed: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for i, n in enumerate(names):
        side = _side(n)
        if side is not None:
            keyed.setdefault(side, []).append(i)
    pairs = []
    for (side, rest), left in keyed.items():
        if side != "L":
            continue
        right = keyed.get(("R", rest), [])
        if len(left) == 1 and len(right) == 1:
            pairs.append((left[0], right[0]))
    return sorted(pairs)


def default_sigmas(names: list[str] | tuple[str, ...]) -> list[float]:
    """OKS sigmas for keypoints a file gives none for.

    A name that a built-in table holds takes that table's sigma (tables searched in the order
    coco17, crowdpose14, halpe26, humanart21, posetrack17, mpii16, h36m17; AI Challenger's much
    smaller sigmas are never borrowed); any other name takes :data:`MEAN_COCO_SIGMA` (0.0669).
    """
    table: dict[str, float] = {}
    for skel in (COCO17, CROWDPOSE14, HALPE26, HUMANART21, POSETRACK17, MPII16, H36M17):
        for n, s in zip(skel.keypoint_names, skel.sigmas, strict=True):
            table.setdefault(n, s)
    return [table.get(n.lower(), MEAN_COCO_SIGMA) for n in names]


def _warn_default_sigmas(source: str, names: list[str]) -> None:
    known = sum(
        1 for s, n in zip(default_sigmas(names), names, strict=True) if n.lower() in _known_names()
    )
    logger.warning(
        "%s: no OKS sigmas given: %d of %d keypoints take a built-in table's sigma by name, the "
        "rest the mean COCO sigma %.4f; OKS AP is then not comparable with published numbers for "
        "this dataset (add a 'sigmas' list to give them)",
        source,
        known,
        len(names),
        MEAN_COCO_SIGMA,
    )


def _known_names() -> set[str]:
    return {
        n
        for s in (COCO17, HALPE26, HUMANART21, CROWDPOSE14, POSETRACK17, MPII16, H36M17)
        for n in s.keypoint_names
    }


def _names(value: object, source: str, field: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(n, str) and n for n in value):
        raise SkeletonError(source, field, f"expected a non-empty list of names, got {value!r}")
    if len(set(value)) != len(value):
        dup = sorted({n for n in value if value.count(n) > 1})
        raise SkeletonError(source, field, f"names must be unique, repeated: {dup}")
    return list(value)


def _is_int_pair(p: object) -> bool:
    return (
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(i, int) and not isinstance(i, bool) for i in p)
    )


def _sigmas(value: object, k: int, source: str, field: str) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != k:
        got = len(value) if isinstance(value, list | tuple) else repr(value)
        raise SkeletonError(source, field, f"expected {k} numbers (one per keypoint), got {got}")
    if not all(
        isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) and s > 0
        for s in value
    ):
        raise SkeletonError(source, field, f"sigmas must be positive numbers, got {list(value)}")
    return [float(s) for s in value]


def _pairs(value: object, names: list[str], source: str, field: str) -> list[tuple[int, int]]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise SkeletonError(source, field, f"expected a list of [a, b] pairs, got {value!r}")
    out = []
    for n, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise SkeletonError(source, f"{field}[{n}]", f"expected a pair [a, b], got {pair!r}")
        idx = []
        for item in pair:
            if isinstance(item, str):
                if item not in names:
                    raise SkeletonError(
                        source,
                        f"{field}[{n}]",
                        f"unknown keypoint {item!r}; names: {', '.join(names)}",
                    )
                idx.append(names.index(item))
            elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
                idx.append(item)
            else:
                raise SkeletonError(
                    source,
                    f"{field}[{n}]",
                    f"{item!r} is neither a keypoint name nor an index in 0..{len(names) - 1}",
                )
        out.append((idx[0], idx[1]))
    return out


def _skeleton_from_mapping(
    data: Mapping[str, Any], source: str, default_name: str, sigmas_required: bool
) -> Skeleton:
    if not isinstance(data, Mapping):
        raise SkeletonError(source, "", f"expected a mapping, got {data!r}")
    known = {"name", "keypoint_names", "flip_pairs", "limbs", "sigmas"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SkeletonError(source, unknown[0], f"unknown field; valid: {', '.join(sorted(known))}")
    if "keypoint_names" not in data:
        raise SkeletonError(source, "keypoint_names", "missing (the K keypoint names, in order)")
    names = _names(data["keypoint_names"], source, "keypoint_names")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise SkeletonError(source, "name", f"expected a string, got {name!r}")
    if data.get("sigmas") is None:
        if sigmas_required:
            raise SkeletonError(source, "sigmas", f"missing ({len(names)} OKS sigmas)")
        sigmas = default_sigmas(names)
        _warn_default_sigmas(source, names)
    else:
        sigmas = _sigmas(data["sigmas"], len(names), source, "sigmas")
    try:
        return Skeleton(
            name=name,
            keypoint_names=tuple(names),
            flip_pairs=tuple(_pairs(data.get("flip_pairs"), names, source, "flip_pairs")),
            limbs=tuple(_pairs(data.get("limbs"), names, source, "limbs")),
            sigmas=tuple(sigmas),
        )
    except SkeletonError as e:
        raise SkeletonError(source, e.field, e.problem) from None
