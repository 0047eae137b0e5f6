"""The synthetic set of ``data.synth``: made once, recorded, reused by training, never made by
evaluation, made by rank 0 alone under torchrun (issue 8, findings 14 and 15)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from posereg.config import (
    Config,
    ConfigError,
    DataConfig,
    SynthDataConfig,
    load_config,
    to_dict,
)
from posereg.data.badinput import BadInputError
from posereg.engine.builders import build_datasets
from posereg.engine.synthdata import (
    ensure_synthetic_dataset,
    stale_reason,
    synth_commands,
    synth_config_of,
)
from posereg.synth.generate import GENERATOR_VERSION, read_split_record, split_record_path
from posereg.synth.noise import COCO_SCALE

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _tiny(root: Path, **changes) -> SynthDataConfig:
    """A few 64x64 images, with options of every kind the CLI spells differently."""
    s = SynthDataConfig(
        root=str(root), preset="easy", num_train=8, num_val=4, seed=3, workers=0,
        options={"image_size": [64, 64], "people_per_image": [1, 1],
                 "noise": {"outlier_prob": 0.0}, "occluder_prob": 0.2},
    )  # fmt: skip
    return dataclasses.replace(s, **changes)


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _run_cli(command: str) -> None:
    argv = shlex.split(command)
    assert argv[:3] == ["posereg", "data", "synth"]
    out = subprocess.run(
        [str(BIN / "posereg"), *argv[1:], "--workers", "0", "--quiet"],
        capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_split_records_its_settings(tmp_path):
    s = _tiny(tmp_path / "synth")
    ensure_synthetic_dataset(s)
    record = read_split_record(s.root, "train")
    assert record is not None
    assert (record.split, record.num_images, record.seed, record.preset) == ("train", 8, 3, "easy")
    assert record.config == synth_config_of(s) and record.generator_version == GENERATOR_VERSION
    on_disk = json.loads(split_record_path(s.root, "val").read_text())
    assert on_disk["num_images"] == 4 and on_disk["config"]["image_size"] == [64, 64]
    # the preset's noise stays where the options name only one noise field
    assert (
        on_disk["config"]["noise"]["scale"] == 0.5 * COCO_SCALE  # easy: half COCO's spread
        and on_disk["config"]["noise"]["outlier_prob"] == 0.0
    )


def test_a_split_made_by_the_cli_is_reused_by_training(tmp_path, caplog):
    s = _tiny(tmp_path / "synth")
    for command in synth_commands(s):
        _run_cli(command)
    before = _mtimes(Path(s.root))
    assert len([k for k in before if k.startswith("images/train/")]) == 8
    with caplog.at_level(logging.INFO, logger="posereg.data"):
        ensure_synthetic_dataset(s)
    assert _mtimes(Path(s.root)) == before  # nothing rewritten
    assert "reusing synthetic train split" in caplog.text
    assert "reusing synthetic val split" in caplog.text and "generating" not in caplog.text


def test_a_differing_setting_regenerates_that_split_and_says_why(tmp_path, caplog):
    s = _tiny(tmp_path / "synth")
    ensure_synthetic_dataset(s)
    val_before = {k: v for k, v in _mtimes(Path(s.root)).items() if "_val" in k or "/val/" in k}
    more = dataclasses.replace(s, num_train=16)
    with caplog.at_level(logging.INFO, logger="posereg.data"):
        ensure_synthetic_dataset(more)
    assert "num_train 16 != 8 recorded" in caplog.text
    assert any(r.levelno == logging.WARNING and "num_train 16" in r.message for r in caplog.records)
    ann = json.loads((Path(s.root) / "annotations" / "person_keypoints_train.json").read_text())
    assert len(ann["images"]) == 16 and read_split_record(s.root, "train").num_images == 16
    after = _mtimes(Path(s.root))
    assert {k: after[k] for k in val_before} == val_before  # the val split was reused
    noisier = dataclasses.replace(more, options={**more.options, "noise": {"outlier_prob": 0.1}})
    assert stale_reason(noisier, "val") == "noise.outlier_prob 0.1 != 0.0 recorded"
    assert stale_reason(dataclasses.replace(more, seed=4), "train") == "seed 4 != 3 recorded"


def test_a_split_made_with_the_old_noise_default_is_regenerated(tmp_path, caplog):
    """Sets made before the default became COCO's reading (scale 1; easy 0.5) are not reused."""
    s = _tiny(tmp_path / "synth")
    ensure_synthetic_dataset(s)
    ann = Path(s.root) / "annotations" / "person_keypoints_train.json"
    new_labels = [a["keypoints"] for a in json.loads(ann.read_text())["annotations"]]
    record = split_record_path(s.root, "train")
    old = json.loads(record.read_text())
    old["config"]["noise"]["scale"] = 0.5  # what the old code recorded for the easy preset
    record.write_text(json.dumps(old))
    assert stale_reason(s, "train") == f"noise.scale {0.5 * COCO_SCALE} != 0.5 recorded"
    with caplog.at_level(logging.INFO, logger="posereg.data"):
        ensure_synthetic_dataset(s)
    assert "generating 8 synthetic train images" in caplog.text and "noise.scale" in caplog.text
    assert stale_reason(s, "train") is None
    again = [a["keypoints"] for a in json.loads(ann.read_text())["annotations"]]
    assert again == new_labels  # regenerated with the current default


