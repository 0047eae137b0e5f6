"""User errors at the edges are one line naming the file, and a non-zero exit (issue 20, part 2):
files that are not checkpoints, non-finite weights, bad `posereg lift` inputs, `demo --steps 0`,
a corrupt image met in a DataLoader worker, and user errors under torchrun."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _real_data import tiny_checkpoint, tiny_config
from posereg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from posereg.samples import SAMPLES_DIR
from posereg.torchfile import TorchFileError, read_torch_file

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COCO = SAMPLES_DIR / "coco"
JPEG = COCO / "000000000785.jpg"


def _posereg(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "posereg"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _one_error_line(out: subprocess.CompletedProcess, *needles: object) -> str:
    """The run failed with exit 2 and its error is one line on stderr holding every needle.

    Training logs its data report before it meets the error: those lines may come first, the
    error is the last line and the only ``posereg CMD: error: ...`` line.
    """
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in lines if line.startswith("posereg ") and ": error: " in line]
    assert len(errors) == 1 and errors[0] == lines[-1], out.stderr[-3000:]
    if not out.args[1:2] == ["train"]:
        assert len(lines) == 1, out.stderr[-3000:]
    for needle in needles:
        assert str(needle) in lines[-1], lines[-1]
    assert "weights_only" not in out.stderr and "Traceback" not in out.stderr
    return lines[-1]


def _tiny_config(tmp_path: Path, name: str = "tiny", **sections) -> Path:
    """:func:`tiny_config` for one epoch, without validation pictures."""
    train = {"epochs": 1, **sections.pop("train", {})}
    evaluation = {"num_vis": 0, **sections.pop("eval", {})}
    return tiny_config(tmp_path, name, train=train, eval=evaluation, **sections)


# --------------------------------------------------------------------------- not checkpoints
# (content, what the message says the file is)
BAD_FILES = {
    "empty": (b"", "it is empty (0 bytes)"),
    "text": (
        b"model: resnet50\nepochs: 3\n",
        "it is a text file (it starts with 'model: resnet50')",
    ),
    "jpeg": (JPEG.read_bytes(), "it is a JPEG image"),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "it is a PNG image"),
    "pickle": (
        pickle.dumps({"model": {}}, protocol=4),
        "it is a plain Python pickle, not a file written by torch.save",
    ),
}


def _bad_file(tmp_path: Path, kind: str, name: str = "model.pt") -> tuple[Path, str]:
    content, said = BAD_FILES[kind]
    path = tmp_path / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, said


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_read_torch_file_says_what_a_file_is_instead(tmp_path, kind):
    path, said = _bad_file(tmp_path, kind)
    with pytest.raises(TorchFileError) as e:
        read_torch_file(path, "a posereg checkpoint")
    assert str(e.value) == f"{path}: not a posereg checkpoint: {said}"
    with pytest.raises(CheckpointError, match="not a posereg checkpoint") as e:
        load_checkpoint(path)
    assert said in str(e.value) and str(path) in str(e.value)


def test_damaged_foreign_and_code_carrying_torch_files_are_named(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(TorchFileError, match=r"truncated.pt: not X: it is a damaged or truncated"):
        read_torch_file(truncated, "X")
    import zipfile

    with zipfile.ZipFile(tmp_path / "archive.pt", "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(TorchFileError, match=r"archive.pt: not X: it is a zip archive"):
        read_torch_file(tmp_path / "archive.pt", "X")
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, evil)
    with pytest.raises(TorchFileError) as e:
        read_torch_file(evil, "X")
    assert "weights-only load refuses (such as " in str(e.value) and ".system)" in str(e.value)
    assert "weights_only" not in str(e.value)
    legacy = tmp_path / "legacy.pt"  # torch's pre-1.6 format (official RLE checkpoints) still loads
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_torch_file(legacy, "X")["w"], torch.ones(3))
    damaged = tmp_path / "damaged.pt"  # a legacy file whose pickle stream turns into noise
    damaged.write_bytes(legacy.read_bytes()[:20] + b"\xee" * 200)
    with pytest.raises(TorchFileError, match=r"damaged.pt: not X: it is a damaged or truncated"):
        read_torch_file(damaged, "X")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def _commands(tmp_path: Path, bad: Path) -> dict[str, list[object]]:
    """Every command that reads a torch file, with ``bad`` in that place."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    (images / "a.jpg").write_bytes(JPEG.read_bytes())
    poses = tmp_path / "poses.npy"
    np.save(poses, np.zeros((1, 17, 2)))
    cfg = _tiny_config(tmp_path)
    resume = tmp_path / "runs" / "resumed"
    resume.mkdir(parents=True, exist_ok=True)
    (resume / "config.yaml").write_text(cfg.read_text())
    (resume / "last.pt").write_bytes(bad.read_bytes())
    return {
        "info": ["info", bad],
        "eval": ["eval", cfg, "--checkpoint", bad],
        "predict": ["predict", images, "--checkpoint", bad, "--out", tmp_path / "p"],
        "export": ["export", "--checkpoint", bad, "--out", tmp_path / "m.onnx"],
        "lift": ["lift", poses, "--checkpoint", bad, "--out", tmp_path / "l"],
        "serve": ["serve", "--checkpoint", bad, "--port", "1"],
        "convert": ["convert", "--from", "official", bad, tmp_path / "converted.pt"],
        "train --resume": ["train", "--resume", resume],
        "train init_from": ["train", cfg, "--set", f"model.init_from={bad}"],
        "train pretrained": ["train", cfg, "--set", "model.width=1.0", f"model.pretrained={bad}"],
        "predict --detector-weights": [
            "predict",
            images,
            "--checkpoint",
            bad,
            "--detector",
            "fasterrcnn_mobilenet_v3_large_320_fpn",
            "--detector-weights",
            bad,
            "--out",
            tmp_path / "p2",
        ],  # fmt: skip
    }


