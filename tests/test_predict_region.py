"""The calibrated predictive region in Predictor results, `posereg predict` json and drawings."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from _real_data import real, tiny_checkpoint
from posereg.models import create_pose_model
from posereg.predict import Predictor
from posereg.skeletons import get_skeleton
from posereg.uncertainty import PredictiveRegion, region_from_criterion
from posereg.viz import draw_pose

POSEREG = str(Path(sys.executable).parent / "posereg")
INPUT_SIZE = (64, 48)
PHOTO = ("coco", "000000000785.jpg")
BOX = [[280.0, 40.0, 240.0, 380.0]]


def _predictor(loss: str | None = None, head: str = "regression", **kw) -> Predictor:
    torch.manual_seed(0)
    options = {} if head == "regression" else {"deconv_channels": 16}
    size = INPUT_SIZE if head == "regression" else (64, 64)
    model = create_pose_model(
        "resnet18", 17, loss=loss, width=0.25, head=head, head_options=options, input_size=size
    )
    return Predictor(model.eval(), get_skeleton("coco17"), size, flip_test=False, **kw)


def test_rle_predictor_results_carry_the_flow_region():
    predictor = _predictor()  # RLE, official convention
    assert predictor.region is not None and predictor.region.family == "flow"
    expected = region_from_criterion(predictor.model.criterion, (0.9,), num_samples=100_000)
    # computed once on load from the model's own flow (fewer draws: the same within 1%)
    assert predictor.region.radius(0.9) == pytest.approx(expected.radius(0.9), rel=0.01)
    result = predictor(real(*PHOTO), BOX)
    assert result.region_p == 0.9
    np.testing.assert_allclose(result.region, predictor.region.radius(0.9) * result.sigma)
    # another level: another ellipse of the same sigma
    wide = _predictor(region_level=0.95)(real(*PHOTO), BOX)
    assert wide.region_p == 0.95
    np.testing.assert_allclose(wide.sigma, result.sigma)
    assert (wide.region > result.region).all()


def test_gaussian_nll_predictor_uses_the_chi_radius():
    predictor = _predictor("gaussian_nll")
    result = predictor(real(*PHOTO), BOX)
    r = math.sqrt(-2 * math.log(1 - 0.9))
    np.testing.assert_allclose(result.region, r * result.sigma, rtol=1e-9)


@pytest.mark.parametrize(("loss", "head"), [("l1", "regression"), (None, "heatmap")])
def test_no_density_no_region(loss, head):
    predictor = _predictor(loss, head)
    assert predictor.region is None
    result = predictor(real(*PHOTO), BOX)
    assert result.region is None and result.region_p is None
    assert predictor(real(*PHOTO), np.zeros((0, 4))).region is None


@pytest.mark.slow
def test_predict_cli_json_carries_the_region(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    out = subprocess.run(
        [POSEREG, "predict", str(real(*PHOTO)), "--checkpoint", str(checkpoint),
         "--out", str(tmp_path / "out"), "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    [entry] = json.loads((tmp_path / "out" / "predictions.json").read_text())
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    expected = predictor(real(*PHOTO))
    assert entry["region_p"] == 0.9
    assert len(entry["region"]) == 17 and len(entry["region"][0]) == 2
    np.testing.assert_allclose(entry["region"], expected.region[0], atol=2e-3)
    np.testing.assert_allclose(
        entry["region"], predictor.region.radius(0.9) * np.asarray(entry["sigma"]), rtol=0.01
    )
    assert cv2.imread(str(tmp_path / "out" / "000000000785_pose.png")) is not None


def _drawn_extent(photo: np.ndarray, axes: np.ndarray, center=(320.0, 200.0)) -> np.ndarray:
    """Half-width and half-height (px) of what draw_pose changed around one keypoint."""
    keypoints = np.full((17, 2), np.nan)
    keypoints[0] = center  # one keypoint: no limbs
    ellipse_axes = np.full((17, 2), np.nan)
    ellipse_axes[0] = axes
    drawn = draw_pose(photo, keypoints, get_skeleton("coco17"), np.full(17, 0.5), ellipse_axes)
    ys, xs = np.nonzero((drawn != photo).any(-1))
    return np.array([np.abs(xs - center[0]).max(), np.abs(ys - center[1]).max()])


def test_drawn_ellipse_follows_the_level_and_sigma():
    photo = cv2.imread(str(real(*PHOTO)))
    assert photo is not None and photo.shape[:2] == (425, 640)
    sigma = np.array([12.0, 20.0])  # px
    region = region_from_criterion(_predictor("gaussian_nll").model.criterion, (0.5, 0.9, 0.95))
    assert isinstance(region, PredictiveRegion)
    extents = {}
    for p in (0.5, 0.95):
        for scale in (1.0, 2.0):
            axes = region.semi_axes(scale * sigma, p)
            extent = _drawn_extent(photo, axes)
            assert extent == pytest.approx(axes, abs=2.0), (p, scale)  # anti-aliasing: <= 2 px
            extents[p, scale] = extent
    assert (extents[0.95, 1.0] > extents[0.5, 1.0] + 10).all()  # r: 1.18 -> 2.45 sigma
    assert (extents[0.5, 2.0] > extents[0.5, 1.0] + 10).all()
