"""Import checkpoints of the official RLE code (Jeff-sjtu/res-loglikelihood-regression).

The official model (rlepose/models/regression_nf.py, ``RegressFlow``) names its parts
``preact`` (a ResNet with torchvision's module names), ``fc_coord``/``fc_sigma`` (its
``Linear`` wrapper, parameters under ``.linear``) and ``flow`` (rlepose/models/layers/
real_nvp.py: ``mask``, ``s.{i}``, ``t.{i}``). posereg's TopDownModel keeps the same inner
names, so conversion is a renaming of prefixes (table in docs/convert.md) plus the buffers
posereg has and the official code does not (the flow prior, a ``torch.distributions`` object
there). The 3D model (regression_nf_3d.py, ``RegressFlow3D``) is converted too.

Example:
    >>> from posereg.convert import official_to_posereg_key
    >>> official_to_posereg_key("module.preact.layer1.0.conv1.weight")
    'backbone.layer1.0.conv1.weight'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posereg.checkpoint import save_checkpoint
from posereg.models import create_pose_model
from posereg.outputs import refuse_existing
from posereg.torchfile import read_torch_file

__all__ = [
    "OfficialConversion",
    "convert_official",
    "convert_official_state_dict",
    "infer_official_config",
    "official_to_posereg_key",
]


# (official prefix, posereg prefix), first match wins. RegressFlow (2D):
_RULES_2D = (
    ("preact.", "backbone."),
    ("fc_coord.linear.", "head.fc_coord.linear."),
    ("fc_sigma.linear.", "head.fc_sigma.linear."),
    ("flow.", "head.criterion.flow."),
)
# RegressFlow3D: fc_sigma is a plain nn.Linear; flow3d is the 3D residual density.
_RULES_3D = (
    ("preact.", "backbone."),
    ("fc_coord.linear.", "head.fc_coord.linear."),
    ("fc_sigma.", "head.fc_sigma.linear."),
    ("flow3d.", "head.criterion.flow."),
)
# Official keys posereg has no place for. ``fcs`` are optional FC layers that the official
# forward never calls (empty with the released configs, NUM_FC_FILTERS: [-1]); ``flow2d`` is
# RegressFlow3D's second flow, used only for 2D-labelled (MPII) samples in mixed training.
_UNUSED_2D = ("fcs.",)
_UNUSED_3D = ("fcs.", "flow2d.")

# posereg-only buffers: the flow's prior N(0, I) (set in convert_official_state_dict).
_PRIOR_KEYS = ("head.criterion.flow.prior_loc", "head.criterion.flow.prior_scale")

#: (blocks per stage, bottleneck) -> backbone name; the official NUM_LAYERS choices.
RESNET_LAYOUTS: dict[tuple[tuple[int, ...], bool], str] = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


@dataclass
class OfficialConversion:
    """The result of converting an official state_dict.

    Attributes:
        state_dict: TopDownModel keys -> tensors, loadable into
            ``create_pose_model(**config)`` with strict=True.
        config: ``create_pose_model`` keyword arguments (backbone, num_keypoints, dim, ...).
        variant: ``"RegressFlow"`` (2D) or ``"RegressFlow3D"``.
        mapping: official key -> posereg key, for every converted tensor.
        dropped: official keys with no posereg counterpart (see docs/convert.md).
        filled: posereg keys the official checkpoint lacks, set to their defaults.
        notes: behaviour of the official model that the converted one does not reproduce.
    """

    state_dict: dict[str, Tensor]
    config: dict[str, Any]
    variant: str
    mapping: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _rules(variant: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    return (_RULES_3D, _UNUSED_3D) if variant == "RegressFlow3D" else (_RULES_2D, _UNUSED_2D)


def official_to_posereg_key(key: str, variant: str = "RegressFlow") -> str | None:
    """The posereg name of an official key (``module.`` prefix allowed); None if it has none."""
    key = key.removeprefix("module.")
    rules, _ = _rules(variant)
    for official, ours in rules:
        if key.startswith(official):
            return ours + key[len(official) :]
    return None


def _posereg_to_official_key(key: str, variant: str) -> str:
    rules, _ = _rules(variant)
    for official, ours in rules:
        if key.startswith(ours):
            return official + key[len(ours) :]
    return f"(no official counterpart for {key})"


def _short_list(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _unwrap(obj: Any) -> dict[str, Tensor]:
    """The state_dict inside a checkpoint: bare, or under "state_dict"/"model"; no "module."."""
    seen = 0
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in ("state_dict", "model", "net") if k in obj), None)
        if inner is None or seen > 3:
            keys = ", ".join(map(str, list(obj)[:10]))
            raise ValueError(
                f"no state_dict found: a mapping with keys {keys} (expected tensors, or a "
                "'state_dict'/'model' entry holding them)"
            )
        obj, seen = inner, seen + 1
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state_dict (a mapping of names to tensors), got {type(obj)}")
    return {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}


def _variant(sd: Mapping[str, Tensor]) -> str:
    return "RegressFlow3D" if "flow3d.mask" in sd else "RegressFlow"


def infer_official_config(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """``create_pose_model`` arguments from an official state_dict's names and shapes.

    D is the width of the flow's coupling masks, K = fc_coord's outputs / D, and the ResNet
    depth comes from the number of blocks per stage and whether they are bottlenecks.

    Raises:
        ValueError: a key needed for the inference is missing, or the layout is not one of
            the official ResNet-18/34/50/101/152.
    """
    sd = _unwrap(state_dict)
    variant = _variant(sd)
    flow = "flow3d." if variant == "RegressFlow3D" else "flow."
    needed = [f"{flow}mask", "fc_coord.linear.weight", "preact.conv1.weight"]
    absent = [k for k in needed if k not in sd]
    if absent:
        raise ValueError(
            f"not an official RLE {variant} state_dict: missing {', '.join(absent)} "
            f"(found keys like {_short_list(sorted(sd), 5)})"
        )
    dim = int(sd[f"{flow}mask"].shape[1])
    out_features = int(sd["fc_coord.linear.weight"].shape[0])
    if out_features % dim:
        raise ValueError(f"fc_coord has {out_features} outputs, not a multiple of D = {dim}")
    blocks = []
    for stage in range(1, 5):
        indices = {
            int(k.split(".")[2])
            for k in sd
            if k.startswith(f"preact.layer{stage}.") and k.count(".") >= 3
        }
        blocks.append(len(indices))
    bottleneck = "preact.layer1.0.conv3.weight" in sd
    layout = (tuple(blocks), bottleneck)
    if layout not in RESNET_LAYOUTS:
        raise ValueError(
            f"preact is not an official ResNet: blocks per stage {tuple(blocks)}, "
            f"{'bottleneck' if bottleneck else 'basic'} blocks; known: "
            + ", ".join(f"{n} {b}" for (b, _), n in RESNET_LAYOUTS.items())
        )
    return {
        "backbone": RESNET_LAYOUTS[layout],
        "num_keypoints": out_features // dim,
        "dim": dim,
        "loss": "rle",
        # The official loss (rlepose/models/criterion.py RLELoss): posereg's defaults.
        "loss_options": {"convention": "official", "q": "laplace"},
        "width": 1.0,
        "norm_mu": True,
    }


def convert_official_state_dict(state_dict: Mapping[str, Any]) -> OfficialConversion:
    """Rename an official RegressFlow/RegressFlow3D state_dict to posereg's TopDownModel.

    Arguments:
        state_dict: the official model's state_dict, bare or wrapped under
            ``"state_dict"``/``"model"``, with or without DataParallel's ``module.`` prefix.

    Returns:
        An :class:`OfficialConversion` (state_dict, config and a report of what was done).

    Raises:
        ValueError: keys that are neither official nor known-unused, posereg keys with no
            official tensor (named by their official names), or shape mismatches.
    """
    sd = _unwrap(state_dict)
    variant = _variant(sd)
    rules, unused = _rules(variant)
    config = infer_official_config(sd)

    converted: dict[str, Tensor] = {}
    mapping: dict[str, str] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in sd.items():
        ours = official_to_posereg_key(key, variant)
        if ours is not None:
            converted[ours], mapping[key] = value, ours
        elif key.startswith(unused):
            dropped.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys of the {variant} checkpoint have no posereg counterpart: "
            f"{_short_list(unknown)}. Is this a checkpoint of another official model?"
        )
    _check_flow_layout(converted, variant)

    # The keys, shapes and dtypes posereg expects, without allocating memory.
    with torch.device("meta"):
        expected = create_pose_model(**config).state_dict()

    filled: list[str] = []
    dim = config["dim"]
    defaults = {_PRIOR_KEYS[0]: torch.zeros(dim), _PRIOR_KEYS[1]: torch.ones(dim)}
    for key, meta in expected.items():
        if key in converted:
            continue
        if key in defaults:
            converted[key] = defaults[key]  # the official prior: MultivariateNormal(0, I)
        elif key.endswith("num_batches_tracked"):
            converted[key] = torch.zeros((), dtype=meta.dtype)  # absent in pre-1.0 torch files
        else:
            continue
        filled.append(key)
    missing = [k for k in expected if k not in converted]
    if missing:
        names = [_posereg_to_official_key(k, variant) for k in missing]
        raise ValueError(
            f"the {variant} checkpoint lacks {len(missing)} tensors that the model needs: "
            f"{_short_list(names)} (posereg: {_short_list(missing, 3)})"
        )
    extra = [k for k in converted if k not in expected]
    shapes = [
        f"{_posereg_to_official_key(k, variant)}: checkpoint {tuple(v.shape)} vs "
        f"{tuple(expected[k].shape)}"
        for k, v in converted.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if extra or shapes:
        problems = [f"unexpected tensors {_short_list(extra)}"] if extra else []
        problems += [f"shape mismatches {_short_list(shapes, 4)}"] if shapes else []
        raise ValueError(
            f"the {variant} checkpoint does not fit the inferred model {config}: "
            + "; ".join(problems)
        )

    notes = []
    if variant == "RegressFlow3D":
        notes = [
            "flow2d (the 2D flow for MPII samples in mixed training) is dropped; "
            "flow3d becomes head.criterion.flow",
            "the official RegressFlow3D makes depth root-relative at evaluation "
            "(z - z[joint 0]) and adds 1e-9 to sigma; posereg's head returns raw z",
        ]
    ordered = {k: converted[k] for k in expected}  # the model's own key order
    return OfficialConversion(ordered, config, variant, mapping, dropped, filled, notes)


def _check_flow_layout(converted: Mapping[str, Tensor], variant: str) -> None:
    """posereg's default RealNVP is the official one (6 layers, 64 hidden); others fail here."""
    mask = converted.get("head.criterion.flow.mask")
    first = converted.get("head.criterion.flow.s.0.0.weight")
    if mask is None or first is None:
        return  # reported as missing keys
    layers, hidden = int(mask.shape[0]), int(first.shape[0])
    if (layers, hidden) != (6, 64):
        raise ValueError(
            f"the {variant} flow has {layers} coupling layers of width {hidden}; posereg "
            "converts the official RealNVP (6 layers, width 64) only"
        )


