"""Synthetic COCO-format person-keypoint datasets, and a fast 3D-only (2D, 3D, camera) sampler.

``generate(out_dir, split, num_images, seed, config, num_workers)`` writes
``out_dir/images/<split>/*.jpg``, ``out_dir/annotations/person_keypoints_<split>.json`` and,
last, the record of the settings it was made with (:class:`SplitRecord`,
``person_keypoints_<split>.settings.json``); ``generate_3d`` / ``sample_poses`` skip rendering. Conventions and the noise model are documented
in docs/synth.md.

Determinism: images are made in fixed chunks of ``CHUNK_SIZE``; chunk c draws from
``np.random.default_rng([seed, split_key, c])`` and image i's rendering from
``default_rng([seed, split_key, i, 1])``, so the bytes depend on (seed, split, settings) only,
not on the number of workers, and a run of N images is a prefix of a run of M > N images.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posereg.skeletons import H36M17, MPII16, get_skeleton
from posereg.synth.body import POSE_CLASSES, Bodies, sample_bodies, skeleton_joint_indices
from posereg.synth.camera import (
    Cameras,
    H36MCalibrations,
    frame_person,
    load_h36m_calibrations,
    project,
)
from posereg.synth.noise import NoiseConfig, apply_label_noise
from posereg.synth.render import (
    MAX_PEOPLE,
    PARTS_PER_PERSON,
    SKIN_TONES_RGB,
    PersonView,
    draw_people,
    draw_shadows,
    keypoint_visibility,
    part_id,
    sample_appearance,
)
from posereg.synth.scene import (
    DEFAULT_PHOTO_DIR,
    TextureBank,
    build_texture_bank,
    draw_clutter,
    draw_distractor_limbs,
    draw_floor,
    draw_occluder,
    make_background,
)

__all__ = [
    "SynthConfig",
    "SplitRecord",
    "GENERATOR_VERSION",
    "read_split_record",
    "split_record_path",
    "PRESETS",
    "CAMERA_SOURCES",
    "CHUNK_SIZE",
    "synth_config",
    "generate",
    "render_scene",
    "render_index",
    "RenderedScene",
    "PoseSamples",
    "sample_poses",
    "generate_3d",
]

CHUNK_SIZE = 16
# Raise when the same (settings, seed, split) would render different images or labels, so that a
# set recorded with an older version is regenerated rather than reused.
GENERATOR_VERSION = 1
NEAR_MM = 200.0  # people with a joint nearer to the camera than this are not placed
CAMERA_SOURCES = ("random", "h36m")
IMAGE_FORMATS = ("jpg", "png")
# Silhouette area / area of the box around the projected keypoints, measured on 300 rendered
# single, unoccluded, untruncated people (medium preset): median 0.61 for COCO-17, 0.57 for
# H36M-17, 10-90 % range 0.4-0.9. The 3D-only mode's stand-in for the rendered area when it
# draws noisy 2D labels.
AREA_PER_KEYPOINT_BOX = 0.6


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic data generator (defaults = the "medium" preset).

    Arguments:
        image_size: (h, w) of each image, pixels.
        people_per_image: (min, max) people per image, inclusive; the first is framed by the
            camera, the others stand around it (crowds, overlaps).
        keypoint_set: skeleton of the ``keypoints`` field (``posereg.skeletons``: coco17,
            mpii16, h36m17); its OKS constants set the label noise.
        pose_classes: pose classes to draw from, uniformly (``body.POSE_CLASSES``).
        pose_spread: scale of the random variation within each pose class.
        person_height_frac: (min, max) size of the framed person (its bounding box's largest
            side) as a fraction of the image height.
        camera: "random" (look-at cameras framed on a person) or "h36m" (real Human3.6M
            calibrations, people placed in the capture area).
        camera_file: Human3.6M ``cameras.json`` (None: the one in posereg/samples/h36m).
        fov_deg: (min, max) horizontal field of view of random cameras, degrees.
        elevation_deg: (min, max) elevation of random cameras above the person's centre.
        roll_std_deg: standard deviation of the camera roll.
        truncation_prob: probability that the framed person is cut by an image border.
        clutter_shapes: (min, max) random shapes drawn on the background per image.
        distractor_limbs: (min, max) limb-like capsules drawn on the background per image.
        occluder_prob: probability per person of an object in front of it.
        floor_prob: probability that the floor (below the horizon) gets its own texture.
        photo_background_prob: probability of a real-photo crop as background instead of a
            procedural texture.
        photo_dir: folder with the real photos (None: posereg/samples).
        texture_bank_size: number of procedural background textures per dataset.
        image_format: "jpg" or "png".
        jpeg_quality: JPEG quality (1-100).
        min_person_area: people with fewer visible pixels get no annotation.
        noise: the label-noise model.

    Example:
        >>> SynthConfig.preset("easy").noise.scale
        0.5
    """

    image_size: tuple[int, int] = (256, 256)
    people_per_image: tuple[int, int] = (1, 3)
    keypoint_set: str = "coco17"
    pose_classes: tuple[str, ...] = (
        "standing",
        "walking",
        "running",
        "sitting",
        "crouching",
        "reaching",
        "arms_raised",
    )
    pose_spread: float = 1.0
    person_height_frac: tuple[float, float] = (0.45, 0.9)
    camera: str = "random"
    camera_file: str | None = None
    fov_deg: tuple[float, float] = (40.0, 70.0)
    elevation_deg: tuple[float, float] = (-10.0, 40.0)
    roll_std_deg: float = 6.0
    truncation_prob: float = 0.15
    clutter_shapes: tuple[int, int] = (5, 20)
    distractor_limbs: tuple[int, int] = (0, 3)
    occluder_prob: float = 0.3
    floor_prob: float = 0.7
    photo_background_prob: float = 0.0
    photo_dir: str | None = None
    texture_bank_size: int = 24
    image_format: str = "jpg"
    jpeg_quality: int = 90
    min_person_area: int = 16
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SynthConfig:
        """A preset ("easy", "medium", "hard") with optional field overrides.

        Raises:
            ValueError: unknown preset (lists the valid names) or unknown field.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown synth preset {name!r}; valid: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        """Build from a plain dict (as written in the dataset json); ValueError on unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown SynthConfig field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        kw = dict(d)
        if isinstance(kw.get("noise"), dict):
            bad = sorted(set(kw["noise"]) - set(NoiseConfig.field_names()))
            if bad:
                raise ValueError(
                    f"unknown noise field(s) {', '.join(bad)}; valid: {', '.join(NoiseConfig.field_names())}"
                )
            kw["noise"] = NoiseConfig(**kw["noise"])
        for name, value in kw.items():
            if isinstance(value, list):
                kw[name] = tuple(value)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (json-serialisable)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def with_overrides(self, overrides: dict[str, str]) -> SynthConfig:
        """A copy with fields set from strings (command-line ``--set key=value``), type-checked.

        Each value is parsed like the field's current value: numbers, ``a,b`` or ``a..b`` for
        ranges, comma-separated names for ``pose_classes``, ``none`` for optional paths;
        ``noise.<field>`` sets a field of the noise model.

        Raises:
            ValueError: unknown field (lists the valid ones) or a value of the wrong type.
        """
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        noise_changes: dict[str, Any] = {}
        for key, text in overrides.items():
            if key.startswith("noise."):
                name = key[len("noise.") :]
                if name not in NoiseConfig.field_names():
                    raise ValueError(
                        f"unknown noise field {name!r}; valid: {', '.join(NoiseConfig.field_names())}"
                    )
                noise_changes[name] = _parse_like(key, text, getattr(self.noise, name))
            elif key in known and key != "noise":
                changes[key] = _parse_like(key, text, getattr(self, key))
            else:
                valid = [k for k in known if k != "noise"] + [
                    f"noise.{n}" for n in NoiseConfig.field_names()
                ]
                raise ValueError(f"unknown synth setting {key!r}; valid: {', '.join(valid)}")
        if noise_changes:
            changes["noise"] = replace(self.noise, **noise_changes)
        return replace(self, **changes)

    def validate(self) -> None:
        """Check every setting; raise ValueError naming the bad one and the valid range."""
        h, w = self.image_size
        if not (isinstance(h, int) and isinstance(w, int) and h >= 32 and w >= 32):
            raise ValueError(f"image_size must be two integers >= 32 (h, w), got {self.image_size}")
        lo, hi = self.people_per_image
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= MAX_PEOPLE):
            raise ValueError(
                f"people_per_image must be integers 1 <= min <= max <= {MAX_PEOPLE}, got {self.people_per_image}"
            )
        get_skeleton(self.keypoint_set)  # ValueError listing the valid names
        if not self.pose_classes:
            raise ValueError(f"pose_classes must not be empty; valid: {', '.join(POSE_CLASSES)}")
        for c in self.pose_classes:
            if c not in POSE_CLASSES:
                raise ValueError(f"unknown pose class {c!r}; valid: {', '.join(POSE_CLASSES)}")
        _check_range("person_height_frac", self.person_height_frac, 0.01, 3.0)
        _check_range("fov_deg", self.fov_deg, 1.0, 170.0)
        _check_range("elevation_deg", self.elevation_deg, -80.0, 80.0)
        for name in ("clutter_shapes", "distractor_limbs"):
            a, b = getattr(self, name)
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b):
                raise ValueError(
                    f"{name} must be integers 0 <= min <= max, got {getattr(self, name)}"
                )
        for name in ("truncation_prob", "occluder_prob", "floor_prob", "photo_background_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        for name in ("pose_spread", "roll_std_deg", "min_person_area"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.camera not in CAMERA_SOURCES:
            raise ValueError(f"unknown camera {self.camera!r}; valid: {', '.join(CAMERA_SOURCES)}")
        if self.camera == "h36m":
            load_h36m_calibrations(self.camera_file)  # FileNotFoundError naming the path
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"unknown image_format {self.image_format!r}; valid: {', '.join(IMAGE_FORMATS)}"
            )
        if not (isinstance(self.jpeg_quality, int) and 1 <= self.jpeg_quality <= 100):
            raise ValueError(f"jpeg_quality must be an integer in 1..100, got {self.jpeg_quality}")
        if not (isinstance(self.texture_bank_size, int) and self.texture_bank_size >= 1):
            raise ValueError(
                f"texture_bank_size must be an integer >= 1, got {self.texture_bank_size}"
            )
        if self.photo_background_prob > 0 and not _photo_dir(self).is_dir():
            raise ValueError(
                f"photo_background_prob > 0 but the photo folder does not exist: {_photo_dir(self)}"
            )
        self.noise.validate()


