"""Typed configs: YAML loading, --set overrides, and errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from posereg.config import (
    Config,
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    save_yaml,
    to_dict,
    validate,
)
from posereg.data.dataset import TransformConfig
from posereg.models import create_head, pose_head_options

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_follow_the_official_recipe():
    cfg = Config()
    assert cfg.optim.optimizer == "adam" and cfg.optim.lr == 1e-3
    assert cfg.optim.milestones == [170, 200] and cfg.optim.gamma == 0.1 and cfg.train.epochs == 270
    assert cfg.data.input_size == (256, 192)
    assert isinstance(cfg.data.transform, TransformConfig) and cfg.data.transform.augment
    assert cfg.data.transform.rotation_factor == 45 and cfg.data.transform.scale_factor == 0.25
    # the head's default loss: RLE (the official Laplace Q) for the regression head
    assert cfg.model.head == "regression" and cfg.model.loss is None
    options = pose_head_options(cfg.model.head_options, cfg.model.loss, cfg.model.loss_options)
    head = create_head(cfg.model.head, 8, 17, cfg.data.input_size, **options)
    assert type(head.criterion).__name__ == "RLELoss" and head.criterion.q == "laplace"


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(
        Config(),
        ["train.epochs=3", "data.transform.flip_prob=0.25", "model.loss_options={q: gaussian}"],
    )
    save_yaml(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.data.transform.flip_prob == 0.25 and again.model.loss_options == {"q": "gaussian"}
    assert isinstance(again.data.input_size, tuple)


def test_overrides_are_parsed_as_yaml_and_type_checked():
    cfg = apply_overrides(
        Config(),
        [
            "optim.lr=5e-4",
            "data.input_size=[64, 48]",
            "optim.grad_clip=null",
            "model.pretrained=weights.pth",
        ],
    )
    assert cfg.optim.lr == 5e-4 and cfg.data.input_size == (64, 48)
    assert cfg.optim.grad_clip is None and cfg.model.pretrained == "weights.pth"
    assert apply_overrides(Config(), ["train.epochs=7"]).train.epochs == 7
    assert apply_overrides(Config(), ["optim.lr=1"]).optim.lr == 1.0  # int accepted for float


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown config key train.epoch"),
        ("nosuch.x=1", "unknown config key nosuch.x"),
        ("train.epochs=three", "train.epochs: expected an integer, got 'three'"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.amp=fp8", "train.amp: 'fp8' is not one of 'none', 'bf16', 'fp16'"),
        ("data.input_size=[64]", "data.input_size: expected 2 values"),
        ("train.progress=maybe", "train.progress: expected true/false"),
        ("data.transform.flipprob=0.1", "unknown config key data.transform.flipprob"),
        ("optim.lr", "must look like key.path=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        apply_overrides(Config(), [override])


def test_yaml_errors_name_the_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"optim": {"learning_rate": 0.1}}))
    with pytest.raises(
        ConfigError,
        match=r"bad.yaml: unknown config key optim.learning_rate; valid keys here: optimizer, momentum, lr",
    ):
        load_config(p)
    p.write_text("train: {epochs: [1, 2]}")
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(p)
    p.write_text("train: {epochs: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_file_that_is_not_text_is_a_config_error_naming_it(tmp_path):
    """An image given as the config (posereg eval photo.jpg ...) is refused naming the file, not
    with the codec's bare 'can't decode byte 0xff'."""
    from posereg.config import config_task, load_lift_config

    p = tmp_path / "photo.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    assert config_task(p) == "pose"  # the loader reports it
    for load in (load_config, load_lift_config):
        with pytest.raises(ConfigError, match=re.escape(f"{p}: not a YAML config (not UTF-8")):
            load(p)


def test_yaml_loader_is_safe(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_invalid_values_are_rejected_by_the_schema_owner():
    with pytest.raises(ValueError, match="flip_prob must be in"):
        from_dict(Config, {"data": {"transform": {"flip_prob": 2.0}}})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    """Every config in configs/ loads with the schema of its task (its family's)."""
    from posereg.config import LiftConfig
    from posereg.family import family_of_config

    family = family_of_config(path)
    cfg = family.load_config(path)
    assert getattr(cfg, "task", "topdown") == family.name
    assert isinstance(cfg, LiftConfig) == path.name.startswith("lift_")
    assert to_dict(cfg)["name"] == cfg.name


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=0", "train.batch_size: 0 is out of range; allowed: >= 1"),
        ("train.batch_size=-4", "train.batch_size: -4 is out of range; allowed: >= 1"),
        (
            "data.input_size=[0, 0]",
            "data.input_size: (0, 0) is out of range; allowed: each value >= 1",
        ),
        ("data.input_size=[64, -48]", "data.input_size: (64, -48) is out of range"),
        ("train.epochs=0", "train.epochs: 0 is out of range; allowed: >= 1"),
        ("train.max_steps=0", "train.max_steps: 0 is out of range; allowed: >= 1"),
        ("optim.lr=-0.001", "optim.lr: -0.001 is out of range; allowed: >= 0"),
        ("optim.momentum=1.5", "optim.momentum: 1.5 is out of range; allowed: in [0, 1]"),
        ("optim.grad_clip=0", "optim.grad_clip: 0.0 is out of range; allowed: > 0"),
        ("optim.milestones=[10, -1]", "optim.milestones: [10, -1] is out of range"),
        ("data.workers=-1", "data.workers: -1 is out of range; allowed: >= 0"),
        ("train.log_every=0", "train.log_every: 0 is out of range; allowed: >= 1"),
        ("train.eval_every=-1", "train.eval_every: -1 is out of range; allowed: >= 0"),
        ("train.checkpoint_every=-5", "train.checkpoint_every: -5 is out of range"),
        ("eval.batch_size=0", "eval.batch_size: 0 is out of range; allowed: >= 1"),
        ("model.width=0", "model.width: 0.0 is out of range; allowed: > 0"),
        (
            "data.transform.flip_prob=2",
            "data.transform: TransformConfig.flip_prob must be in [0, 1]",
        ),
    ],
)
def test_values_out_of_range_name_the_key_and_the_range(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_overrides(Config(), [override])


def test_ranges_allow_the_edges_and_null():
    cfg = apply_overrides(
        Config(),
        ["optim.lr=0", "train.eval_every=0", "data.workers=0", "optim.grad_clip=null",
         "train.max_steps=null", "optim.momentum=1", "data.input_size=[1, 1]"],
    )  # fmt: skip
    assert cfg.optim.lr == 0.0 and cfg.train.max_steps is None and cfg.data.input_size == (1, 1)


def test_configs_built_in_python_are_range_checked_by_validate(tmp_path):
    from posereg.engine.train import train

    cfg = Config()
    cfg.train.batch_size = 0
    with pytest.raises(ConfigError, match=r"train\.batch_size: 0 is out of range"):
        validate(cfg)
    cfg = Config(out_dir=str(tmp_path))
    cfg.data.input_size = (256, 0)
    with pytest.raises(ConfigError, match=r"data\.input_size: \(256, 0\) is out of range"):
        train(cfg, device="cpu")
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_range_error_in_a_file_names_the_file_and_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": {"batch_size": -4}}))
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.batch_size: -4 is out of range"):
        load_config(p)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.input_size=128,96", (128, 96)),  # a list written a,b
        ("data.input_size=128", (128, 128)),  # one number for a pair means both
        ("optim.milestones=10..20", [10, 20]),  # numbers written as a range a..b
        ("data.detections=none", None),  # none is null where null is allowed
        ("name=2024", "2024"),  # a string field takes the text as written
        ("name=none", "none"),  # ... and only a field that may be null reads none as null
    ],
)
def test_override_shorthands_of_the_command_line(override, expected):
    """One override parser for run configs and the generator's settings (posereg data synth)."""
    key = override.split("=")[0]
    cfg = apply_overrides(Config(), [override])
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected


def test_a_single_number_is_no_list_of_any_length():
    with pytest.raises(ConfigError, match=r"optim\.milestones: expected a list, got 5"):
        apply_overrides(Config(), ["optim.milestones=5"])


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_ranges_reject_nan_and_infinity(value):
    with pytest.raises(ConfigError, match=r"optim\.lr: .* is out of range; allowed: >= 0"):
        apply_overrides(Config(), [f"optim.lr={value}"])
