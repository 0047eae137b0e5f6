"""The training engine through the real CLI: shipped configs, exact resume, DDP, NaN guard, checkpoints."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _real_data import tiny_config
from posereg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from posereg.engine.distributed import EpochBatchSampler
from posereg.samples import SAMPLES_DIR

REPO = Path(__file__).resolve().parents[1]
REAL = SAMPLES_DIR
BIN = Path(sys.executable).parent
COCO = REAL / "coco"
MPII = REAL / "mpii"


def _posereg(
    *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "posereg"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        cwd=REPO,
    )


_tiny_config = tiny_config


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# --------------------------------------------------------------------------- shipped configs
@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        (
            "configs/coco_r50_256x192_rle.yaml",
            [
                f"data.train_ann={COCO / 'test_coco.json'}",
                f"data.train_images={COCO}",
                f"data.val_ann={COCO / 'test_coco.json'}",
                f"data.val_images={COCO}",
                f"data.detections={COCO / 'test_coco_det_AP_H_56.json'}",
            ],
        ),
        (
            "configs/coco_r50_256x192_heatmap.yaml",
            [
                f"data.train_ann={COCO / 'test_coco.json'}",
                f"data.train_images={COCO}",
                f"data.val_ann={COCO / 'test_coco.json'}",
                f"data.val_images={COCO}",
                f"data.detections={COCO / 'test_coco_det_AP_H_56.json'}",
            ],
        ),
        (
            "configs/coco_r50_256x192_integral.yaml",
            [
                f"data.train_ann={COCO / 'test_coco.json'}",
                f"data.train_images={COCO}",
                f"data.val_ann={COCO / 'test_coco.json'}",
                f"data.val_images={COCO}",
                f"data.detections={COCO / 'test_coco_det_AP_H_56.json'}",
            ],
        ),
        (
            "configs/mpii_r50_256x256_rle.yaml",
            [
                f"data.train_ann={MPII / 'test_mpii.json'}",
                f"data.train_images={MPII}",
                f"data.val_ann={MPII / 'test_mpii.json'}",
                f"data.val_images={MPII}",
            ],
        ),
    ],
)
def test_paper_configs_construct_and_run_two_iterations(tmp_path, config, overrides):
    out = _posereg(
        "train", config, "--set", *overrides,
        "model.pretrained=false", "train.max_steps=2", "train.batch_size=2", "data.workers=0",
        "train.progress=false", f"out_dir={tmp_path}", "eval.batch_size=4",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / Path(config).stem
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 2
    assert state["config"]["model"]["backbone"] == "resnet50"
    metrics = json.loads((run / "metrics.json").read_text())["val"]
    assert metrics["num_instances"] > 0
    assert "AP" in metrics if "coco" in config else "PCKh_0.5" in metrics
    # best.pt is chosen by the primary metric (AP for COCO, PCKh_0.5 for MPII): written for both
    assert load_checkpoint(run / "best.pt")["step"] == 2


# --------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    sections = {"train": {"checkpoint_every": 2}}
    full = _posereg("train", str(_tiny_config(tmp_path, "full", **sections)))
    assert full.returncode == 0, full.stderr[-3000:]

    killed = _posereg(
        "train",
        str(_tiny_config(tmp_path, "killed", **sections)),
        env={"POSEREG_FAULT_KILL_AT_STEP": "5"},
    )
    assert killed.returncode == -signal.SIGKILL  # really killed mid-epoch (6 steps per epoch)
    run = tmp_path / "runs" / "killed"
    state = load_checkpoint(run / "last.pt")
    assert (state["epoch"], state["step"], state["step_in_epoch"]) == (0, 4, 4)
    assert not (run / "metrics.json").exists()
    assert (run / ".lock").exists()  # the killed process could not remove its lock: taken over
    (run / ".last.pt.x1y2.tmp").write_bytes(b"a write killed half way")

    resumed = _posereg("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()
    with (run / "train_log.csv").open() as f:  # step 5 was logged before the kill: once only
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 13))
    a, b = _model_tensors(tmp_path / "runs" / "full" / "last.pt"), _model_tensors(run / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical, flow included
    m_full = json.loads((tmp_path / "runs" / "full" / "metrics.json").read_text())
    m_res = json.loads((run / "metrics.json").read_text())
    assert m_full["val"] == m_res["val"] and m_full["steps"] == m_res["steps"] == 12


# --------------------------------------------------------------------------- distributed
@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # Frozen BatchNorm: a data-parallel rank normalises with its own half batch otherwise, which a
    # single process with the whole batch cannot reproduce (SyncBatchNorm needs CUDA).
    # SGD: Adam's first steps are ~lr * sign(grad), which turns float-rounding differences of
    # near-zero gradients into lr-sized ones and would hide a real mismatch in that noise.
    common = {
        "train": {"epochs": 1, "max_steps": 3},
        "model": {"freeze_bn": True},
        "optim": {"optimizer": "sgd", "lr": 0.002},
    }
    single = _tiny_config(tmp_path, "single", **common)
    cfg = yaml.safe_load(single.read_text())
    cfg["train"]["batch_size"] = 4
    single.write_text(yaml.safe_dump(cfg))
    out = _posereg("train", str(single))
    assert out.returncode == 0, out.stderr[-3000:]

    ddp_cfg = _tiny_config(tmp_path, "ddp", **common)  # 2 ranks x batch 2 = global batch 4
    out = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29517", "-m", "posereg.cli", "train", str(ddp_cfg)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    a = _model_tensors(tmp_path / "runs" / "single" / "last.pt")
    b = _model_tensors(tmp_path / "runs" / "ddp" / "last.pt")
    floats = [k for k in a if a[k].is_floating_point() and "running_" not in k]
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in floats)
    # float32 gradients summed in another order (all-reduce of two halves vs one batch)
    assert worst < 1e-6, worst
    # and the runs really trained: a third process with another seed ends elsewhere
    other = _tiny_config(tmp_path, "other", **common)
    assert (
        _posereg("train", str(other), "--set", "train.batch_size=4", "train.seed=1").returncode == 0
    )
    c = _model_tensors(tmp_path / "runs" / "other" / "last.pt")
    assert max(float((a[k] - c[k]).abs().max()) for k in floats) > 100 * worst + 1e-4


# --------------------------------------------------------------------------- NaN guard
def test_non_finite_losses_are_skipped_counted_and_stop_training(tmp_path, monkeypatch, caplog):
    from posereg.config import load_config
    from posereg.engine import train as train_mod

    real_build = train_mod.build_model
    calls = {"n": 0}

    def build_with_bad_steps(cfg):
        model = real_build(cfg)
        inner = model.criterion.forward

        def forward(*args):
            calls["n"] += 1
            loss = inner(*args)
            return loss * float("nan") if calls["n"] in bad_steps else loss

        model.criterion.forward = forward
        return model

    monkeypatch.setattr(train_mod, "build_model", build_with_bad_steps)
    bad_steps = {2}
    cfg = load_config(_tiny_config(tmp_path, "nan1"), ["train.epochs=1"])
    result = train_mod.train(cfg, device="cpu")
    assert result.bad_steps == 1 and result.steps == 5  # 6 batches, one skipped
    assert "non-finite loss at step 1" in caplog.text and "image ids" in caplog.text

    calls["n"] = 0
    bad_steps = set(range(1, 100))
    cfg = load_config(_tiny_config(tmp_path, "nan2"), ["train.max_bad_steps=3"])
    with pytest.raises(train_mod.NonFiniteLossError, match="3 consecutive non-finite losses"):
        train_mod.train(cfg, device="cpu")


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint survived
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_checkpoints_cannot_run_code_and_foreign_files_are_rejected(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "posereg-checkpoint-v1", "model": {}, "x": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(evil)
    official = tmp_path / "official.pth"
    torch.save({"fc_coord.linear.weight": torch.zeros(2)}, official)
    with pytest.raises(CheckpointError, match="posereg convert --from official"):
        load_checkpoint(official)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_checkpoint_of_another_model_fails_clearly_and_info_describes_it(tmp_path):
    cfg = _tiny_config(tmp_path, "r18", train={"max_steps": 1, "epochs": 1})
    assert _posereg("train", str(cfg)).returncode == 0
    ck = tmp_path / "runs" / "r18" / "last.pt"
    out = _posereg("eval", str(cfg), "--checkpoint", str(ck), "--set", "model.backbone=resnet34")
    assert out.returncode == 2
    assert "saved from another model/config" in out.stderr and "missing keys" in out.stderr
    out = _posereg("eval", str(cfg), "--checkpoint", str(ck), "--out", str(tmp_path / "preds.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "AP:" in out.stdout
    preds = json.loads((tmp_path / "preds.json").read_text())
    assert len(preds) == 12 and len(preds[0]["keypoints"]) == 51 and len(preds[0]["sigma"]) == 17
    info = _posereg("info", str(ck))
    assert (
        info.returncode == 0 and "run: r18" in info.stdout and "training-only flow" in info.stdout
    )


# --------------------------------------------------------------------------- sampler
def test_sharded_batches_equal_the_single_process_batches():
    one = list(EpochBatchSampler(37, 8, seed=3, epoch=2))
    two = [list(EpochBatchSampler(37, 4, seed=3, epoch=2, rank=r, world_size=2)) for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == 4
    for j, batch in enumerate(one):
        assert batch == two[0][j] + two[1][j]
    assert len({i for b in one for i in b}) == 32  # no repeats within an epoch
    assert one != list(EpochBatchSampler(37, 8, seed=3, epoch=3))  # a new order every epoch
    assert list(EpochBatchSampler(37, 8, seed=3, epoch=2, start_batch=2)) == one[2:]
    evaluation = list(EpochBatchSampler(10, 4, shuffle=False, drop_last=False))
    assert [i for b in evaluation for i in b] == list(range(10))


def test_augmentation_depends_only_on_seed_epoch_and_index():
    from posereg.data.dataset import TopDownDataset, TransformConfig

    ds = TopDownDataset.from_coco(
        COCO / "test_coco.json", COCO, input_size=(64, 48), transform=TransformConfig(augment=True)
    )
    ds.set_epoch(0, 1)
    first = [ds[i].image for i in (3, 1, 2)]
    ds.set_epoch(0, 0)
    _ = [ds[i] for i in range(len(ds))]  # other items in between change nothing
    ds.set_epoch(0, 1)
    again = [ds[i].image for i in (3, 1, 2)]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    ds.set_epoch(0, 2)
    assert not torch.equal(ds[3].image, first[0])


@pytest.mark.slow
def test_predict_and_report_on_the_real_photos(tmp_path):
    cfg = _tiny_config(tmp_path, "p", train={"max_steps": 2, "epochs": 1})
    assert _posereg("train", str(cfg)).returncode == 0
    run = tmp_path / "runs" / "p"
    for name in (
        "metrics.json",
        "curves.png",
        "val_predictions.png",
        "train_log.csv",
        "config.yaml",
    ):
        assert (run / name).stat().st_size > 0, name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    out_dir = tmp_path / "pred"
    dets = COCO / "test_coco_det_AP_H_56.json"
    out = _posereg("predict", str(COCO), "--checkpoint", str(run / "best.pt"), "--boxes", str(dets),
                   "--score-threshold", "0.5", "--out", str(out_dir))  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    preds = json.loads((out_dir / "predictions.json").read_text())
    expected = sum(1 for d in json.loads(dets.read_text()) if d["score"] >= 0.5)
    assert len(preds) == expected > 0
    import cv2

    for p in preds:
        x, y, w, h = p["bbox"]
        kp = np.array(p["keypoints"]).reshape(17, 3)
        # keypoints lie in the padded crop around their box
        assert (kp[:, 0] > x - w).all() and (kp[:, 0] < x + 2 * w).all()
        assert (kp[:, 1] > y - h).all() and (kp[:, 1] < y + 2 * h).all()
    overlays = sorted(out_dir.glob("*_pose.png"))
    assert len(overlays) == len({p["file_name"] for p in preds})
    assert cv2.imread(str(overlays[0])) is not None
    shutil.rmtree(out_dir)


# --------------------------------------------------------------------------- options
@pytest.mark.slow
def test_bf16_autocast_channels_last_and_init_from_an_earlier_run(tmp_path):
    first = _tiny_config(
        tmp_path, "first", train={"epochs": 1, "max_steps": 2, "amp": "bf16", "channels_last": True}
    )
    out = _posereg("train", str(first))
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads((tmp_path / "runs" / "first" / "metrics.json").read_text())
    assert np.isfinite(metrics["val"]["error"]) and metrics["bad_steps"] == 0

    # the paper's heatmap-pretrained variant: a backbone initialised from another run. With
    # lr 0 and frozen BatchNorm nothing moves, so the new run's backbone is the old one's.
    ck = tmp_path / "runs" / "first" / "last.pt"
    second = _tiny_config(
        tmp_path, "second",
        train={"epochs": 1, "max_steps": 1}, optim={"lr": 0.0}, model={"init_from": str(ck), "freeze_bn": True},
    )  # fmt: skip
    out = _posereg("train", str(second))
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = _model_tensors(ck), _model_tensors(tmp_path / "runs" / "second" / "last.pt")
    backbone = [k for k in a if k.startswith("backbone.")]
    assert backbone and all(torch.equal(a[k], b[k]) for k in backbone)
    assert not torch.equal(a["head.fc_coord.linear.weight"], b["head.fc_coord.linear.weight"])