def _parse_like(key: str, text: str, current: Any) -> Any:
    """Parse ``text`` into the type of ``current`` (the field's present value)."""
    try:
        if isinstance(current, tuple):
            items = [t for t in re.split(r",|\.\.", text) if t.strip()]
            kind = type(current[0]) if current else str
            if kind is str:
                return tuple(t.strip() for t in items)
            values = tuple(kind(t) for t in items)
            if len(current) == 2 and len(values) == 1:
                values = values * 2  # "2" means the range 2..2
            if len(values) != len(current):
                raise ValueError(f"expected {len(current)} values")
            return values
        if current is None or isinstance(current, str):
            return None if text.lower() == "none" else text
        if isinstance(current, bool):
            raise ValueError("booleans are not settings here")
        return type(current)(text)
    except ValueError as e:
        raise ValueError(f"bad value {text!r} for {key} (like {current!r}): {e}") from None


def _check_range(name: str, value: tuple[float, float], lo: float, hi: float) -> None:
    a, b = value
    if not lo <= a <= b <= hi:
        raise ValueError(f"{name} must be (min, max) with {lo} <= min <= max <= {hi}, got {value}")


def _photo_dir(config: SynthConfig) -> Path:
    return Path(config.photo_dir) if config.photo_dir is not None else DEFAULT_PHOTO_DIR