COMMANDS = (
    "info", "eval", "predict", "export", "lift", "serve", "convert", "train --resume",
    "train init_from", "train pretrained", "predict --detector-weights",
)  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_names_a_file_that_is_not_a_checkpoint(tmp_path, command):
    kinds = sorted(BAD_FILES)
    kind = kinds[COMMANDS.index(command) % len(kinds)]  # each kind meets several commands
    bad, said = _bad_file(tmp_path, kind)
    if command == "serve":
        pytest.importorskip("fastapi")
    args = _commands(tmp_path, bad)[command]
    where = tmp_path / "runs" / "resumed" / "last.pt" if command == "train --resume" else bad
    _one_error_line(_posereg(*args), f"{where}: not ", said)


def test_a_code_carrying_checkpoint_is_one_line_without_torch_advice(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "posereg-checkpoint-v1", "model": {}, "x": _Payload()}, evil)
    out = _posereg("info", evil)
    _one_error_line(out, evil, "weights-only load refuses")
    assert "should-never-run" not in out.stdout


# --------------------------------------------------------------------------- non-finite weights
@pytest.mark.parametrize(
    ("part", "value"), [("backbone.", float("nan")), ("head.criterion.flow.s.", float("inf"))]
)
def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(tmp_path, part, value):
    path = tiny_checkpoint(tmp_path / "diverged.pt")
    state = torch.load(path, weights_only=True)
    key = next(k for k, t in state["model"].items() if k.startswith(part) and t.is_floating_point())
    state["model"][key].view(-1)[0] = value
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert f"{path}: non-finite weights (NaN or inf) in {key}" in str(e.value)


def test_predict_with_a_nan_flow_is_one_line_naming_the_tensor(tmp_path):
    path = tiny_checkpoint(tmp_path / "diverged.pt")
    state = torch.load(path, weights_only=True)
    key = "head.criterion.flow.s.0.0.weight"
    state["model"][key].fill_(float("nan"))
    torch.save(state, path)
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(JPEG.read_bytes())
    out = _posereg("predict", images, "--checkpoint", path, "--out", tmp_path / "out")
    _one_error_line(out, path, "non-finite weights", key)


@pytest.mark.parametrize("density", ["flow", "q_flow"])
def test_a_nan_flow_has_no_predictive_region_and_says_why(density):
    from posereg.losses import build_loss
    from posereg.uncertainty import region_from_criterion

    criterion = build_loss("rle", convention="paper", log_s=density == "q_flow")
    with torch.no_grad():
        for p in criterion.flow.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite weights"):
        region_from_criterion(criterion, num_samples=1000)


# --------------------------------------------------------------------------- posereg lift inputs
@pytest.fixture(scope="module")
def lift_checkpoint(tmp_path_factory) -> Path:
    """A real (untrained) lifting checkpoint, as `posereg train` of a `task: lift` config saves."""
    from posereg.config import LiftConfig, LiftModelConfig, to_dict
    from posereg.models.build import build_lift_model

    cfg = LiftConfig(model=LiftModelConfig(hidden=16))
    model = build_lift_model(cfg)
    state = {"task": "lift", "model": model.state_dict(), "config": to_dict(cfg), "epoch": 0}
    return save_checkpoint(state, tmp_path_factory.mktemp("lift") / "lift.pt")


