"""The generator's settings: :class:`SynthConfig`, the difficulty presets, the record of the
settings a split was made with (:class:`SplitRecord`) and the checks every entry point runs
before any work.

``SynthConfig`` is an ordinary ``posereg.config`` schema: built from a dict by
``posereg.config.from_dict`` (``SynthConfig.from_dict``), overridden with
``posereg.config.apply_overrides`` (``posereg data synth --set``/``--noise``), its numbers
bounded by a ``ranges`` table, every error naming the key and what was expected.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from posereg.config import (
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    ConfigError,
    Range,
    from_dict,
    to_dict,
)
from posereg.synth.body import POSE_CLASSES, keypoint_sets
from posereg.synth.camera import load_h36m_calibrations
from posereg.synth.noise import COCO_SCALE, NoiseConfig
from posereg.synth.render import MAX_PEOPLE
from posereg.synth.scene import DEFAULT_PHOTO_DIR

__all__ = [
    "SynthConfig",
    "PRESETS",
    "synth_config",
    "SplitRecord",
    "read_split_record",
    "split_record_path",
    "GENERATOR_VERSION",
    "CAMERA_SOURCES",
    "IMAGE_FORMATS",
    "CHUNK_SIZE",
]

CHUNK_SIZE = 16
# Raise when the same (settings, seed, split) would render different images or labels, so that a
# set recorded with an older version is regenerated rather than reused.
GENERATOR_VERSION = 1
CAMERA_SOURCES = ("random", "h36m")
IMAGE_FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic data generator (defaults = the "medium" preset).

    Arguments:
        image_size: (h, w) of each image, pixels.
        people_per_image: (min, max) people per image, inclusive; the first is framed by the
            camera, the others stand around it (crowds, overlaps).
        keypoint_set: skeleton of the ``keypoints`` field, any built-in of
            ``posereg.skeletons.SKELETONS`` (:func:`posereg.synth.body.keypoint_sets`); its OKS
            constants set the label noise.
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

    The numbers' allowed values are the ``ranges`` table (``posereg.config``, like the run
    configs); :meth:`validate` also checks the (min, max) pairs, the names and the photo folder.

    Example:
        >>> SynthConfig.preset("easy").noise.scale / SynthConfig().noise.scale
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

    ranges: ClassVar[dict[str, Range]] = {
        "image_size": Range(32), "people_per_image": Range(1, MAX_PEOPLE), "pose_spread": NON_NEGATIVE,
        "person_height_frac": Range(0.01, 3.0), "fov_deg": Range(1.0, 170.0),
        "elevation_deg": Range(-80.0, 80.0), "roll_std_deg": NON_NEGATIVE,
        "truncation_prob": FRACTION, "clutter_shapes": NON_NEGATIVE,
        "distractor_limbs": NON_NEGATIVE, "occluder_prob": FRACTION, "floor_prob": FRACTION,
        "photo_background_prob": FRACTION, "texture_bank_size": AT_LEAST_1,
        "jpeg_quality": Range(1, 100), "min_person_area": NON_NEGATIVE,
    }  # fmt: skip

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SynthConfig:
        """A preset ("easy", "medium", "hard", "multi") with optional field overrides.

        Raises:
            ConfigError: unknown preset (lists the valid names), unknown field or a value of the
                wrong type or out of range (naming the field).
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown synth preset {name!r}; valid: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any], prefix: str = "") -> SynthConfig:
        """Build from a plain dict (as written in the dataset json), with ``posereg.config.from_dict``.

        Raises:
            ConfigError: an unknown key, or a value of the wrong type or out of range, naming
                ``prefix`` + the key and what was expected.
        """
        return from_dict(cls, d, prefix=prefix)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (json-serialisable)."""
        return to_dict(self)

    def validate(self) -> None:
        """Check every setting; raise ConfigError (a ValueError) naming the bad one and what is valid."""
        from_dict(SynthConfig, to_dict(self))  # types and the ranges table, the noise model's too
        for name in _MIN_MAX:
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(
                    f"{name} must be (min, max) with min <= max, got {getattr(self, name)}"
                )
        if self.keypoint_set not in keypoint_sets():
            raise ConfigError(
                f"unknown keypoint_set {self.keypoint_set!r}; valid: {', '.join(keypoint_sets())}"
            )
        if not self.pose_classes:
            raise ConfigError(f"pose_classes must not be empty; valid: {', '.join(POSE_CLASSES)}")
        for c in self.pose_classes:
            if c not in POSE_CLASSES:
                raise ConfigError(f"unknown pose class {c!r}; valid: {', '.join(POSE_CLASSES)}")
        if self.camera not in CAMERA_SOURCES:
            raise ConfigError(f"unknown camera {self.camera!r}; valid: {', '.join(CAMERA_SOURCES)}")
        if self.camera == "h36m":
            load_h36m_calibrations(self.camera_file)  # FileNotFoundError naming the path
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(
                f"unknown image_format {self.image_format!r}; valid: {', '.join(IMAGE_FORMATS)}"
            )
        if self.photo_background_prob > 0 and not _photo_dir(self).is_dir():
            raise ConfigError(
                f"photo_background_prob > 0 but the photo folder does not exist: {_photo_dir(self)}"
            )


# The (min, max) pairs of SynthConfig.
_MIN_MAX = (
    "people_per_image", "person_height_frac", "fov_deg", "elevation_deg", "clutter_shapes",
    "distractor_limbs",
)  # fmt: skip


def _photo_dir(config: SynthConfig) -> Path:
    return Path(config.photo_dir) if config.photo_dir is not None else DEFAULT_PHOTO_DIR


# Presets: plain dicts of SynthConfig fields. "medium" is the default config. The difficulty
# presets' label-noise scales are 0.5, 1 and 1.5 times COCO's measured annotator spread
# (COCO_SCALE); "multi" (multi-person scenes) has medium's.
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
        "noise": {"scale": 0.5 * COCO_SCALE},
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
        "noise": {"scale": 1.5 * COCO_SCALE},
    },
    # Multi-person scenes for detector-free models (docs/multiperson.md): 2-8 people placed per
    # 256 x 256 image, the framed one smaller so the others fit, light clutter so a CPU run
    # learns; medium's label noise, and the clean truth in ``keypoints_clean`` as every preset.
    "multi": {
        "image_size": (256, 256),
        "people_per_image": (2, 8),
        "person_height_frac": (0.35, 0.7),
        "truncation_prob": 0.1,
        "clutter_shapes": (0, 8),
        "distractor_limbs": (0, 1),
        "occluder_prob": 0.15,
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
# Checks of the arguments of generate, sample_poses and generate_3d


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


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