# Difficulty presets: plain dicts of SynthConfig fields. "medium" is the default config.
PRESETS: dict[str, dict[str, Any]] = {
    "easy": {
        "people_per_image": (1, 2),
        "pose_classes": ("standing", "walking", "reaching", "arms_raised"),
        "pose_spread": 0.6,
        "person_height_frac": (0.6, 0.9),
        "elevation_deg": (0.0, 30.0),
        "roll_std_deg": 3.0,
        "truncation_prob": 0.05,
        "clutter_shapes": (0, 5),
        "distractor_limbs": (0, 0),
        "occluder_prob": 0.1,
        "noise": {"scale": 0.5},
    },
    "medium": {},
    "hard": {
        "people_per_image": (1, 5),
        "pose_classes": tuple(POSE_CLASSES),
        "pose_spread": 1.4,
        "person_height_frac": (0.3, 0.9),
        "elevation_deg": (-20.0, 60.0),
        "roll_std_deg": 12.0,
        "truncation_prob": 0.3,
        "clutter_shapes": (15, 40),
        "distractor_limbs": (2, 8),
        "occluder_prob": 0.5,
        "noise": {"scale": 1.5},
    },
}


def synth_config(preset: str = "medium", **overrides: Any) -> SynthConfig:
    """Shorthand for ``SynthConfig.preset(preset, **overrides)``."""
    return SynthConfig.preset(preset, **overrides)


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode())


_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_split(split: str) -> None:
    if not _SPLIT_RE.match(split):
        raise ValueError(f"split must be a simple name (letters, digits, _ . -), got {split!r}")


# ----------------------------------------------------------------------------------------------
# The record of the settings a split was made with