def _write_poses(path: Path, kind: str) -> str:
    """Write a bad 2D-poses file of ``kind``; returns what the error must say."""
    if kind == "empty npz":
        np.savez(path)
        return "expected one array, or one named 'keypoints'; it holds: none"
    if kind == "zero-byte npy":
        path.write_bytes(b"")
        return "the file is empty (0 bytes)"
    if kind == "empty array":
        np.save(path, np.zeros((0, 17, 2)))
        return "no poses (array of shape (0, 17, 2))"
    if kind == "strings":
        np.save(path, np.full((1, 17, 2), "12.5"))
        return "holds strings, expected numbers"
    if kind == "several arrays":
        np.savez(path, poses=np.zeros((1, 17, 2)), scores=np.ones((1, 17)))
        return "expected one array, or one named 'keypoints'; it holds: poses, scores"
    raise AssertionError(kind)


LIFT_INPUTS = {
    "empty npz": "p.npz",
    "zero-byte npy": "p.npy",
    "empty array": "p.npy",
    "strings": "p.npy",
    "several arrays": "p.npz",
}


@pytest.mark.parametrize("kind", list(LIFT_INPUTS))
def test_read_poses_2d_names_the_file_for_inputs_it_cannot_use(tmp_path, kind):
    from posereg.data.badinput import BadInputError
    from posereg.lift import read_poses_2d

    path = tmp_path / LIFT_INPUTS[kind]
    said = _write_poses(path, kind)
    with pytest.raises(BadInputError) as e:
        read_poses_2d(path)
    assert str(e.value).startswith(f"{path}: ") and said in str(e.value)


@pytest.mark.parametrize("kind", ["zero-byte npy", "strings"])
def test_lift_cli_is_one_line_for_inputs_it_cannot_use(tmp_path, lift_checkpoint, kind):
    path = tmp_path / LIFT_INPUTS[kind]
    said = _write_poses(path, kind)
    out = _posereg("lift", path, "--checkpoint", lift_checkpoint, "--out", tmp_path / "out")
    _one_error_line(out, f"posereg lift: error: {path}", said)
    assert not (tmp_path / "out").exists()


def test_an_npz_uses_its_keypoints_array_or_its_only_one(tmp_path):
    from posereg.lift import read_poses_2d

    poses = np.arange(17 * 2, dtype=np.float64).reshape(1, 17, 2)
    np.savez(tmp_path / "named.npz", scores=np.ones((1, 17)), keypoints=poses)
    np.savez(tmp_path / "one.npz", whatever=poses)
    for name in ("named.npz", "one.npz"):
        got, ids = read_poses_2d(tmp_path / name)
        assert ids is None and np.array_equal(got, poses)


# --------------------------------------------------------------------------- demo
@pytest.mark.parametrize("steps", [0, -5])
def test_demo_refuses_a_run_that_trains_nothing(steps):
    from posereg.demo import run_demo

    with pytest.raises(ValueError, match=f"--steps must be a positive number .* got {steps}"):
        run_demo(steps=steps, verbose=False)


def test_demo_cli_with_zero_steps_is_one_line_and_no_conclusion():
    out = _posereg("demo", "--steps", "0")
    _one_error_line(out, "posereg demo: error: --steps must be a positive number")
    assert out.stdout == ""  # no table, no conclusion


