"""The run report's validation grid: enlarged crops, the truth beside the prediction."""

from __future__ import annotations

import cv2
import numpy as np

from _real_data import real
from posereg.data.dataset import TopDownDataset
from posereg.data.transforms import affine_points, get_affine_transform
from posereg.engine import report
from posereg.engine.evaluate import Predictions
from posereg.uncertainty import PredictiveRegion
from posereg.viz import confidence_color

INPUT_SIZE = (64, 48)


def test_validation_grid_is_enlarged_with_truth_beside_prediction(tmp_path):
    ds = TopDownDataset.from_coco(
        real("coco", "test_coco.json"), real("coco"), input_size=INPUT_SIZE
    )
    h, w = INPUT_SIZE
    n = len(ds)
    truth = ds.table.keypoints  # (N, K, 3) image pixels; these fixtures have no clean truth
    crop_xy = np.stack(
        [
            affine_points(
                truth[i, :, :2], get_affine_transform(ds.centers[i], ds.scales[i], 0.0, INPUT_SIZE)
            )
            for i in range(n)
        ]
    )
    shift = np.array([6.0, 4.0])  # predictions: the truth moved by (6, 4) crop pixels
    normalized = (crop_xy + shift) / np.array([w, h]) - 0.5
    preds = Predictions(
        keypoints=np.zeros((n, 17, 2)),
        sigma=np.full((n, 17, 2), 0.02) * ds.scales[:, None, :],
        confidence=np.full((n, 17), 0.9),
        normalized=normalized,
    )
    region = PredictiveRegion("gaussian", (0.9,), (1.0,))  # ellipses of 1 x sigma
    out = report.draw_validation_grid(ds, preds, tmp_path / "val.png", num=6, region=region)
    grid = cv2.imread(str(out))
    f = report.grid_factor(INPUT_SIZE)
    ph, pw = h * f, w * f
    assert ph >= 256 and f == 4
    tile_w = 2 * pw + report.GRID_SEPARATOR
    assert grid.shape[0] == report.GRID_LEGEND_HEIGHT + 2 * (ph + report.GRID_PAD) + report.GRID_PAD
    assert grid.shape[1] == 4 * (tile_w + report.GRID_PAD) + report.GRID_PAD  # 6 tiles: 4 + 2
    assert (grid[: report.GRID_LEGEND_HEIGHT] > 200).any()  # the legend is written

    def panel(t: int, right: bool) -> np.ndarray:
        r, c = divmod(t, report.GRID_COLUMNS)
        y = report.GRID_LEGEND_HEIGHT + report.GRID_PAD + r * (ph + report.GRID_PAD)
        x = report.GRID_PAD + c * (tile_w + report.GRID_PAD) + (pw + report.GRID_SEPARATOR) * right
        return grid[y : y + ph, x : x + pw]

    pred_color = confidence_color(0.9)
    checked = 0
    for t, i in enumerate(np.linspace(0, n - 1, 6).round().astype(int)):
        left, right = panel(t, False), panel(t, True)
        for k in np.flatnonzero(truth[i, :, 2] > 0):
            tx, ty = ((crop_xy[i, k] + 0.5) * f - 0.5).round().astype(int)
            px, py = ((crop_xy[i, k] + shift + 0.5) * f - 0.5).round().astype(int)
            if not (0 <= tx < pw and 0 <= ty < ph and 0 <= px < pw and 0 <= py < ph):
                continue
            assert tuple(left[ty, tx]) == report.TRUTH_COLOR, (t, k)
            assert tuple(right[py, px]) == pred_color, (t, k)
            checked += 1
        # the truth is drawn on the left only, and its colour is not a confidence colour
        assert not (right == report.TRUTH_COLOR).all(-1).any()
    assert checked > 30