@dataclass(frozen=True)
class SplitRecord:
    """The settings a generated split was made with (``person_keypoints_<split>.settings.json``).

    :func:`generate` deletes the record before it starts and writes it after the annotation
    json is complete, so a split without a record is unfinished (or older than the record) and
    a split with one holds exactly what these settings render. Two splits made with equal
    records are byte-identical whatever the number of workers.

    Arguments:
        split: split name.
        num_images: images in the split.
        seed: base random seed.
        config: the resolved generator settings.
        preset: the preset the settings started from, when the caller said (informative: the
            comparison uses ``config``).
        generator_version: :data:`GENERATOR_VERSION` of the code that rendered the split.
    """

    split: str
    num_images: int
    seed: int
    config: SynthConfig
    preset: str | None = None
    generator_version: int = GENERATOR_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Json form (what the settings file holds)."""
        from posereg import __version__

        return {
            "split": self.split,
            "num_images": int(self.num_images),
            "seed": int(self.seed),
            "preset": self.preset,
            "generator_version": self.generator_version,
            "posereg_version": __version__,
            "config": json.loads(_dumps(self.config.to_dict())),  # tuples -> lists
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitRecord:
        """Inverse of :meth:`to_dict`; ValueError (or KeyError) on a malformed record."""
        return cls(
            split=str(d["split"]),
            num_images=int(d["num_images"]),
            seed=int(d["seed"]),
            config=SynthConfig.from_dict(d["config"]),
            preset=d.get("preset"),
            generator_version=int(d["generator_version"]),
        )

    def differences(self, recorded: SplitRecord) -> list[str]:
        """What differs from ``recorded``, one ``"<setting> <this> != <recorded> recorded"`` each.

        Compared: the split, number of images, seed, generator version and every field of the
        resolved config (``noise.<field>`` for the noise model); not the preset's name.
        """
        out = []
        for name in ("split", "num_images", "seed", "generator_version"):
            mine, theirs = getattr(self, name), getattr(recorded, name)
            if mine != theirs:
                out.append(f"{name} {mine} != {theirs} recorded")
        mine_cfg, theirs_cfg = self.to_dict()["config"], recorded.to_dict()["config"]
        for key in mine_cfg:
            a, b = mine_cfg[key], theirs_cfg.get(key)
            if key == "noise":
                out += [f"noise.{k} {a[k]} != {b.get(k)} recorded" for k in a if a[k] != b.get(k)]
            elif a != b:
                out.append(f"{key} {a} != {b} recorded")
        return out


def split_record_path(out_dir: str | Path, split: str) -> Path:
    """``out_dir/annotations/person_keypoints_<split>.settings.json``."""
    return Path(out_dir) / "annotations" / f"person_keypoints_{split}.settings.json"


def read_split_record(out_dir: str | Path, split: str) -> SplitRecord | None:
    """The record of ``split`` under ``out_dir``; None when there is none or it is unreadable."""
    path = split_record_path(out_dir, split)
    try:
        return SplitRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ----------------------------------------------------------------------------------------------
# Scene sampling (vectorised per chunk)


@dataclass
class _ScenePlan:
    """The people and camera of one image, before rendering."""

    bodies: Bodies  # (P,) people; joints already placed in the world
    camera: Cameras  # (1,)


def _place_in_view(
    rng: np.random.Generator,
    bodies: Bodies,
    cams: Cameras,
    counts: np.ndarray,
    image_size: tuple[int, int],
) -> None:
    """Move every image's extra people to floor spots in its camera's view, in place.

    The first person of each image stays where the camera framed it. Each extra person stands at
    a depth of 0.6-1.8 times the first person's and anywhere across the view; half of them stand
    within a metre of the first person, so people overlap. Spots closer than 500 mm to someone
    already placed are re-drawn (up to 8 times).
    """
    h, w = image_size
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for i, (s, n) in enumerate(zip(start, counts, strict=True)):
        R, t, K = cams.R[i], cams.t[i], cams.K[i]
        centre = -R.T @ t
        fwd = R[2].copy()
        fwd[2] = 0.0
        fwd /= max(np.linalg.norm(fwd), 1e-9)
        right = np.array([fwd[1], -fwd[0], 0.0])
        main = bodies.joints[s, 0, :2]
        depth = float(fwd[:2] @ (main - centre[:2]))
        half_width = 0.5 * w / K[0, 0]  # tan of half the horizontal field of view
        placed = [main]
        for q in range(s + 1, s + n):
            for _ in range(8):
                if rng.random() < 0.5:  # next to the framed person
                    d = depth + rng.uniform(-0.4, 1.2) * 1000.0
                    side = 1.0 if rng.random() < 0.5 else -1.0
                    lateral = float(right[:2] @ (main - centre[:2])) + side * rng.uniform(300, 1000)
                else:  # anywhere in view
                    d = depth * rng.uniform(0.6, 1.8)
                    lateral = rng.uniform(-1.0, 1.0) * 0.9 * d * half_width
                d = max(d, 0.5 * depth, 800.0)
                spot = centre[:2] + fwd[:2] * d + right[:2] * lateral
                if min(np.linalg.norm(spot - p) for p in placed) >= 500.0:
                    break
            placed.append(spot)
            bodies.joints[q, :, :2] += spot - bodies.joints[q, 0, :2]


def _sample_chunk(
    config: SynthConfig, seed: int, split: str, chunk: int, calib: H36MCalibrations | None
) -> list[_ScenePlan]:
    """People and cameras of the CHUNK_SIZE images of one chunk (``calib``: the Human3.6M
    calibrations when ``config.camera == "h36m"``, else None)."""
    rng = np.random.default_rng([seed, _split_key(split), chunk])
    n = CHUNK_SIZE
    lo, hi = config.people_per_image
    counts = rng.integers(lo, hi + 1, n)
    bodies = sample_bodies(rng, int(counts.sum()), config.pose_classes, config.pose_spread)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if calib is None:  # camera == "random"
        cams = frame_person(
            rng, bodies.joints[first], config.image_size, config.fov_deg, config.elevation_deg,
            config.roll_std_deg, config.person_height_frac, config.truncation_prob,
        )  # fmt: skip
    else:  # camera == "h36m"
        cams = calib.sample(rng, n, config.image_size)
        _place_in_capture_area(rng, bodies, first, cams, config.image_size)
    _place_in_view(rng, bodies, cams, counts, config.image_size)
    plans = []
    for i, (s, c) in enumerate(zip(first, counts, strict=True)):
        # People reaching closer than NEAR_MM to the camera are left out of the image.
        z = np.einsum("j,pqj->pq", cams.R[i, 2], bodies.joints[s : s + c]) + cams.t[i, 2]
        sl = s + np.flatnonzero(z.min(axis=1) >= NEAR_MM)
        b = Bodies(
            height=bodies.height[sl], girth=bodies.girth[sl], angles=bodies.angles[sl],
            pose_class=bodies.pose_class[sl], joints=bodies.joints[sl], head_rot=bodies.head_rot[sl],
        )  # fmt: skip
        plans.append(
            _ScenePlan(
                bodies=b,
                camera=Cameras(K=cams.K[i : i + 1], R=cams.R[i : i + 1], t=cams.t[i : i + 1]),
            )
        )
    return plans


def _place_in_capture_area(
    rng: np.random.Generator,
    bodies: Bodies,
    first: np.ndarray,
    cams: Cameras,
    image_size: tuple[int, int],
) -> None:
    """Put each image's first person on the Human3.6M floor (within 2 m of the origin) where its
    pelvis projects into the central 80 % of the image (rejection sampling)."""
    h, w = image_size
    todo = np.arange(len(first))
    spots = np.zeros((len(first), 2))
    for _ in range(50):
        if len(todo) == 0:
            break
        cand = rng.uniform(-2000.0, 2000.0, (len(todo), 2))
        pelvis = np.concatenate([cand, bodies.joints[first[todo], 0, 2:3]], axis=1)[:, None]
        sub = Cameras(K=cams.K[todo], R=cams.R[todo], t=cams.t[todo])
        pc = sub.to_camera(pelvis)
        uv = project(pc, sub.K)[:, 0]
        ok = (
            (pc[:, 0, 2] > 1000.0)
            & (np.abs(uv[:, 0] / w - 0.5) < 0.4)
            & (np.abs(uv[:, 1] / h - 0.5) < 0.4)
        )
        spots[todo[ok]] = cand[ok]
        todo = todo[~ok]
    for i, s in enumerate(first):
        bodies.joints[s, :, :2] += spots[i] - bodies.joints[s, 0, :2]


# ----------------------------------------------------------------------------------------------
# Rendering one image


@dataclass
class RenderedScene:
    """One rendered image with its people (all model joints) and the part-id buffer.

    Arguments:
        image: (H, W, 3) uint8 BGR.
        part_ids: (H, W) uint8 part-id buffer (``render.part_id``; 255 = occluder).
        views: the people as seen by the camera.
        visibility: COCO codes of every model joint (P, J).
        area: visible silhouette pixels per person (P,).
        bbox: silhouette box [x, y, w, h] per person (P, 4) (zeros when area = 0).
        camera: the image's camera (1 camera).
        pose_class: pose class name per person.
    """

    image: np.ndarray
    part_ids: np.ndarray
    views: list[PersonView]
    visibility: np.ndarray
    area: np.ndarray
    bbox: np.ndarray
    camera: Cameras
    pose_class: list[str]


_CLASS_NAMES = tuple(POSE_CLASSES)
_SKIN_BGR = [c[::-1].copy() for c in SKIN_TONES_RGB]


def render_scene(
    plan: _ScenePlan, config: SynthConfig, bank: TextureBank, rng: np.random.Generator
) -> RenderedScene:
    """Render a planned scene: background, floor, clutter, distractors, people, occluders."""
    h, w = config.image_size
    cam = plan.camera
    img = make_background(rng, bank, config.image_size, config.photo_background_prob)
    if rng.random() < config.floor_prob:
        draw_floor(img, rng, bank, cam.K[0], cam.R[0])
    draw_clutter(
        img, rng, int(rng.integers(config.clutter_shapes[0], config.clutter_shapes[1] + 1))
    )

    joints_cam = cam.to_camera(plan.bodies.joints[None].reshape(1, -1, 3)).reshape(
        plan.bodies.joints.shape
    )
    joints_2d = project(joints_cam.reshape(1, -1, 3), cam.K).reshape(*joints_cam.shape[:2], 2)
    views = [
        PersonView(
            joints_2d=joints_2d[p],
            joints_cam=joints_cam[p],
            head_axes=cam.R[0] @ plan.bodies.head_rot[p],
            K=cam.K[0],
            height=float(plan.bodies.height[p]),
            girth=float(plan.bodies.girth[p]),
            appearance=sample_appearance(rng),
        )
        for p in range(len(plan.bodies))
    ]
    main_px = float(np.ptp(joints_2d[0], axis=0).max()) if views else 0.0
    n_limbs = int(rng.integers(config.distractor_limbs[0], config.distractor_limbs[1] + 1))
    draw_distractor_limbs(img, rng, n_limbs, max(main_px, 0.3 * h), _SKIN_BGR)

    draw_shadows(img, views, cam.R[0], cam.t[0])
    ids = np.zeros((h, w), np.uint8)
    angle = rng.uniform(-160.0, -20.0) * np.pi / 180.0  # light from above, left or right
    draw_people(img, ids, views, (math.cos(angle), math.sin(angle)))
    for p in range(len(views)):
        if rng.random() < config.occluder_prob:
            pts = joints_2d[p]
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            if inside.any():
                anchor = pts[rng.choice(np.flatnonzero(inside))]
                size = float(np.ptp(np.clip(pts, 0, [w, h]), axis=0).max())  # in-image extent
                draw_occluder(img, ids, rng, (float(anchor[0]), float(anchor[1])), size)

    # A slight blur, as any camera lens gives: softens the flat shading steps and hard edges.
    cv2.GaussianBlur(img, (3, 3), 0.6, dst=img)
    hist = cv2.calcHist([ids], [0], None, [256], [0, 256]).ravel()
    area = np.zeros(len(views))
    bbox = np.zeros((len(views), 4))
    for p in range(len(views)):
        lo = part_id(p, 0)
        area[p] = hist[lo : lo + PARTS_PER_PERSON].sum()
        if area[p] > 0:
            bbox[p] = cv2.boundingRect(cv2.inRange(ids, lo, lo + PARTS_PER_PERSON - 1))
    visibility = np.stack([keypoint_visibility(ids, p, v) for p, v in enumerate(views)])
    classes = [_CLASS_NAMES[c] for c in plan.bodies.pose_class]
    return RenderedScene(img, ids, views, visibility, area, bbox, cam, classes)


# ----------------------------------------------------------------------------------------------
# Annotations


def _r(x: np.ndarray, nd: int) -> list:
    return np.round(np.asarray(x, dtype=np.float64), nd).tolist()


def _coco_triplets(xy: np.ndarray, v: np.ndarray) -> list[float]:
    out = np.zeros((len(v), 3))
    out[:, :2] = np.where(v[:, None] > 0, np.round(xy, 3), 0.0)
    out[:, 2] = v
    return out.ravel().tolist()


def _annotate(
    scene: RenderedScene, config: SynthConfig, rng: np.random.Generator, image_id: int
) -> list[dict]:
    skel = get_skeleton(config.keypoint_set)
    idx = skeleton_joint_indices(skel)
    keep = np.flatnonzero(scene.area >= max(config.min_person_area, 1))
    if len(keep) == 0:
        return []
    clean = np.stack([scene.views[p].joints_2d[idx] for p in keep])  # (P, K, 2)
    vis = scene.visibility[keep][:, idx]
    noisy = apply_label_noise(
        rng, clean, vis, scene.area[keep], skel.oks_k, skel.flip_pairs, config.noise
    )
    # Annotators click inside the image: a noisy label that falls outside is clipped to it.
    h, w = scene.part_ids.shape
    labels = np.clip(noisy.keypoints, 0.0, [w - 1.0, h - 1.0])
    cam = scene.camera
    camera = {"K": _r(cam.K[0], 6), "R": _r(cam.R[0], 9), "t": _r(cam.t[0], 3)}
    h36m, mpii = skeleton_joint_indices(H36M17), skeleton_joint_indices(MPII16)
    anns = []
    for q, p in enumerate(keep):
        view = scene.views[p]
        v = vis[q]
        pairs = np.asarray(skel.flip_pairs)[noisy.swapped[q]]
        anns.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "keypoints": _coco_triplets(labels[q], v),
                "num_keypoints": int((v > 0).sum()),
                "bbox": scene.bbox[p].tolist(),
                "area": float(scene.area[p]),
                "iscrowd": 0,
                "keypoints_clean": _coco_triplets(clean[q], v),
                "joints_3d": _r(view.joints_cam[idx], 2),
                "camera": camera,
                "noise": {
                    "outlier": np.flatnonzero(noisy.outlier[q]).tolist(),
                    "swap": pairs.tolist(),
                },
                "joints_3d_h36m": _r(view.joints_cam[h36m], 2),
                "joints_3d_mpii": _r(view.joints_cam[mpii], 2),
                "pose_class": scene.pose_class[p],
            }
        )
    return anns


def _categories(config: SynthConfig) -> list[dict]:
    skel = get_skeleton(config.keypoint_set)
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(skel.keypoint_names),
            "skeleton": [[a + 1, b + 1] for a, b in skel.limbs],
        }
    ]


# ----------------------------------------------------------------------------------------------
# Workers


@dataclass
class _Worker:
    config: SynthConfig
    seed: int
    split: str
    image_dir: Path
    num_images: int
    bank: TextureBank
    calib: H36MCalibrations | None


_STATE: _Worker | None = None


def _init_worker(
    config: SynthConfig, seed: int, split: str, image_dir: Path, num_images: int
) -> None:
    global _STATE
    cv2.setNumThreads(1)
    calib = load_h36m_calibrations(config.camera_file) if config.camera == "h36m" else None
    _STATE = _Worker(config, seed, split, image_dir, num_images, _bank(config, seed), calib)


@functools.lru_cache(maxsize=2)
def _bank(config: SynthConfig, seed: int) -> TextureBank:
    size = int(1.5 * max(config.image_size))
    photo_dir = _photo_dir(config) if config.photo_background_prob > 0 else None
    return build_texture_bank(seed, size, config.texture_bank_size, photo_dir)


def _image_name(image_id: int, config: SynthConfig) -> str:
    return f"{image_id:012d}.{config.image_format}"


def _run_chunk(chunk: int) -> list[tuple[dict, list[dict]]]:
    st = _STATE
    assert st is not None, "worker not initialised"
    cfg = st.config
    plans = _sample_chunk(cfg, st.seed, st.split, chunk, st.calib)
    out = []
    for i, plan in enumerate(plans):
        index = chunk * CHUNK_SIZE + i
        if index >= st.num_images:
            break
        rng = np.random.default_rng([st.seed, _split_key(st.split), index, 1])
        scene = render_scene(plan, cfg, st.bank, rng)
        image_id = index + 1
        name = _image_name(image_id, cfg)
        params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.image_format == "jpg" else []
        ok, buf = cv2.imencode(f".{cfg.image_format}", scene.image, params)
        if not ok:
            raise RuntimeError(f"could not encode image {name}")
        (st.image_dir / name).write_bytes(buf.tobytes())
        h, w = cfg.image_size
        record = {"id": image_id, "file_name": name, "width": w, "height": h}
        out.append((record, _annotate(scene, cfg, rng, image_id)))
    return out


def render_index(
    index: int, seed: int = 0, split: str = "train", config: SynthConfig | None = None
) -> RenderedScene:
    """Re-render image ``index`` (0-based; image id ``index + 1``) of a ``generate`` run.

    Gives exactly the scene behind that image, with what the json does not store: the part-id
    buffer (per-part segmentation) and all model joints. The image itself is the array before
    encoding.
    """
    config = config if config is not None else SynthConfig()
    config.validate()
    chunk, i = divmod(index, CHUNK_SIZE)
    calib = load_h36m_calibrations(config.camera_file) if config.camera == "h36m" else None
    plan = _sample_chunk(config, seed, split, chunk, calib)[i]
    rng = np.random.default_rng([seed, _split_key(split), index, 1])
    return render_scene(plan, config, _bank(config, seed), rng)


class _Progress:
    """A one-line progress report on stderr (updated at most twice a second)."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.start = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.5 and done < self.total):
            return
        if not self.tty and done < self.total and now - self.last < 10.0:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        end = "\n" if done >= self.total or not self.tty else ""
        print(
            f"\r{self.label}: {done}/{self.total} ({rate:.0f}/s)",
            end=end,
            file=sys.stderr,
            flush=True,
        )


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".posereg-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write to output directory {path}: {e.strerror or e}") from None