def convert_official(
    src_path: str | os.PathLike, out_path: str | os.PathLike, overwrite: bool = False
) -> OfficialConversion:
    """Convert an official RLE checkpoint file to a posereg checkpoint file.

    The output is ``torch.save``d as ``{"format", "model", "config", "converted_from",
    "source"}``: ``model`` is the TopDownModel state_dict and ``config["model"]`` the
    ``create_pose_model`` arguments, so ``create_pose_model(**ckpt["config"]["model"])``
    followed by ``load_state_dict(ckpt["model"])`` rebuilds the model.

    Arguments:
        src_path: an official checkpoint (e.g. ``final.pth``, ``coco-laplace-rle.pth``).
        out_path: where to write the posereg checkpoint (parent folders are created).
        overwrite: replace ``out_path`` when it exists (refused otherwise, before any work).

    Returns:
        The :class:`OfficialConversion` (its report: mapping, dropped, filled, notes).

    Raises:
        ValueError: a file that cannot be read with ``weights_only=True`` or that is not an
            official RegressFlow/RegressFlow3D checkpoint (see convert_official_state_dict).
        OutputExistsError: ``out_path`` exists and not ``overwrite``.
    """
    src = Path(src_path).expanduser()
    out = Path(out_path).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {src}")
    if not overwrite:
        refuse_existing(out)
    state = read_torch_file(src, "an official RLE checkpoint (a .pth file saved by torch)")
    try:
        conversion = convert_official_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None
    save_checkpoint(
        {
            "model": conversion.state_dict,
            "config": run_config_for(conversion.config, name=src.stem),
            "converted_from": "official",
            "source": str(src),
        },
        out,
    )
    return conversion


