"""Every head through the engine: the shipped synth_* configs build a model whose head's codec is
the dataset's, and each trains, evaluates, predicts and exports through the real CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posereg.checkpoint import load_checkpoint
from posereg.config import load_config, read_task, to_dict
from posereg.data.dataset import collate
from posereg.engine.builders import build_datasets
from posereg.engine.evaluate import primary_metric, primary_score
from posereg.models.build import build_model
from posereg.samples import SAMPLES_DIR

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COCO = SAMPLES_DIR / "coco"
#: one top-down synthetic config per head; synth_light varies the backbone instead
#: (test_light_backbones) and synth_rle_paper the loss's convention; the multi-person families'
#: synth configs (task: keypoint_rcnn, dense) are theirs (test_multiperson_family)
SYNTH_CONFIGS = sorted(
    p
    for p in (REPO / "configs").glob("synth_*.yaml")
    if p.stem not in ("synth_light", "synth_rle_paper") and read_task(p) is None
)
ON_THE_FIXTURES = [
    f"data.train_ann={COCO / 'test_coco.json'}",
    f"data.train_images={COCO}",
    f"data.val_ann={COCO / 'test_coco.json'}",
    f"data.val_images={COCO}",
    "data.synth=null",
    "data.workers=0",
]


def _posereg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "posereg"), *args], capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def test_there_is_a_synth_config_per_head():
    from posereg.models import HEADS

    heads = {load_config(p).model.head for p in SYNTH_CONFIGS}
    assert heads == set(HEADS)


@pytest.mark.parametrize("path", SYNTH_CONFIGS, ids=lambda p: p.stem)
def test_synth_config_builds_a_model_whose_head_encodes_the_dataset(path):
    """Same data and budget as synth_rle (only the head, its loss and, for map heads, the input
    width differ); the dataset's targets are the head's: its loss takes them."""
    cfg = load_config(path, ON_THE_FIXTURES)
    assert cfg.name == path.stem
    reference = to_dict(load_config(REPO / "configs" / "synth_rle.yaml", ON_THE_FIXTURES))
    mine = to_dict(cfg)
    for section in ("optim", "train", "eval"):
        assert mine[section] == reference[section], section
    assert {**mine["data"], "input_size": None} == {**reference["data"], "input_size": None}
    assert mine["model"]["backbone"] == reference["model"]["backbone"] == "resnet18"
    assert mine["model"]["width"] == reference["model"]["width"]
    original = load_config(path)  # the shipped file makes its data as synth_rle does
    assert (
        to_dict(original)["data"]["synth"]
        == to_dict(load_config(REPO / "configs" / "synth_rle.yaml"))["data"]["synth"]
    )

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    train, val = build_datasets(cfg)
    assert train is not None
    assert type(train.codec) is type(val.codec) is type(model.head.codec)
    assert train.codec.input_size == model.head.codec.input_size == tuple(cfg.data.input_size)
    if hasattr(model.head.codec, "heatmap_size"):
        assert train.codec.heatmap_size == model.head.codec.heatmap_size
    batch = collate([train[i] for i in range(2)])
    loss = model.loss(model(batch.image), batch.target, batch.target_weight)
    assert loss.shape == () and torch.isfinite(loss)


def test_primary_metric_defaults_by_dataset_and_rejects_unknown_names():
    from posereg.config import ConfigError

    coco = load_config(REPO / "configs" / "synth_rle.yaml")
    mpii = load_config(REPO / "configs" / "mpii_r50_256x256_rle.yaml")
    assert primary_metric(coco) == "AP" and primary_metric(mpii) == "PCKh_0.5"
    assert primary_score({"AP": 0.25, "PCKh_0.5": 0.5}, coco) == 0.25
    assert primary_score({"AP": 0.25, "PCKh_0.5": 0.5}, mpii) == 0.5
    assert primary_score({"AP": float("nan")}, coco) == -np.inf  # no best.pt for a NaN
    err = load_config(REPO / "configs" / "synth_rle.yaml", ["eval.primary_metric=error"])
    assert primary_score({"error": 0.2}, err) > primary_score({"error": 0.3}, err)  # lower wins
    bad = load_config(REPO / "configs" / "synth_rle.yaml", ["eval.primary_metric=APx"])
    with pytest.raises(ConfigError, match="eval.primary_metric: 'APx' is not a metric; valid: AP,"):
        primary_metric(bad)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.mark.slow
@pytest.mark.parametrize("path", SYNTH_CONFIGS, ids=lambda p: p.stem)
def test_synth_config_trains_predicts_and_exports_through_the_cli(tmp_path, synth_root, path):
    """Two steps on a tiny generated set (made by the first config, reused by the others), then
    posereg predict and posereg export on its best.pt."""
    root = synth_root
    out = _posereg(
        "train", str(path), "--set",
        f"data.synth.root={root}", "data.synth.num_train=8", "data.synth.num_val=4",
        "data.synth.workers=0",
        f"data.train_ann={root / 'annotations' / 'person_keypoints_train.json'}",
        f"data.train_images={root / 'images' / 'train'}",
        f"data.val_ann={root / 'annotations' / 'person_keypoints_val.json'}",
        f"data.val_images={root / 'images' / 'val'}",
        "data.workers=0", "train.max_steps=2", "train.batch_size=4", "train.threads=1",
        "train.progress=false", "train.log_every=1", "eval.batch_size=4", f"out_dir={tmp_path}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / path.stem
    best = load_checkpoint(run / "best.pt")
    cfg = load_config(path)
    assert best["step"] == 2 and best["config"]["model"]["head"] == cfg.model.head
    metrics = json.loads((run / "metrics.json").read_text())["val"]
    assert metrics["num_instances"] > 0 and np.isfinite(metrics["AP"])
    with (run / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    has_sigma = cfg.model.head in ("regression", "integral_rle")
    assert len(rows) == 2 and all((r["mean_sigma"] != "") == has_sigma for r in rows)
    assert ("sigma_calibration" in metrics) == has_sigma

    pred_dir = tmp_path / "pred"
    out = _posereg("predict", str(root / "images" / "val"), "--checkpoint", str(run / "best.pt"),
                   "--out", str(pred_dir), "--no-draw")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    preds = json.loads((pred_dir / "predictions.json").read_text())
    assert len(preds) == 4 and all(len(p["keypoints"]) == 51 for p in preds)
    assert all(("sigma" in p) == has_sigma for p in preds)

    out = _posereg(
        "export", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx")
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "m.onnx").stat().st_size > 0


@pytest.mark.parametrize("name", ["heatmap", "integral", "integral_rle"])
def test_any_head_initialises_its_backbone_from_a_regression_run(tmp_path, name):
    """model.init_from (the paper's heatmap-pretrained variant, and the reverse): only the
    backbone is taken, whatever the heads of the two runs."""
    from posereg.checkpoint import save_checkpoint
    from posereg.models import create_pose_model, init_from_checkpoint

    torch.manual_seed(0)
    source = create_pose_model("resnet18", width=0.125, input_size=(64, 64))
    path = save_checkpoint({"model": source.state_dict()}, tmp_path / "source.pt")
    torch.manual_seed(1)
    target = create_pose_model(
        "resnet18", width=0.125, head=name, head_options={"deconv_channels": 8}, input_size=(64, 64)
    )
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    assert init_from_checkpoint(target.backbone, path) == len(source.backbone.state_dict())
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[k], v), k
    assert all(torch.equal(target.head.state_dict()[k], v) for k, v in head_before.items())
