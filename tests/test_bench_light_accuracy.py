"""benchmarks/bench_light_accuracy.py's summary, table and pixel error on hand-made results (no
training: the trainings are the benchmark's)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_light_accuracy as bla  # noqa: E402


def _row(ap: float, err_px: float, err_area: float) -> dict:
    return {"ap_clean": ap, "ap_labels": ap - 0.1, "err_px": err_px, "err_sqrt_area": err_area}


def _results(small_errs: tuple[float, float]) -> dict:
    return {
        bla.SMALLEST: {0: _row(0.5, small_errs[0], 0.2), 1: _row(0.7, small_errs[1], 0.1)},
        bla.REFERENCE: {0: _row(0.6, 2.0, 0.1), 1: _row(0.8, 4.0, 0.1)},
    }


def test_ratio_is_taken_seed_by_seed_then_averaged():
    summary = bla.summarize(_results((2.4, 4.0)))
    small = summary["arms"][bla.SMALLEST]
    # seed 0: 2.4 / 2.0 = 1.2, seed 1: 4.0 / 4.0 = 1.0 -> 1.1 (the ratio of means is 6.4/6 = 1.067)
    assert small["ratio_err_px"] == pytest.approx(1.1)
    assert small["err_px"] == pytest.approx(3.2)
    assert small["ap_clean"] == pytest.approx(0.6)
    assert small["ratio_err_sqrt_area"] == pytest.approx(1.5)
    assert summary["arms"][bla.REFERENCE]["ratio_err_px"] == pytest.approx(1.0)
    assert summary["goal"]["holds"] is True  # 1.1 <= 1.10


def test_goal_fails_just_above_ten_percent_and_the_table_says_so():
    summary = bla.summarize(_results((2.42, 4.0)))  # (1.21 + 1.0) / 2 = 1.105
    assert summary["goal"]["ratio"] == pytest.approx(1.105)
    assert summary["goal"]["holds"] is False
    table = bla.markdown_table(summary)
    lines = table.splitlines()
    row = next(line for line in lines if line.startswith(f"| {bla.SMALLEST} "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == ["2", "0.600", "0.500", "3.21", "0.1500", "1.10x"]
    assert "does not hold" in lines[-1] and "1.10x" in lines[-1]


def test_a_seed_without_reference_run_is_refused():
    results = _results((2.0, 4.0))
    del results[bla.REFERENCE][1]
    with pytest.raises(ValueError, match="seeds \\[1\\]"):
        bla.summarize(results)
    with pytest.raises(ValueError, match="no resnet18_w1.0 arm"):
        bla.summarize({bla.SMALLEST: results[bla.SMALLEST]})


def test_pixel_error_averages_visible_keypoints_only(tmp_path):
    keypoints = np.zeros((2, 3, 2))
    truth = np.array([[[3.0, 4.0], [0.0, 1.0], [100.0, 0.0]], [[0.0, 2.0], [6.0, 8.0], [0, 0]]])
    visible = np.array([[True, True, False], [True, True, False]])
    np.savez(tmp_path / "predictions.npz", keypoints=keypoints, truth_clean=truth, visible=visible)
    assert bla.pixel_error(tmp_path / "predictions.npz") == pytest.approx((5 + 1 + 2 + 10) / 4)