# --------------------------------------------------------------------------- DataLoader workers
class _Failing(torch.utils.data.Dataset):
    """Raises ``error`` for every item (in whichever process loads it)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise self.error


@pytest.mark.parametrize("num_workers", [0, 1])
def test_an_error_raised_in_a_worker_keeps_its_one_line_message(num_workers):
    from posereg.cli import _message
    from posereg.data.badinput import BadInputError

    error = BadInputError("/data/a.jpg", "annotation id 1 (image id 1)", "truncated JPEG")
    loader = torch.utils.data.DataLoader(_Failing(error), num_workers=num_workers)
    with pytest.raises(BadInputError) as info:
        next(iter(loader))
    assert str(info.value) == "/data/a.jpg: annotation id 1 (image id 1): truncated JPEG"
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)
    loader = torch.utils.data.DataLoader(_Failing(ValueError("x.json: bad")), num_workers=1)
    with pytest.raises(ValueError) as info:
        next(iter(loader))
    assert _message(info.value) == "x.json: bad"  # any error type, as the CLI prints it


def test_a_corrupt_image_in_a_worker_is_the_same_one_line_as_without_workers(tmp_path):
    import shutil

    coco = tmp_path / "coco"
    shutil.copytree(COCO, coco)
    for image in coco.glob("*.jpg"):  # every image cut after its first 300 bytes
        image.write_bytes(image.read_bytes()[:300])
    lines = []
    for workers in (0, 1):
        cfg = _tiny_config(tmp_path, f"w{workers}", data={
            "train_ann": str(coco / "test_coco.json"), "train_images": str(coco),
            "val_ann": str(coco / "test_coco.json"), "val_images": str(coco), "workers": workers,
        })  # fmt: skip
        lines.append(_one_error_line(_posereg("train", cfg), "posereg train: error: ", coco))
    assert lines[0] == lines[1] and "JPEG" in lines[0]


# --------------------------------------------------------------------------- torchrun
def _torchrun(cfg: Path, port: int, *overrides: str) -> list[str]:
    """The ``posereg train`` error lines of a 2-process torchrun (torchrun adds its own report)."""
    out = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "posereg.cli", "train", str(cfg), "--set", *overrides],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode != 0
    return [line for line in out.stderr.splitlines() if line.startswith("posereg train")]


@pytest.mark.slow
def test_torchrun_prints_a_user_error_met_by_every_rank_once(tmp_path):
    bad, said = _bad_file(tmp_path, "empty")
    lines = _torchrun(_tiny_config(tmp_path), 29573, f"model.init_from={bad}")
    assert lines == [f"posereg train: error: {bad}: not a posereg checkpoint (a .pt file written by posereg train or convert): {said}"]  # fmt: skip


@pytest.mark.slow
def test_torchrun_tags_an_error_met_in_a_rank_s_own_shard_with_the_rank(tmp_path):
    import shutil

    coco = tmp_path / "coco"
    shutil.copytree(COCO, coco)
    for image in coco.glob("*.jpg"):
        image.write_bytes(image.read_bytes()[:300])
    cfg = _tiny_config(tmp_path, data={
        "train_ann": str(coco / "test_coco.json"), "train_images": str(coco),
        "val_ann": str(coco / "test_coco.json"), "val_images": str(coco),
    })  # fmt: skip
    lines = _torchrun(cfg, 29574, "data.workers=0")
    # each rank meets its own image; torchrun may stop one rank before it prints
    assert 1 <= len(lines) <= 2, lines
    ranks = set()
    for line in lines:
        assert line.startswith(
            ("posereg train (rank 0): error: ", "posereg train (rank 1): error: ")
        )
        assert str(coco) in line and "JPEG" in line
        ranks.add(line[len("posereg train (rank ") :][0])
    assert len(ranks) == len(lines)  # not the same rank twice


def test_the_rank_0_rule_for_user_error_lines(monkeypatch):
    from posereg.engine import distributed as D

    monkeypatch.setattr(D, "_shards_started", False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.user_error_line("train", "x.json: bad") == "posereg train: error: x.json: bad"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert D.user_error_line("train", "x.json: bad") == "posereg train: error: x.json: bad"
    monkeypatch.setenv("RANK", "1")  # not stopped by torchrun within the wait: says which rank
    assert D.user_error_line("train", "m", wait_s=0) == "posereg train (rank 1): error: m"
    D.mark_shards_started()
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        assert D.user_error_line("train", "m") == f"posereg train (rank {rank}): error: m"


def test_a_coco_results_json_with_string_keypoints_names_the_record(tmp_path):
    from posereg.data.badinput import BadInputError
    from posereg.lift import read_poses_2d

    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"keypoints": [1, 2, 1] * 17}, {"keypoints": ["12.5", 2, 1] * 17}]))
    with pytest.raises(BadInputError, match=r"r.json: record #1: 'keypoints' must be numbers"):
        read_poses_2d(path)


def test_a_safetensors_weights_file_that_is_not_one_says_what_it_is(tmp_path):
    pytest.importorskip("safetensors")
    from posereg.models.backbones import create_backbone

    for content, said in (
        (b"", "it is empty (0 bytes)"),
        (JPEG.read_bytes(), "it is a JPEG image"),
    ):
        path = tmp_path / "w.safetensors"
        path.write_bytes(content)
        with pytest.raises(TorchFileError) as e:
            create_backbone("resnet18", pretrained=str(path))
        assert str(e.value) == f"{path}: not a safetensors weights file: {said}"
