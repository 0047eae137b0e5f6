"""``posereg export``, ``convert`` and ``info`` as real subprocesses on real checkpoint files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posereg.predict import Predictor
from posereg.samples import SAMPLES_DIR
from test_convert import _official
from test_engine import _tiny_config

REPO = Path(__file__).resolve().parents[1]
COCO = SAMPLES_DIR / "coco"
BIN = Path(sys.executable).parent


def _posereg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "posereg"), *args], capture_output=True, text=True, timeout=600, cwd=REPO
    )


@pytest.mark.slow
def test_export_cli_writes_onnx_that_matches_pytorch(tmp_path):
    cfg = _tiny_config(tmp_path, "exp", train={"epochs": 1, "max_steps": 2})
    assert _posereg("train", str(cfg)).returncode == 0
    ck = tmp_path / "runs" / "exp" / "last.pt"
    out = _posereg("export", "--checkpoint", str(ck), "--out", str(tmp_path / "m.onnx"))
    assert out.returncode == 0, out.stderr[-2000:]
    err = float(out.stdout.split("max abs difference")[1])
    assert err < 1e-4
    import onnx

    model = onnx.load(str(tmp_path / "m.onnx"))
    # the decoded outputs, then the head's own (posereg.runtime runs the flip test from them)
    names = [o.name for o in model.graph.output]
    assert names == ["keypoints", "scores", "sigma", "head.mu", "head.sigma"]
    assert "posereg_export" in {p.key for p in model.metadata_props}  # a posereg export


def test_convert_cli_then_info_and_predict(tmp_path):
    official = _official(18, 17)
    src, dst = tmp_path / "final.pth", tmp_path / "official_r18.pt"
    torch.save(official.state_dict(), src)
    out = _posereg("convert", "--from", "official", str(src), str(dst))
    assert out.returncode == 0, out.stderr
    assert "RegressFlow -> resnet18, K=17, D=2" in out.stdout
    info = _posereg("info", str(dst))
    assert (
        info.returncode == 0
        and "converted from: official" in info.stdout
        and "resnet18" in info.stdout
    )

    # the converted file is a working posereg checkpoint: its predictions are the official model's
    predictor = Predictor.from_checkpoint(dst, device="cpu", flip_test=False)
    assert predictor.input_size == (256, 192)
    image = (np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)
    result = predictor(image, boxes=[[20, 30, 120, 240]])
    official.eval()
    from posereg.data.dataset import image_to_tensor
    from posereg.data.transforms import (
        box_to_center_scale,
        crop_to_image,
        get_affine_transform,
        warp_crop,
    )

    c, s = box_to_center_scale(np.array([[20, 30, 120, 240]], float), 192 / 256)
    crop = warp_crop(image, get_affine_transform(c[0], s[0], 0.0, (256, 192)), (256, 192))
    with torch.no_grad():
        mu, sigma = official(image_to_tensor(crop)[None])
    np.testing.assert_allclose(
        result.keypoints, crop_to_image(mu.double().numpy(), c, s), atol=1e-3
    )
    np.testing.assert_allclose(result.confidence, 1 - sigma.double().numpy().mean(-1), atol=1e-5)

    bad = _posereg("convert", "--from", "official", str(tmp_path / "missing.pth"), str(dst))
    assert bad.returncode == 2 and "not found" in bad.stderr
