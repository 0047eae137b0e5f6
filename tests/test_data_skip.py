"""``data.on_bad_image=skip``: unreadable images are counted, reported and left out of the loss
and of every metric (issue 8, finding 3). Real COCO photos, one of them cut short on disk."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _real_data import real
from posereg.config import Config, DataConfig, EvalConfig
from posereg.data.dataset import TopDownDataset, collate
from posereg.engine.evaluate import coco_results, evaluate_predictions, predict_dataset
from posereg.models import create_pose_model

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
BAD_ID = 40083  # two labelled people (and one unlabelled, which the loader drops)
BAD_FILE = f"{BAD_ID:012d}.jpg"


@pytest.fixture(scope="module")
def coco_with_a_bad_photo(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(json with all four photos, json without the bad one, image folder); the bad one is cut."""
    src = real("coco", "test_coco.json")
    root = tmp_path_factory.mktemp("coco_bad")
    gt = json.loads(src.read_text())
    for image in gt["images"]:
        shutil.copy(src.parent / image["file_name"], root / image["file_name"])
    data = (root / BAD_FILE).read_bytes()
    (root / BAD_FILE).write_bytes(data[: len(data) * 2 // 5])  # a download cut short
    full = root / "all.json"
    full.write_text(json.dumps(gt))
    clean = dict(gt)
    clean["images"] = [i for i in gt["images"] if i["id"] != BAD_ID]
    clean["annotations"] = [a for a in gt["annotations"] if a["image_id"] != BAD_ID]
    without = root / "without_bad.json"
    without.write_text(json.dumps(clean))
    return full, without, root


def _dataset(ann: Path, root: Path) -> TopDownDataset:
    return TopDownDataset.from_coco(ann, root, input_size=(64, 48), on_bad_image="skip")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_pose_model(backbone="resnet18", num_keypoints=17, width=0.25, loss="rle")
    return model.eval()  # BatchNorm in eval mode: samples do not influence each other


def _cfg(ann: Path, root: Path) -> Config:
    data = DataConfig(
        val_ann=str(ann), val_images=str(root), input_size=(64, 48), on_bad_image="skip"
    )
    return Config(data=data, eval=EvalConfig(batch_size=4, flip_test=False))


def test_unreadable_items_carry_no_loss_and_no_gradient(coco_with_a_bad_photo):
    full, _, root = coco_with_a_bad_photo
    ds = _dataset(full, root)
    batch = collate([ds[i] for i in range(len(ds))])
    bad = ~batch.valid
    assert bad.sum() == 2 and set(batch.bad_files) == {str(root / BAD_FILE)}
    assert set(batch.image_id[bad]) == {BAD_ID}

    model = _model()
    out = model(batch.image)
    mu, sigma = out.mu.detach().requires_grad_(), out.sigma.detach().requires_grad_()
    loss = model.criterion(mu, sigma, batch.target, batch.target_weight)
    loss.backward()
    assert float(mu.grad[bad].abs().sum()) == 0.0 and float(sigma.grad[bad].abs().sum()) == 0.0
    assert float(mu.grad[~bad].abs().sum()) > 0  # the others do train
    # the loss is the sum over the readable items divided by the batch: the black crops add 0
    keep = torch.from_numpy(~bad)
    valid_loss = model.criterion(
        mu[keep], sigma[keep], batch.target[keep], batch.target_weight[keep]
    )
    n, n_valid = len(batch), int(keep.sum())
    assert float(loss.detach()) * n == pytest.approx(float(valid_loss.detach()) * n_valid, rel=1e-5)


def test_evaluation_leaves_unreadable_images_out_of_every_metric(coco_with_a_bad_photo):
    full, without, root = coco_with_a_bad_photo
    model = _model()
    ds, ds_clean = _dataset(full, root), _dataset(without, root)
    cfg, cfg_clean = _cfg(full, root), _cfg(without, root)
    dev = torch.device("cpu")
    preds = predict_dataset(model, ds, dev, batch_size=4, flip_test=False)
    preds_clean = predict_dataset(model, ds_clean, dev, batch_size=4, flip_test=False)
    assert preds.valid is not None and int((~preds.valid).sum()) == 2
    assert preds.bad_files == [str(root / BAD_FILE)] * 2

    # no prediction is submitted for the unreadable image's people
    entries = coco_results(preds, ds, cfg)
    assert BAD_ID not in {e["image_id"] for e in entries}
    assert len(entries) == len(ds) - 2 == len(coco_results(preds_clean, ds_clean, cfg_clean))

    # the model's numbers equal those on a file that never had the image
    result = evaluate_predictions(preds, ds, cfg)
    clean = evaluate_predictions(preds_clean, ds_clean, cfg_clean)
    summary, summary_clean = result.summary(), clean.summary()
    assert summary.pop("num_unreadable") == 2 and "num_unreadable" not in summary_clean
    assert result.unreadable_files == [str(root / BAD_FILE)]
    assert summary.pop("truth") == summary_clean.pop("truth") == "labels"
    assert summary == pytest.approx(summary_clean, rel=1e-6)  # float32: other batch mates
    assert np.isfinite(result.error) and result.error > 0

    # perfect predictions score AP 1: the unreadable image's people are not counted as missed
    truth = ds.table.keypoints[..., :2]
    oracle = dataclasses.replace(preds, keypoints=truth.copy(), confidence=np.ones(truth.shape[:2]))
    perfect = evaluate_predictions(oracle, ds, cfg)
    assert perfect.coco["labels"].ap == pytest.approx(1.0)
    assert perfect.error == 0.0 and perfect.num_instances == len(ds) - 2


def _posereg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "posereg"), *args], capture_output=True, text=True, timeout=600, cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.slow
def test_training_and_eval_report_the_unreadable_images(coco_with_a_bad_photo, tmp_path):
    full, _, root = coco_with_a_bad_photo
    cfg = {
        "name": "skip",
        "out_dir": str(tmp_path / "runs"),
        "data": {
            "train_ann": str(full), "train_images": str(root),
            "val_ann": str(full), "val_images": str(root),
            "input_size": [64, 48], "workers": 0, "on_bad_image": "skip",
        },
        "model": {"backbone": "resnet18", "width": 0.25, "pretrained": False},
        "train": {"epochs": 2, "batch_size": 4, "progress": False, "threads": 1},
        "eval": {"batch_size": 8, "num_vis": 2},
    }  # fmt: skip
    config = tmp_path / "skip.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = _posereg("train", str(config), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    # 12 instances, batches of 4: every epoch sees all of them, the bad photo's two included
    line = f"1 unreadable images skipped this epoch (2 instances, left out of the loss): {root / BAD_FILE}"
    assert out.stderr.count(line) == 2, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "skip" / "metrics.json").read_text())
    assert metrics["skipped_unreadable"] == 4  # 2 instances x 2 epochs
    assert metrics["val"]["num_unreadable"] == 2 and metrics["val"]["num_instances"] == 10

    preds_json = tmp_path / "preds.json"
    ckpt = tmp_path / "runs" / "skip" / "last.pt"
    out = _posereg("eval", str(config), "--checkpoint", str(ckpt), "--out", str(preds_json), cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "num_unreadable: 2" in out.stdout and "num_instances: 10" in out.stdout
    entries = json.loads(preds_json.read_text())
    assert len(entries) == 10 and BAD_ID not in {e["image_id"] for e in entries}