def _check_counts(num: int, seed: int, num_workers: int | None, what: str) -> None:
    if not isinstance(num, int | np.integer) or num < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {num!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(
            f"num_workers must be an integer >= 0 (0 = in this process), got {num_workers!r}"
        )


def generate(
    out_dir: str | Path,
    split: str = "train",
    num_images: int = 1000,
    seed: int = 0,
    config: SynthConfig | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    preset: str | None = None,
) -> Path:
    """Render a synthetic COCO person-keypoints split.

    Writes ``out_dir/images/<split>/<id:012d>.jpg``,
    ``out_dir/annotations/person_keypoints_<split>.json`` and then the settings record
    (:class:`SplitRecord`, :func:`split_record_path`). Every setting is checked before any work
    starts; an existing record of the split is deleted first, so an interrupted run leaves none.

    Arguments:
        out_dir: dataset folder (created if needed).
        split: split name ("train", "val", ...); also mixed into the random stream.
        num_images: number of images.
        seed: base random seed.
        config: generator settings (None: the medium preset).
        num_workers: worker processes (None: all cores; 0: in this process).
        progress: report progress on stderr.
        preset: the preset ``config`` started from, kept in the record for information.

    Returns:
        Path of the annotation json.

    Example:
        >>> generate("data/synth", "val", 100, seed=1, config=SynthConfig.preset("easy"))  # doctest: +SKIP
    """
    config = config if config is not None else SynthConfig()
    config.validate()
    _check_split(split)
    _check_counts(num_images, seed, num_workers, "num_images")
    out = Path(out_dir)
    image_dir = out / "images" / split
    ann_dir = out / "annotations"
    _check_writable(image_dir)
    _check_writable(ann_dir)
    record_path = split_record_path(out, split)
    record_path.unlink(missing_ok=True)

    num_chunks = math.ceil(num_images / CHUNK_SIZE)
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    workers = min(workers, num_chunks)
    bar = _Progress(f"synth {split}", num_images, progress)
    args = (config, int(seed), split, image_dir, int(num_images))
    path = ann_dir / f"person_keypoints_{split}.json"
    # Annotations stream to a side file as chunks arrive (in order), so memory stays small.
    side = path.with_suffix(".annotations.tmp")
    images: list[dict] = []
    num_anns = 0
    with side.open("w") as f:

        def collect(part: list[tuple[dict, list[dict]]]) -> None:
            nonlocal num_anns
            for record, anns in part:
                images.append(record)
                for a in anns:
                    num_anns += 1
                    f.write(("," if num_anns > 1 else "") + _dumps({"id": num_anns, **a}))
            bar.update(len(images))

        if workers <= 1:
            _init_worker(*args)
            for chunk in range(num_chunks):
                collect(_run_chunk(chunk))
        else:
            ctx = get_context("spawn")  # no fork: safe with threads and torch in the parent
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=args
            ) as pool:
                for part in pool.map(_run_chunk, range(num_chunks)):
                    collect(part)
    _write_coco(path, side, images, config, seed, split)
    record = SplitRecord(split, int(num_images), int(seed), config, preset)
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=2))
    tmp.replace(record_path)
    return path


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _write_coco(
    path: Path, side: Path, images: list[dict], config: SynthConfig, seed: int, split: str
) -> None:
    """Assemble the COCO json from the image records and the streamed annotations."""
    from posereg import __version__

    info = {
        "description": "posereg synthetic people (posereg.synth)",
        "version": __version__,
        "split": split,
        "seed": int(seed),
        "config": config.to_dict(),
    }
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w") as out, side.open() as anns:
        out.write(f'{{"info":{_dumps(info)},"images":{_dumps(images)},"annotations":[')
        while block := anns.read(1 << 20):
            out.write(block)
        out.write(f'],"categories":{_dumps(_categories(config))}}}')
    side.unlink()
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------
# 3D-only mode


