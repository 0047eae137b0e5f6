"""The synthetic dataset a config asks for (``data.synth``): reuse it, make it, or say how to make it.

Each split records the settings it was made with (:class:`posereg.synth.generate.SplitRecord`,
``annotations/person_keypoints_<split>.settings.json``, written by ``posereg data synth`` and by
training alike). Training reuses a split whose record matches the config and regenerates it,
saying which setting differs, otherwise; evaluation only reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from posereg.config import ConfigError, SynthDataConfig
from posereg.data.badinput import BadInputError
from posereg.synth.generate import (
    PRESETS,
    SplitRecord,
    SynthConfig,
    generate,
    read_split_record,
    split_record_path,
)

__all__ = [
    "ensure_synthetic_dataset",
    "check_synthetic_split",
    "synth_config_of",
    "synth_commands",
    "stale_reason",
]

logger = logging.getLogger("posereg.data")

SPLITS = ("train", "val")


def synth_config_of(s: SynthDataConfig) -> SynthConfig:
    """The generator settings ``s`` resolves to: the preset, then ``s.options`` on top.

    A ``noise`` dict in the options changes only the noise fields it names (the preset's other
    noise fields stay), as ``posereg data synth --preset P --noise k=v`` does.

    Raises:
        ConfigError: an unknown preset or option, or a bad option value, naming
            ``data.synth.preset`` or ``data.synth.options.<key>``.
    """
    if s.preset not in PRESETS:
        raise ConfigError(
            f"data.synth.preset: unknown synth preset {s.preset!r}; valid: {', '.join(PRESETS)}"
        )
    options = dict(s.options)
    if isinstance(options.get("noise"), dict):
        options["noise"] = {**PRESETS[s.preset].get("noise", {}), **options["noise"]}
    return SynthConfig.from_dict({**PRESETS[s.preset], **options}, prefix="data.synth.options.")


def _num_images(s: SynthDataConfig, split: str) -> int:
    return s.num_train if split == "train" else s.num_val


def _wanted(s: SynthDataConfig, split: str) -> SplitRecord:
    return SplitRecord(split, _num_images(s, split), s.seed, synth_config_of(s), s.preset)


def stale_reason(s: SynthDataConfig, split: str) -> str | None:
    """Why ``split`` under ``s.root`` cannot be reused for ``s`` (None: it can).

    Reasons: the annotation json or the settings record is missing (never generated, or
    interrupted), or the record differs, e.g. ``"num_train 8000 != 4000 recorded"``.
    """
    root = Path(s.root)
    ann = root / "annotations" / f"person_keypoints_{split}.json"
    if not ann.is_file():
        return f"{ann} does not exist"
    recorded = read_split_record(root, split)
    if recorded is None:
        return (
            f"{split_record_path(root, split)} is missing or unreadable "
            "(an interrupted generation, or one made before settings were recorded)"
        )
    diffs = _wanted(s, split).differences(recorded)
    # the config names the count per split: num_train / num_val
    return "; ".join(d.replace("num_images", f"num_{split}", 1) for d in diffs) or None


def ensure_synthetic_dataset(s: SynthDataConfig) -> Path:
    """Make each split of ``s`` unless a split made with the same settings is there; returns the root.

    A split is reused when its settings record equals ``s`` (whether ``posereg data synth`` or
    an earlier training made it), and regenerated otherwise, with the reason logged.
    """
    root = Path(s.root)
    for split in SPLITS:
        reason = stale_reason(s, split)
        n = _num_images(s, split)
        if reason is None:
            logger.info(
                "reusing synthetic %s split in %s (%d images, same settings)", split, root, n
            )
            continue
        # a split that is there but cannot be reused is overwritten: say so above INFO
        level = logging.INFO if reason.endswith("does not exist") else logging.WARNING
        logger.log(level, "generating %d synthetic %s images in %s: %s", n, split, root, reason)
        generate(
            root, split, n, seed=s.seed, config=synth_config_of(s), num_workers=s.workers,
            preset=s.preset,
        )  # fmt: skip
    return root


def check_synthetic_split(s: SynthDataConfig, split: str) -> None:
    """For readers (evaluation): the split must exist; a settings mismatch is only a warning.

    Raises:
        BadInputError: the split's annotation json is missing, naming the commands that make it.
    """
    root = Path(s.root)
    ann = root / "annotations" / f"person_keypoints_{split}.json"
    if not ann.is_file():
        commands = "\n  ".join(synth_commands(s, (split,)))
        raise BadInputError(
            ann,
            "",
            f"the synthetic {split} set is missing and evaluation does not generate data; make it "
            f"with `posereg train CONFIG` (which generates data.synth) or with\n  {commands}",
        )
    reason = stale_reason(s, split)
    if reason is not None:
        logger.warning(
            "the synthetic %s set in %s does not match data.synth (%s); evaluating it as it is",
            split,
            root,
            reason,
        )


def _cli_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def synth_commands(s: SynthDataConfig, splits: tuple[str, ...] = SPLITS) -> list[str]:
    """The ``posereg data synth`` command lines that make the splits of ``s``.

    A set made with them has the same settings record as one training makes, so training
    reuses it (README's example commands are these, for ``configs/synth_rle.yaml``).
    """
    options = dict(s.options)
    flags = ""
    if "image_size" in options:
        h, w = options.pop("image_size")
        flags += f" --image-size {h} {w}"
    if "people_per_image" in options:
        flags += f" --people-per-image {'..'.join(str(v) for v in options.pop('people_per_image'))}"
    for key in ("camera", "keypoint_set"):
        if key in options:
            flags += f" --{key.replace('_', '-')} {options.pop(key)}"
    noise = options.pop("noise", None) or {}
    if noise:
        flags += " --noise " + " ".join(f"{k}={_cli_value(v)}" for k, v in noise.items())
    if options:
        flags += " --set " + " ".join(f"{k}={_cli_value(v)}" for k, v in options.items())
    return [
        f"posereg data synth --out {s.root} --split {split} --num-images {_num_images(s, split)} "
        f"--seed {s.seed} --preset {s.preset}{flags}"
        for split in splits
    ]
