"""Typed dataclass configs for posereg runs: strict construction from YAML (safe_load) and ``--set a.b=value`` overrides.

Every key is checked against the dataclass field it names and every value against the
field's type annotation; errors name the full dotted key, what was given and what was
expected. Supported annotations: bool, int, float, str, None, ``X | None``, ``Literal``,
``tuple[T, ...]``/``tuple[T1, T2]``, ``list[T]``, ``dict[str, T]``, ``typing.Any`` and nested
dataclasses. A dataclass may declare the allowed values of its numbers in a class-level
``ranges`` table (``ranges: ClassVar[dict[str, Range]]``); :func:`from_dict` and
:func:`validate` check them. The run schema below and the synthetic-data generator's settings
(``posereg.synth.SynthConfig``) both use this one machinery.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

__all__ = [
    "JPEG_DECODERS",
    "TransformConfig",
    "ConfigError",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "parse_override_value",
    "load_yaml",
    "save_yaml",
    "Config",
    "check_run_name",
    "from_saved",
    "DataConfig",
    "SynthDataConfig",
    "MultiPersonTransformConfig",
    "MultiPersonDataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "load_config",
    "Range",
    "validate",
    "LiftConfig",
    "LiftDataConfig",
    "PosePrior",
    "LiftModelConfig",
    "LiftTrainConfig",
    "config_task",
    "read_task",
    "load_lift_config",
]

T = TypeVar("T")


#: JPEG decoders posereg.data.image_io knows (``TransformConfig.jpeg_decoder``).
JPEG_DECODERS = ("simplejpeg", "opencv")


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    """Crop and augmentation settings. Defaults: the official RLE COCO recipe (METHOD.md).

    Arguments:
        augment: apply the training augmentation below (False for evaluation).
        padding: box context factor (1.25).
        flip_prob: probability of a horizontal flip with left/right swap (0.5).
        scale_factor: crop size multiplied by U(1 - f, 1 + f) (0.25).
        rotation_factor: rotation U(-r, r) degrees (45) ...
        rotation_prob: ... applied with this probability (0.5).
        half_body_prob: probability of cropping the upper or lower body only (0.3) ...
        half_body_min_joints: ... when more than this many joints are labelled (3).
        half_body_padding: padding of the half-body box (1.5).
        color_jitter: per-channel gain U(1 - j, 1 + j) by uint8 LUT; 0 = off (official: off).
        occlusion_prob: probability of pasting one random grey-level patch (0 = off).
        occlusion_size: (min, max) patch side as a fraction of the crop side.
        fast_decode: decode a JPEG at 1/2, 1/4 or 1/8 size (DCT domain) when the crop still
            gets >= 1 source pixel per output pixel; full size when the crop needs it.
        jpeg_decoder: ``"simplejpeg"`` or ``"opencv"``; None picks simplejpeg when installed.
    """

    augment: bool = False
    padding: float = 1.25
    flip_prob: float = 0.5
    scale_factor: float = 0.25
    rotation_factor: float = 45.0
    rotation_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 3
    half_body_padding: float = 1.5
    color_jitter: float = 0.0
    occlusion_prob: float = 0.0
    occlusion_size: tuple[float, float] = (0.1, 0.4)
    fast_decode: bool = True
    jpeg_decoder: str | None = None

    def __post_init__(self) -> None:
        for name in ("flip_prob", "rotation_prob", "half_body_prob", "occlusion_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TransformConfig.{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.scale_factor < 1.0:
            raise ValueError(
                f"TransformConfig.scale_factor must be in [0, 1), got {self.scale_factor}"
            )
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(
                f"TransformConfig.color_jitter must be in [0, 1), got {self.color_jitter}"
            )
        if self.padding <= 0:
            raise ValueError(f"TransformConfig.padding must be > 0, got {self.padding}")
        if self.jpeg_decoder is not None and self.jpeg_decoder not in JPEG_DECODERS:
            raise ValueError(
                f"unknown jpeg_decoder {self.jpeg_decoder!r}; valid: {', '.join(JPEG_DECODERS)}"
            )


class ConfigError(ValueError):
    """A configuration key or value that does not fit the schema."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed values of a number (each element for a tuple or list; None always passes).

    NaN and infinities are never in a range.

    Arguments:
        low, high: bounds (None: unbounded).
        low_open: ``low < x`` instead of ``low <= x``.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def __contains__(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or x <= self.high

    def __str__(self) -> str:
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is None:
            return lo
        if self.low is None:
            return f"<= {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


POSITIVE, NON_NEGATIVE, AT_LEAST_1, FRACTION = (
    Range(0, low_open=True),
    Range(0),
    Range(1),
    Range(0, 1),
)


def _check_ranges(cls: type, values: dict[str, Any], prefix: str) -> None:
    """ConfigError naming the key and its range for a value outside ``cls.ranges``."""
    for name, allowed in getattr(cls, "ranges", {}).items():
        value = values.get(name)
        many = isinstance(value, list | tuple)
        if any(x is not None and x not in allowed for x in (value if many else [value])):
            each = "each value " if many else ""
            raise ConfigError(
                f"{prefix}{name}: {value!r} is out of range; allowed: {each}{allowed}"
            )


def validate(cfg: Any, prefix: str = "") -> None:
    """Check the ranges of a config built in Python (``from_dict`` checks its own on the way).

    Raises:
        ConfigError: naming the dotted key and the allowed range.
    """
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    _check_ranges(type(cfg), values, prefix)
    for name, value in values.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, f"{prefix}{name}.")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check (and minimally convert) ``value`` against annotation ``tp``; ConfigError otherwise."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(
            _coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is list:
        (arg,) = get_args(tp) or (Any,)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(arg, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, arg = get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(arg, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    raise TypeError(f"{key}: unsupported annotation {tp!r} in the config schema")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError.

    Missing keys take the field defaults.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for k, v in data.items():
        if k not in fields:
            raise ConfigError(
                f"unknown config key {prefix}{k}; valid keys here: {', '.join(fields)}"
            )
        kwargs[k] = _coerce(hints[k], v, f"{prefix}{k}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing config keys: {', '.join(prefix + m for m in missing)}")
    _check_ranges(cls, kwargs, prefix)
    try:
        return cls(**kwargs)
    except ValueError as e:  # a schema owner's own check (TransformConfig.__post_init__)
        if isinstance(e, ConfigError) or not prefix:
            raise
        raise ConfigError(f"{prefix.rstrip('.')}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists) of a dataclass config, ready for yaml.safe_dump."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def _field_type(tp: Any, key: str) -> Any:
    """The annotation of ``key`` inside a value annotated ``tp`` (Any where it cannot tell)."""
    if get_origin(tp) in (typing.Union, types.UnionType):  # SynthDataConfig | None
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        tp = inner[0] if inner else Any
    if dataclasses.is_dataclass(tp):
        return get_type_hints(tp).get(key, Any)
    if get_origin(tp) is dict and get_args(tp):
        return get_args(tp)[1]
    return Any


def parse_override_value(tp: Any, text: str) -> Any:
    """Parse the text of one ``key=value`` override for a field annotated ``tp``.

    The text is read as YAML (``0.01``, ``[64, 48]``, ``{sigma: 2}``, ``null``), with the
    command-line shorthands:

    - a list or tuple may be written ``a,b,c``, and a list of numbers as a range ``a..b``
      (``people_per_image=1..3``, ``pose_classes=standing,walking``); a single number for a
      pair means both (``people_per_image=2`` is ``2..2``);
    - ``none`` (any case) is null for a field that may be null;
    - a field that is only a string takes the text as written (``name=2024``).

    The result is type-checked by :func:`from_dict` afterwards.

    Example:
        >>> parse_override_value(tuple[int, int], "1..3"), parse_override_value(str | None, "none")
        ([1, 3], None)
    """
    text = text.strip()
    value = yaml.safe_load(text) if text else ""
    union = get_origin(tp) in (typing.Union, types.UnionType)
    args = [a for a in (get_args(tp) if union else (tp,)) if a is not type(None)]
    if union and type(None) in get_args(tp) and isinstance(value, str) and value.lower() == "none":
        return None
    for arg in args:  # the first sequence type of the annotation takes the shorthands
        if get_origin(arg) not in (tuple, list):
            continue
        items = get_args(arg) or (Any,)
        item = items[0]
        if isinstance(value, str):
            sep = r",|\.\." if item in (int, float) else ","
            parts = [p.strip() for p in re.split(sep, value) if p.strip()]
            return [p if item is str else yaml.safe_load(p) for p in parts]
        pair = get_origin(arg) is tuple and len(items) == 2 and items[1] is not Ellipsis
        if pair and isinstance(value, int | float) and not isinstance(value, bool):
            return [value, value]
        break
    if args == [str] and value is not None and not isinstance(value, str | list | dict):
        return text
    return value


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b.c=value`` overrides, each parsed by :func:`parse_override_value`, then type-checked.

    Example:
        >>> cfg = apply_overrides(Config(), ["optim.lr=0.01", "data.input_size=[64, 48]"])
        >>> cfg.optim.lr, cfg.data.input_size
        (0.01, (64, 48))
        >>> apply_overrides(Config(), ["data.input_size=128,96"]).data.input_size
        (128, 96)
    """
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        tp: Any = type(cfg)
        for i, k in enumerate(keys):
            if not isinstance(node, dict) or k not in node:
                where = ".".join(keys[:i]) or "the top level"
                valid = ", ".join(node) if isinstance(node, dict) else "(not a section)"
                raise ConfigError(
                    f"unknown config key {dotted}: no {k!r} in {where}; valid: {valid}"
                )
            tp = _field_type(tp, k)
            if i == len(keys) - 1:
                node[k] = parse_override_value(tp, raw)
            else:
                node = node[k]
    return from_dict(type(cfg), data)


def _read_yaml(path: Path) -> Any:
    """The YAML document of a UTF-8 text file (``yaml.safe_load``)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Load a YAML config file (yaml.safe_load) into dataclass ``cls``, then apply overrides."""
    path = Path(path)
    try:
        data = _read_yaml(path) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML config (not UTF-8 text)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        cfg = from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides or [])


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------- the run schema
# Lower-case keys, one section per concern. YAML files in configs/ set these; anything not
# set takes the defaults below, which follow the official COCO recipe (METHOD.md).


@dataclasses.dataclass
class SynthDataConfig:
    """Generate the dataset with posereg.synth when it is missing (the main job's data).

    The train and val splits are written to ``root`` (``root/annotations/
    person_keypoints_{train,val}.json``, ``root/images/{train,val}/``) and reused while these
    settings are unchanged; ``data.train_ann`` etc. should point there.

    Arguments:
        root: dataset folder.
        preset: difficulty preset of the generator (``easy``, ``medium``, ``hard``).
        num_train, num_val: images per split.
        seed: generator seed (the split name is mixed into the random stream).
        workers: generator processes (None: all cores).
        options: further posereg.synth.SynthConfig fields (e.g. ``image_size``,
            ``people_per_image``, ``noise``), applied on top of the preset.
    """

    root: str = "data/synth"
    preset: str = "medium"
    num_train: int = 4000
    num_val: int = 500
    seed: int = 0
    workers: int | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    ranges: ClassVar[dict[str, Range]] = {
        "num_train": AT_LEAST_1, "num_val": AT_LEAST_1, "workers": NON_NEGATIVE,
    }  # fmt: skip


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how a crop is made.

    Paths are relative to the working directory. ``format`` picks the loader: ``coco`` (any
    COCO person_keypoints json: COCO, the synthetic sets) or ``mpii``.

    ``depth: true`` is single-stage 3D (docs/lifting.md): every annotation must carry
    ``joints_3d`` (K x 3, camera mm) and ``camera`` {K}; targets are (u, v, d) with the
    root-relative depth ``d = (Z - Z_root) / depth_range_mm`` (official: 2000 mm; root: pelvis,
    or mid-hip for COCO-17), the model must predict 3 coordinates (regression ``head_options:
    {dim: 3}``, integral ``{depth: D}``) and validation reports MPJPE / PA-MPJPE in mm.
    """

    format: Literal["coco", "mpii"] = "coco"
    train_ann: str = "data/coco/annotations/person_keypoints_train2017.json"
    train_images: str = "data/coco/train2017"
    val_ann: str = "data/coco/annotations/person_keypoints_val2017.json"
    val_images: str = "data/coco/val2017"
    detections: str | None = None  # COCO results json of person boxes for evaluation
    det_score_threshold: float = 0.0
    # a built-in name (posereg.skeletons.SKELETONS), a YAML file, "auto" (from the json's person
    # category), or the resolved dict a run saves (Skeleton.to_dict); see docs/data.md
    skeleton: str | dict[str, Any] = "coco17"
    # the annotation field the keypoints are read from, for training and evaluation alike
    # (format coco); e.g. keypoints_21 for Human-Art's 21 keypoints (docs/data.md)
    keypoints_field: str = "keypoints"
    input_size: tuple[int, int] = (256, 192)  # (h, w)
    transform: TransformConfig = dataclasses.field(
        default_factory=lambda: TransformConfig(augment=True)
    )
    workers: int = 2
    on_bad_image: Literal["raise", "skip"] = "raise"
    synth: SynthDataConfig | None = None
    depth: bool = False  # single-stage 3D: (u, v, root-relative depth) targets
    depth_range_mm: float = 2000.0  # depth that maps to a target span of 1 (official bbox_3d_shape)

    ranges: ClassVar[dict[str, Range]] = {
        "det_score_threshold": FRACTION, "input_size": AT_LEAST_1, "workers": NON_NEGATIVE,
        "depth_range_mm": POSITIVE,
    }  # fmt: skip


@dataclasses.dataclass(frozen=True)
class MultiPersonTransformConfig:
    """Image-level augmentation of multi-person images (posereg.data.multiperson), all through
    ``torchvision.transforms.v2`` on the image, the boxes and the keypoints together.

    With ``augment``, in this order: a horizontal flip (left/right keypoints swapped), then
    ``v2.RandomAffine`` (rotation, scale, translation about the image centre, same canvas), then
    ``v2.ColorJitter``. Always, last: ``v2.Resize`` of the longer side to ``max_size`` when set,
    then ``v2.SanitizeBoundingBoxes`` (people whose box left the image are dropped).

    Arguments:
        augment: apply the random augmentation (False for evaluation).
        flip_prob: probability of a horizontal flip.
        rotation_deg: rotation U(-r, r) degrees (0 = off; a rotated box is the box around the
            rotated corners, so it grows).
        scale: (min, max) zoom factor of the affine map.
        translate: largest shift, as a fraction of the image width / height.
        color_jitter: brightness, contrast and saturation factors U(1 - j, 1 + j); 0 = off.
        max_size: longer image side after resizing (aspect kept); None keeps the size.
        min_box_size: boxes narrower or lower than this (pixels, after the transforms) are
            dropped with their person.
    """

    augment: bool = False
    flip_prob: float = 0.5
    rotation_deg: float = 0.0
    scale: tuple[float, float] = (0.75, 1.25)
    translate: float = 0.1
    color_jitter: float = 0.0
    max_size: int | None = None
    min_box_size: float = 1.0

    ranges: ClassVar[dict[str, Range]] = {
        "flip_prob": FRACTION, "rotation_deg": Range(0, 180), "scale": POSITIVE,
        "translate": FRACTION, "color_jitter": Range(0, 1), "max_size": AT_LEAST_1,
        "min_box_size": AT_LEAST_1,
    }  # fmt: skip


@dataclasses.dataclass
class MultiPersonDataConfig:
    """Image-level multi-person data (posereg.data.multiperson, docs/multiperson.md).

    COCO person_keypoints files (COCO, the synthetic ``multi`` preset); every non-crowd person
    of an image is a target, crowd regions are ignore regions.

    Arguments:
        train_ann, train_images, val_ann, val_images: annotation json and the folder its
            ``file_name`` entries are relative to, per split.
        keypoints_field: the annotation field the keypoints are read from (``keypoints_clean``
            trains on the synthetic sets' noise-free truth).
        keep_empty_images: keep images without any person target (negative images).
        workers: data-loader worker processes.
        transform: the augmentation of the training split (validation: none, same resize).
    """

    train_ann: str = "data/synth_multi/annotations/person_keypoints_train.json"
    train_images: str = "data/synth_multi/images/train"
    val_ann: str = "data/synth_multi/annotations/person_keypoints_val.json"
    val_images: str = "data/synth_multi/images/val"
    keypoints_field: str = "keypoints"
    keep_empty_images: bool = True
    workers: int = 2
    transform: MultiPersonTransformConfig = dataclasses.field(
        default_factory=lambda: MultiPersonTransformConfig(augment=True)
    )

    ranges: ClassVar[dict[str, Range]] = {"workers": NON_NEGATIVE}


@dataclasses.dataclass
class ModelConfig:
    """Backbone, head and loss (see posereg.models.create_pose_model and posereg.losses).

    ``head`` is a name from posereg.models.HEADS (``regression``, ``heatmap``, ...); its own options
    (e.g. ``{sigma: 2.0}``, ``{deconv_channels: 256}``) go in ``head_options``. ``loss`` and
    ``loss_options`` are the head's loss (None: its default, RLE for ``regression``); ``norm_mu``
    is a regression-head option. A head rejects options it does not take, naming the ones it does.
    ``backbone`` is a name from posereg.models.backbones.BACKBONES (ResNets, HRNets, the light
    ones: docs/backbones.md) or ``timm:<name>``; ``width`` is the ResNets' channel multiplier, and
    any other backbone needs 1.0 (checked with the backbone, by posereg.models.build, since this
    module imports no model code).
    """

    backbone: str = "resnet50"
    head: str = "regression"
    head_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    width: float = 1.0  # ResNets only
    pretrained: bool | str = False  # True: torchvision/timm weights (online); str: a local file
    init_from: str | None = None  # a posereg checkpoint whose backbone initialises this one
    norm_mu: bool = True
    freeze_bn: bool = False  # BatchNorm layers use their running statistics while training
    loss: str | None = None  # None: the head's default
    loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    ranges: ClassVar[dict[str, Range]] = {"width": POSITIVE}


@dataclasses.dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (per-step; warm-up is linear from 0)."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9  # sgd only
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = dataclasses.field(default_factory=lambda: [170, 200])  # epochs
    gamma: float = 0.1
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    grad_clip: float | None = None  # max global grad norm

    # lr 0 is allowed: it trains nothing, which a frozen-backbone check or a smoke test wants
    ranges: ClassVar[dict[str, Range]] = {
        "momentum": FRACTION, "lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
        "milestones": NON_NEGATIVE, "gamma": POSITIVE, "warmup_steps": NON_NEGATIVE,
        "min_lr_ratio": FRACTION, "grad_clip": POSITIVE,
    }  # fmt: skip


@dataclasses.dataclass
class TrainConfig:
    """The loop: length, batch, precision, logging, checkpoints."""

    epochs: int = 270
    batch_size: int = 32  # per process
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    log_every: int = 20  # steps
    eval_every: int = 10  # epochs (the last epoch is always evaluated)
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0: end of epoch only)
    max_bad_steps: int = 10  # consecutive non-finite losses before training stops
    progress: bool = True
    threads: int | None = None  # torch CPU threads (None: PyTorch's default)

    ranges: ClassVar[dict[str, Range]] = {
        "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "max_steps": AT_LEAST_1,
        "log_every": AT_LEAST_1, "eval_every": NON_NEGATIVE, "checkpoint_every": NON_NEGATIVE,
        "max_bad_steps": AT_LEAST_1, "threads": AT_LEAST_1,
    }  # fmt: skip


@dataclasses.dataclass
class EvalConfig:
    """Evaluation: flip test, batch size, instance score rule (posereg.metrics)."""

    flip_test: bool = True
    batch_size: int = 64
    score_rule: str = "official"
    use_detections: bool = False  # evaluate on data.detections boxes (with OKS-NMS)
    nms_threshold: float = 0.9
    num_vis: int = 16  # validation crops drawn in the run report
    # the metric that picks best.pt (a key of metrics.json's "val"); None: AP for COCO-format
    # data, PCKh_0.5 for MPII, MPJPE (lowest) with data.depth (posereg.engine.evaluate.primary_metric)
    primary_metric: str | None = None

    ranges: ClassVar[dict[str, Range]] = {
        "batch_size": AT_LEAST_1, "nms_threshold": FRACTION, "num_vis": NON_NEGATIVE,
    }  # fmt: skip


def check_run_name(name: str) -> None:
    """A run's ``name`` is one folder name inside ``out_dir``.

    Raises:
        ConfigError: an empty name, ``.`` or ``..``, or one with ``/`` or ``\\`` (a path, which
            could put the run outside ``out_dir`` or among other runs).
    """
    why = None
    if not name.strip():
        why = "is empty"
    elif name.strip() in (".", ".."):
        why = "is not a folder name"
    elif "/" in name or "\\" in name:
        why = "is a path"
    elif "\0" in name:
        why = "holds a NUL character"
    if why is not None:
        raise ConfigError(
            f"name: {name!r} {why}; give one folder name, e.g. name=synth_rle "
            "(the run goes to out_dir/name)"
        )


def from_saved(cls: type[T], data: dict[str, Any]) -> T:
    """A config saved with a run (a checkpoint's ``config``): :func:`from_dict`, except that a
    ``name`` from before names were checked (``.``, ``..``, ``a/b``) becomes its last folder
    name, or the default name, so that older runs still load."""
    name = data.get("name") if isinstance(data, dict) else None
    if isinstance(name, str):
        try:
            check_run_name(name)
        except ConfigError:
            parts = [p for p in re.split(r"[/\\\0]", name) if p.strip() not in ("", ".", "..")]
            default = cls.__dataclass_fields__["name"].default  # type: ignore[attr-defined]
            data = {**data, "name": parts[-1] if parts else default}
    return from_dict(cls, data)


@dataclasses.dataclass
class Config:
    """A whole run. ``posereg train CONFIG --set a.b=value`` overrides any field.

    ``name`` is the run's folder in ``out_dir`` (:func:`check_run_name`).
    """

    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_run_name(self.name)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a run config from YAML with ``--set`` overrides (see :func:`load_yaml`)."""
    return load_yaml(Config, path, overrides)


# --------------------------------------------------------------------------- lifting runs
# A YAML file with ``task: lift`` is a 2D-to-3D lifting run (posereg.engine.lift); a config
# without ``task`` is a top-down run (:class:`Config`). posereg.family reads the task first.


#: The 3D pose prior of synthetic lifting pairs (posereg.synth.prior, which takes it from here).
PosePrior = Literal["classes", "wide", "mixed"]


@dataclasses.dataclass
class LiftDataConfig:
    """Where the 2D-3D pairs come from (posereg.data.lift; docs/lifting.md).

    ``source``: ``synth`` (the generator's bodies seen by the real Human3.6M cameras, with 2D
    noise ``noise``), ``h36m`` (the VideoPose3D archives ``positions_3d`` and, optionally,
    ``positions_2d``, ground truth or detections; train on ``train_subjects``, evaluate on
    ``test_subjects``) or ``body3d`` (MMPose-style ``*_body3d.npz`` files ``train_file`` and
    ``val_file``). ``prior`` (synth only): the 3D poses, ``classes`` (the generator's pose
    classes), ``wide`` (every joint within its anatomical limits, any whole-body orientation) or
    ``mixed`` (half of each); posereg.synth.prior.
    """

    source: Literal["synth", "h36m", "body3d"] = "synth"
    input_skeleton: str = "h36m17"
    noise: Literal["none", "coco", "heavy"] = "coco"
    prior: PosePrior = "classes"
    num_train: int = 50000
    num_val: int = 5000
    seed: int = 0
    camera_file: str | None = None
    positions_3d: str | None = None
    positions_2d: str | None = None
    train_subjects: list[str] = dataclasses.field(
        default_factory=lambda: ["S1", "S5", "S6", "S7", "S8"]
    )
    test_subjects: list[str] = dataclasses.field(default_factory=lambda: ["S9", "S11"])
    stride: int = 1
    train_file: str | None = None
    val_file: str | None = None

    ranges: ClassVar[dict[str, Range]] = {
        "num_train": AT_LEAST_1, "num_val": AT_LEAST_1, "stride": AT_LEAST_1,
    }  # fmt: skip


@dataclasses.dataclass
class LiftModelConfig:
    """The FC lifter (posereg.models.lifter.FCLifter) and its loss."""

    hidden: int = 1024
    num_blocks: int = 2
    dropout: float = 0.5
    loss: str = "rle"
    loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    ranges: ClassVar[dict[str, Range]] = {
        "hidden": AT_LEAST_1, "num_blocks": NON_NEGATIVE, "dropout": FRACTION,
    }  # fmt: skip


@dataclasses.dataclass
class LiftTrainConfig:
    """The lifting loop: Adam, learning rate decayed by ``lr_decay`` after every epoch."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: float = 0.96
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    seed: int = 0
    threads: int | None = None
    log_every: int = 200  # steps

    ranges: ClassVar[dict[str, Range]] = {
        "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "lr": NON_NEGATIVE, "lr_decay": POSITIVE,
        "weight_decay": NON_NEGATIVE, "grad_clip": POSITIVE, "threads": AT_LEAST_1,
        "log_every": AT_LEAST_1,
    }  # fmt: skip


@dataclasses.dataclass
class LiftConfig:
    """A 2D-to-3D lifting run (``task: lift``)."""

    task: Literal["lift"] = "lift"
    name: str = "lift"
    out_dir: str = "runs"
    data: LiftDataConfig = dataclasses.field(default_factory=LiftDataConfig)
    model: LiftModelConfig = dataclasses.field(default_factory=LiftModelConfig)
    train: LiftTrainConfig = dataclasses.field(default_factory=LiftTrainConfig)

    def __post_init__(self) -> None:
        check_run_name(self.name)


def read_task(path: str | Path) -> Any:
    """The ``task`` value of a YAML config file, as written; None when it has none or cannot be
    read (its loader reports the problem). :func:`posereg.family.family_of_config` reads it."""
    try:
        data = _read_yaml(Path(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data.get("task") if isinstance(data, dict) else None


def config_task(path: str | Path) -> str:
    """``lift`` when the YAML file sets ``task: lift``, else ``pose`` (a top-down run)."""
    return "lift" if read_task(path) == "lift" else "pose"


def load_lift_config(path: str | Path, overrides: list[str] | None = None) -> LiftConfig:
    """Load a lifting run config (see :func:`load_yaml`)."""
    return load_yaml(LiftConfig, path, overrides)