@dataclass
class PoseSamples:
    """N single-person samples without images (for 2D-to-3D lifting).

    Arguments:
        keypoints_2d: clean projections (N, K, 2), pixels (also for points outside the image).
        keypoints_2d_noisy: annotator-style labels (N, K, 2) from the noise model, with every
            in-image keypoint treated as visible and s^2 = ``AREA_PER_KEYPOINT_BOX`` x the area
            of the box around the projected keypoints (no silhouette is rendered here).
        visible: keypoint inside the image (N, K) bool (no occlusion reasoning here).
        joints_3d: camera-frame joints (N, K, 3), mm.
        K: intrinsics (N, 3, 3).
        R: world-to-camera rotations (N, 3, 3).
        t: world-to-camera translations (N, 3), mm.
        pose_class: pose class index (N,) into ``body.POSE_CLASSES``.
        keypoint_names: names of the K keypoints.
    """

    keypoints_2d: np.ndarray
    keypoints_2d_noisy: np.ndarray
    visible: np.ndarray
    joints_3d: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    pose_class: np.ndarray
    keypoint_names: tuple[str, ...]


_CHUNK_3D = 8192


def sample_poses(
    num_poses: int, seed: int = 0, config: SynthConfig | None = None, split: str = "train"
) -> PoseSamples:
    """Sample (2D, 3D, camera) for ``num_poses`` people, vectorised, without rendering.

    People and cameras come from the same samplers as ``generate`` (one person per camera);
    the keypoint set is ``config.keypoint_set``. Deterministic in (seed, split, config): poses
    are drawn in chunks of 8192, so a run of N poses is a prefix of a run of M > N.
    """
    config = config if config is not None else SynthConfig()
    config.validate()
    _check_split(split)
    _check_counts(num_poses, seed, None, "num_poses")
    skel = get_skeleton(config.keypoint_set)
    idx = skeleton_joint_indices(skel)
    calib = load_h36m_calibrations(config.camera_file) if config.camera == "h36m" else None
    h, w = config.image_size
    k = len(idx)
    out = PoseSamples(
        keypoints_2d=np.zeros((num_poses, k, 2)), keypoints_2d_noisy=np.zeros((num_poses, k, 2)),
        visible=np.zeros((num_poses, k), bool), joints_3d=np.zeros((num_poses, k, 3)),
        K=np.zeros((num_poses, 3, 3)), R=np.zeros((num_poses, 3, 3)), t=np.zeros((num_poses, 3)),
        pose_class=np.zeros(num_poses, np.int64), keypoint_names=skel.keypoint_names,
    )  # fmt: skip
    for chunk in range(math.ceil(num_poses / _CHUNK_3D)):
        sl = slice(chunk * _CHUNK_3D, min((chunk + 1) * _CHUNK_3D, num_poses))
        n = _CHUNK_3D  # always a full chunk, so fewer poses are a prefix of more
        rng = np.random.default_rng([seed, _split_key(split), chunk, 3])
        bodies = sample_bodies(rng, n, config.pose_classes, config.pose_spread)
        if calib is None:
            cams = frame_person(
                rng, bodies.joints, config.image_size, config.fov_deg, config.elevation_deg,
                config.roll_std_deg, config.person_height_frac, config.truncation_prob,
            )  # fmt: skip
        else:
            cams = calib.sample(rng, n, config.image_size)
            _place_in_capture_area(rng, bodies, np.arange(n), cams, config.image_size)
        joints = cams.to_camera(bodies.joints[:, idx])
        uv = project(joints, cams.K)
        visible = (
            (uv[..., 0] >= 0) & (uv[..., 0] <= w - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= h - 1)
        )
        area = AREA_PER_KEYPOINT_BOX * np.prod(np.ptp(uv, axis=1), axis=1)
        noisy = apply_label_noise(
            rng, uv, np.where(visible, 2, 0), area, skel.oks_k, skel.flip_pairs, config.noise
        )
        m = sl.stop - sl.start
        out.keypoints_2d[sl], out.keypoints_2d_noisy[sl] = uv[:m], noisy.keypoints[:m]
        out.visible[sl], out.joints_3d[sl] = visible[:m], joints[:m]
        out.K[sl], out.R[sl], out.t[sl] = cams.K[:m], cams.R[:m], cams.t[:m]
        out.pose_class[sl] = bodies.pose_class[:m]
    return out


