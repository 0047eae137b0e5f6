"""Outputs never collide, overwrite or escape (issue 20 §1): predict's image ids, overlays and
default folder, convert/export refusing to replace a file, atomic export, run names, and no
empty run folder after a run that failed to start."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _real_data import tiny_checkpoint, tiny_config
from posereg.checkpoint import save_checkpoint
from posereg.config import Config, ConfigError, LiftConfig, apply_overrides
from posereg.outputs import (
    OutputExistsError,
    atomic_path,
    next_free_dir,
    refuse_existing,
    write_atomic,
)
from posereg.predict import Detection, Detections, image_ids, overlay_names
from posereg.samples import SAMPLES_DIR

POSEREG = str(Path(sys.executable).parent / "posereg")
COCO = SAMPLES_DIR / "coco"
PHOTO = COCO / "000000000785.jpg"


def _posereg(*args: str | Path, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [POSEREG, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real posereg checkpoint of a tiny random model (what `posereg train` writes)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


def _small_file_limit() -> None:  # a full disk, for files: writes past 20 kB fail
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


# --------------------------------------------------------------------------- posereg.outputs
def test_refuse_existing_names_the_file_and_the_flag(tmp_path):
    free = tmp_path / "free.pt"
    assert refuse_existing(free) == free
    (tmp_path / "taken.pt").write_text("x")
    with pytest.raises(OutputExistsError, match=r"taken\.pt exists; give --overwrite to replace"):
        refuse_existing(tmp_path / "taken.pt")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError, match="give --force"):
        refuse_existing(tmp_path / "dangling", flag="--force")


def test_atomic_path_replaces_whole_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() makes it, not 0600
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'no' / 'x.bin'}: "):
        write_atomic(tmp_path / "no" / "x.bin", b"x")


def test_next_free_dir_skips_folders_that_hold_anything(tmp_path):
    base = tmp_path / "predict"
    assert next_free_dir(base) == base  # missing
    base.mkdir()
    assert next_free_dir(base) == base  # empty
    (base / "predictions.json").write_text("[]")
    assert next_free_dir(base) == tmp_path / "predict-2"
    (tmp_path / "predict-2").write_text("a file, not a folder")
    (tmp_path / "predict-3").mkdir()
    assert next_free_dir(base) == tmp_path / "predict-3"


# --------------------------------------------------------------------------- predict: image ids
def _dets(**by_name: int) -> Detections:
    dets = Detections("dets.json")
    for i, (name, image_id) in enumerate(by_name.items()):
        dets.by_name[name] = [Detection(i, [0, 0, 10, 10], 1.0, image_id)]
    return dets


def test_image_ids_are_unique_numbers_first_then_detections_then_after_the_largest():
    files = [Path("a/d.jpg"), Path("a/4.jpg"), Path("a/x.jpg"), Path("a/e.jpg"), Path("b/9.png")]
    # d.jpg is the 1st file: by position it was 0 before, and 4.jpg kept 4; now d is after 9
    assert image_ids(files) == [10, 4, 11, 12, 9]
    # a file matched to detections takes their id; the others go after the largest
    assert image_ids(files, _dets(**{"x.jpg": 30})) == [31, 4, 30, 32, 9]
    assert image_ids([Path("d.jpg"), Path("e.jpg")]) == [0, 1]


@pytest.mark.parametrize(
    ("names", "dets"),
    [
        (["4.jpg", "4.png"], None),
        (["004.jpg", "4.jpg"], None),
        (["4.jpg", "x.jpg"], {"x.jpg": 4}),  # the detections say x.jpg is image 4
    ],
)
def test_two_files_of_one_image_id_is_an_error_naming_both(names, dets):
    files = [Path("in") / n for n in names]
    with pytest.raises(ValueError) as e:
        image_ids(files, None if dets is None else _dets(**dets))
    message = str(e.value)
    assert all(str(f) in message for f in files) and "image_id 4" in message


def test_overlay_names_are_unique_even_when_stems_meet():
    files = [Path("a/x.jpg"), Path("b/x.jpg"), Path("a/x.png"), Path("a/x_5.jpg"), Path("a/y.jpg")]
    ids = [5, 6, 7, 8, 9]
    names = overlay_names(files, ids)
    assert names == ["x_5_pose.png", "x_6_pose.png", "x_7_pose.png", "x_5_8_pose.png", "y_pose.png"]


@pytest.mark.slow
def test_predict_gives_each_image_its_own_id_and_overlay_and_names_its_source(tmp_path, checkpoint):
    a, b = tmp_path / "dirA", tmp_path / "dirB"
    a.mkdir()
    b.mkdir()
    shutil.copy(PHOTO, a / "4.jpg")
    shutil.copy(PHOTO, a / "d.jpg")  # by position this was image 4 too
    shutil.copy(PHOTO, b / "d.jpg")  # the same file name in another folder
    out = _posereg("predict", a, b, "--checkpoint", checkpoint, "--out", tmp_path / "out",
                   "--device", "cpu")  # fmt: skip
    assert out.returncode == 0, out.stderr
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    got = [(p["source"], p["file_name"], p["image_id"]) for p in preds]
    assert got == [(str(a / "4.jpg"), "4.jpg", 4), (str(a / "d.jpg"), "d.jpg", 5),
                   (str(b / "d.jpg"), "d.jpg", 6)]  # fmt: skip
    overlays = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert overlays == ["4_pose.png", "d_5_pose.png", "d_6_pose.png"]


@pytest.mark.slow
def test_predict_refuses_two_files_of_one_number_naming_both(tmp_path, checkpoint):
    shutil.copy(PHOTO, tmp_path / "4.jpg")
    shutil.copy(PHOTO, tmp_path / "004.png")
    out = _posereg("predict", tmp_path, "--checkpoint", checkpoint, "--out", tmp_path / "out",
                   "--device", "cpu")  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("posereg predict: error: ")
    assert str(tmp_path / "4.jpg") in line and str(tmp_path / "004.png") in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_without_out_never_writes_into_an_earlier_prediction(tmp_path, checkpoint):
    shutil.copy(PHOTO, tmp_path / "first.jpg")
    shutil.copy(PHOTO, tmp_path / "second.jpg")
    run = tmp_path / "cwd"
    run.mkdir()
    first = _posereg("predict", tmp_path / "first.jpg", "--checkpoint", checkpoint,
                     "--device", "cpu", cwd=run)  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = _posereg("predict", tmp_path / "second.jpg", "--checkpoint", checkpoint,
                      "--device", "cpu", cwd=run)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "writing to runs/predict-2" in second.stderr
    one, two = run / "runs/predict", run / "runs/predict-2"
    assert {p.name for p in one.iterdir()} == {"predictions.json", "first_pose.png"}
    assert {p.name for p in two.iterdir()} == {"predictions.json", "second_pose.png"}
    assert [p["file_name"] for p in json.loads((one / "predictions.json").read_text())] == [
        "first.jpg"
    ]


# --------------------------------------------------------------------------- convert and export
def test_convert_refuses_to_replace_a_file_without_overwrite(tmp_path):
    dst = tmp_path / "trained.pt"
    dst.write_bytes(b"a trained checkpoint")
    src = tmp_path / "official.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, src)
    out = _posereg("convert", "--from", "official", src, dst)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        f"posereg convert: error: {dst} exists; give --overwrite to replace it"
    )
    assert dst.read_bytes() == b"a trained checkpoint"
    # with --overwrite it gets as far as reading the (stand-in, not official) source
    out = _posereg("convert", "--from", "official", src, dst, "--overwrite")
    assert out.returncode == 2 and "exists" not in out.stderr and str(src) in out.stderr


@pytest.mark.slow
def test_export_refuses_to_replace_a_file_without_overwrite(tmp_path, checkpoint):
    pytest.importorskip("onnx")
    target = tmp_path / "model.onnx"
    target.write_bytes(b"an earlier export")
    out = _posereg("export", "--checkpoint", checkpoint, "--out", target, "--no-check")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        f"posereg export: error: {target} exists; give --overwrite to replace it"
    )
    assert target.read_bytes() == b"an earlier export"
    out = _posereg("export", "--checkpoint", checkpoint, "--out", target, "--no-check",
                   "--overwrite")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert target.read_bytes()[:2] != b"an" and target.stat().st_size > 50_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file


@pytest.mark.slow
def test_export_on_a_full_disk_names_the_path_and_leaves_no_partial_onnx(tmp_path, checkpoint):
    pytest.importorskip("onnx")
    target = tmp_path / "out" / "model.onnx"
    out = _posereg("export", "--checkpoint", checkpoint, "--out", target, "--no-check",
                   preexec_fn=_small_file_limit)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == f"posereg export: error: cannot write {target}: File too large"
    assert list((tmp_path / "out").iterdir()) == []  # no half-written .onnx or temporary file


# --------------------------------------------------------------------------- run names
@pytest.mark.parametrize("name", ["", "  ", ".", "..", "../../x", "/tmp/x", "a/b", "a\\b"])
def test_a_run_name_is_one_folder_name(name):
    with pytest.raises(ConfigError, match=r"^name: "):
        Config(name=name)
    with pytest.raises(ConfigError, match=r"^name: "):
        LiftConfig(name=name)
    with pytest.raises(ConfigError, match=r"^name: "):
        apply_overrides(Config(), [f"name={name!r}" if name.strip() else "name=''"])


@pytest.mark.parametrize(("saved", "loaded"), [(".", "run"), ("..", "run"), ("a/b", "b")])
def test_checkpoints_of_runs_named_before_the_check_still_load(tmp_path, checkpoint, saved, loaded):
    from posereg.models.build import model_from_checkpoint

    state = torch.load(checkpoint, weights_only=True)
    state["config"]["name"] = saved  # what `name=` gave before: the run went to out_dir itself
    path = save_checkpoint(state, tmp_path / "old.pt")
    _, cfg, _ = model_from_checkpoint(path)
    assert cfg.name == loaded


def _tiny_config(tmp_path: Path) -> Path:
    """:func:`tiny_config` for one epoch (a top-down run that trains in seconds)."""
    return tiny_config(tmp_path, train={"epochs": 1})


@pytest.mark.parametrize("name", ["", "../../escaped"])
def test_train_refuses_a_name_that_is_not_one_folder(tmp_path, name):
    out = _posereg("train", _tiny_config(tmp_path), "--set", f"name={name}", "--device", "cpu")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"posereg train: error: name: {name!r} ")
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.train_ann=/nonexistent/ann.json"],  # bad data
        ["model.init_from=/nonexistent/best.pt"],  # fails after the data and model are built
    ],
)
def test_a_run_that_fails_before_its_first_step_leaves_no_run_folder(tmp_path, overrides):
    config = _tiny_config(tmp_path)
    (tmp_path / "runs").mkdir()
    out = _posereg("train", config, "--set", *overrides, "--device", "cpu")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert list((tmp_path / "runs").iterdir()) == []  # no empty tiny/ to push the next to tiny-2


def test_a_lift_run_with_an_unknown_loss_leaves_no_run_folder(tmp_path):
    cfg = {"task": "lift", "name": "lift", "out_dir": str(tmp_path / "runs"),
           "data": {"num_train": 8, "num_val": 8}, "model": {"loss": "nope"}}  # fmt: skip
    (tmp_path / "runs").mkdir()
    (tmp_path / "lift.yaml").write_text(yaml.safe_dump(cfg))
    out = _posereg("train", tmp_path / "lift.yaml", "--device", "cpu")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "nope" in out.stderr
    assert list((tmp_path / "runs").iterdir()) == []


def test_two_videos_of_one_name_are_refused_naming_both(tmp_path, checkpoint):
    a, b = tmp_path / "a" / "walk.mp4", tmp_path / "b" / "walk.mp4"
    out = _posereg("predict", a, b, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert str(a) in line and str(b) in line and "walk_pose.mp4" in line