def test_a_bad_option_names_its_config_key(tmp_path):
    with pytest.raises(
        ConfigError, match=r"data\.synth\.options\.occluder_prob: 2\.0 is out of range"
    ):
        synth_config_of(_tiny(tmp_path, options={"occluder_prob": 2.0}))
    with pytest.raises(ConfigError, match=r"unknown config key data\.synth\.options\.noise\.sclae"):
        synth_config_of(_tiny(tmp_path, options={"noise": {"sclae": 0.1}}))
    with pytest.raises(ConfigError, match=r"data\.synth\.preset: unknown synth preset 'tiny'"):
        synth_config_of(_tiny(tmp_path, preset="tiny"))


def test_an_interrupted_generation_is_redone(tmp_path, caplog):
    s = _tiny(tmp_path / "synth")
    ensure_synthetic_dataset(s)  # a complete set, then a regeneration killed half-way
    script = (
        "from posereg.synth.generate import SynthConfig, generate\n"
        f"generate({s.root!r}, 'train', 100000, seed=3, config=SynthConfig.preset('easy', "
        "image_size=(64, 64)), num_workers=0, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV)
    images = Path(s.root) / "images" / "train"
    deadline = time.monotonic() + 60
    while len(list(images.iterdir())) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(images.iterdir())) >= 40  # it really was writing
    assert not split_record_path(s.root, "train").exists()
    assert "missing" in stale_reason(s, "train")
    with caplog.at_level(logging.INFO, logger="posereg.data"):
        ensure_synthetic_dataset(s)
    assert "interrupted generation" in caplog.text
    assert stale_reason(s, "train") is None and stale_reason(s, "val") is None


def test_the_readme_commands_make_the_set_the_shipped_config_trains_on():
    s = load_config(REPO / "configs" / "synth_rle.yaml").data.synth
    assert s is not None
    readme = (REPO / "README.md").read_text()
    commands = [
        re.sub(r"\s+#.*$", "", line).strip()
        for line in readme.splitlines()
        if line.startswith("posereg data synth ")
    ]
    assert commands == synth_commands(s)


def _synth_run_config(tmp_path: Path, s: SynthDataConfig) -> Config:
    root = s.root
    data = DataConfig(
        train_ann=f"{root}/annotations/person_keypoints_train.json",
        train_images=f"{root}/images/train",
        val_ann=f"{root}/annotations/person_keypoints_val.json",
        val_images=f"{root}/images/val",
        input_size=(64, 48),
        workers=0,
        synth=s,
    )
    return Config(name="synth", out_dir=str(tmp_path / "runs"), data=data)


def test_evaluation_never_generates_the_synthetic_set(tmp_path, caplog):
    s = _tiny(tmp_path / "synth")
    cfg = _synth_run_config(tmp_path, s)
    with pytest.raises(BadInputError) as info:
        build_datasets(cfg, train_split=False)
    message = str(info.value)
    assert "person_keypoints_val.json" in message and "posereg train CONFIG" in message
    assert synth_commands(s, ("val",))[0] in message
    assert not Path(s.root).exists()  # nothing was written

    # a set made with other settings is read as it is, with a warning, and left untouched
    ensure_synthetic_dataset(dataclasses.replace(s, num_val=6))
    before = _mtimes(Path(s.root))
    with caplog.at_level(logging.WARNING, logger="posereg.data"):
        _, val = build_datasets(cfg, train_split=False)
    assert len(val.table.image_ids) == 6
    assert "num_val 4 != 6 recorded" in caplog.text
    assert _mtimes(Path(s.root)) == before


@pytest.mark.slow
def test_eval_cli_reads_only(tmp_path):
    """`posereg eval` on a config whose synthetic set is missing: an error naming the commands."""
    import torch

    from posereg.checkpoint import save_checkpoint
    from posereg.models.build import build_model

    s = _tiny(tmp_path / "synth")
    cfg = _synth_run_config(tmp_path, s)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, backbone="resnet18", width=0.25)
    )
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": to_dict(cfg)}, ckpt)
    out = subprocess.run(
        [str(BIN / "posereg"), "eval", str(config), "--checkpoint", str(ckpt)],
        capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2
    assert "evaluation does not generate data" in out.stderr and "posereg data synth" in out.stderr
    assert out.stderr.startswith("posereg eval: error:") and "Traceback" not in out.stderr
    assert not Path(s.root).exists()


@pytest.mark.slow
def test_torchrun_generates_the_set_once_on_rank_0(tmp_path):
    s = _tiny(tmp_path / "synth")
    ensure_synthetic_dataset(dataclasses.replace(s, num_train=4))  # train differs, val is reusable
    val_before = {k: v for k, v in _mtimes(Path(s.root)).items() if "_val" in k or "/val/" in k}
    cfg = to_dict(_synth_run_config(tmp_path, s))
    cfg["model"].update(backbone="resnet18", width=0.25)
    cfg["train"].update(epochs=1, max_steps=1, batch_size=2, progress=False, threads=1)
    cfg["eval"].update(batch_size=4, num_vis=2, flip_test=False)
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29531",
         "-m", "posereg.cli", "train", str(config)],
        capture_output=True, text=True, timeout=600, env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    # generate() reports its progress once per run: one rank generated, the other waited
    assert out.stderr.count("synth train: 8/8") == 1, out.stderr[-4000:]
    assert out.stderr.count("num_train 8 != 4 recorded") == 1
    assert "synth val:" not in out.stderr
    after = _mtimes(Path(s.root))
    assert {k: after[k] for k in val_before} == val_before
    assert read_split_record(s.root, "train").num_images == 8
    assert (tmp_path / "runs" / "synth" / "last.pt").exists()