#: Keypoint count -> (skeleton, input size) of the official 2D configs.
_OFFICIAL_2D_DATA = {17: ("coco17", (256, 192)), 16: ("mpii16", (256, 256))}
#: Keypoint count -> (skeleton, input size) of the official 3D config (Human3.6M, 256x256).
_OFFICIAL_3D_DATA = {17: ("h36m17", (256, 256))}


def run_config_for(model_kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    """The run config (as a dict) that ``posereg eval``/``predict``/``info`` use for a converted model.

    2D models become a full :class:`posereg.config.Config` (COCO-17 at 256x192 or MPII-16 at
    256x256, by keypoint count, as the official configs); 3D models with 17 joints a Config of
    the Human3.6M-17 skeleton at 256x256 whose regression head has ``head_options: {dim: 3}``
    and ``data.depth: true`` (the official depth convention), so that
    :func:`posereg.models.build.model_from_checkpoint` rebuilds them and ``TopDownModel.predict``
    returns (u, v, depth) per joint. Other keypoint counts keep the bare ``create_pose_model``
    arguments.
    """
    from posereg.config import Config, DataConfig, ModelConfig, to_dict

    k, dim = model_kwargs["num_keypoints"], model_kwargs["dim"]
    table = _OFFICIAL_2D_DATA if dim == 2 else _OFFICIAL_3D_DATA
    if dim not in (2, 3) or k not in table:
        return {"name": name, "model": dict(model_kwargs)}
    skeleton, input_size = table[k]
    model = ModelConfig(
        backbone=model_kwargs["backbone"],
        width=model_kwargs["width"],
        pretrained=False,
        norm_mu=model_kwargs["norm_mu"],
        loss=model_kwargs["loss"],
        loss_options=dict(model_kwargs["loss_options"]),
        head_options={"dim": 3} if dim == 3 else {},
    )
    data = DataConfig(
        format="mpii" if skeleton == "mpii16" else "coco",
        skeleton=skeleton,
        input_size=input_size,
        depth=dim == 3,  # (u, v, (Z - Z_pelvis) / 2000 mm), the official 3D targets
    )
    return to_dict(Config(name=name, model=model, data=data))