def generate_3d(
    out_dir: str | Path,
    split: str = "train",
    num_poses: int = 100_000,
    seed: int = 0,
    config: SynthConfig | None = None,
) -> Path:
    """Write ``sample_poses`` arrays to ``out_dir/poses3d_<split>.npz`` and return its path.

    The npz holds keypoints_2d, keypoints_2d_noisy, visible, joints_3d (mm, camera frame), K, R,
    t, pose_class, keypoint_names, pose_class_names and image_size.
    """
    config = config if config is not None else SynthConfig()
    config.validate()
    _check_counts(num_poses, seed, None, "num_poses")
    out = Path(out_dir)
    _check_writable(out)
    s = sample_poses(num_poses, seed, config, split)
    path = out / f"poses3d_{split}.npz"
    np.savez(
        path,
        keypoints_2d=s.keypoints_2d.astype(np.float32),
        keypoints_2d_noisy=s.keypoints_2d_noisy.astype(np.float32),
        visible=s.visible,
        joints_3d=s.joints_3d.astype(np.float32),
        K=s.K.astype(np.float32),
        R=s.R.astype(np.float32),
        t=s.t.astype(np.float32),
        pose_class=s.pose_class,
        keypoint_names=np.array(s.keypoint_names),
        pose_class_names=np.array(tuple(POSE_CLASSES)),
        image_size=np.array(config.image_size),
    )
    return path
