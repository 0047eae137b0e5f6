"""Codecs: encode -> decode round trips, the official conventions, decode edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posereg.codecs import (
    CODECS,
    HeatmapCodec,
    IntegralCodec,
    RegressionCodec,
    create_codec,
    soft_argmax,
)
from posereg.data.transforms import denormalize_coords

INPUT = (256, 192)


def random_keypoints(seed: int, n: int = 17, margin: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([margin, margin], [191 - margin, 255 - margin], (n, 2))


@pytest.mark.parametrize("seed", range(5))
def test_regression_round_trip(seed):
    codec = RegressionCodec(INPUT)
    xy = random_keypoints(seed)
    enc = codec.encode(xy, np.full(17, 2))
    assert enc.target.dtype == np.float32 and np.all(np.abs(enc.target) <= 0.5)
    dec = codec.decode(torch.from_numpy(enc.target)[None].double())
    err = np.abs(denormalize_coords(dec.keypoints[0].numpy(), INPUT) - xy)
    assert err.max() < 1e-4  # float32 targets: ~1e-5 px
    assert np.abs(dec.keypoints[0].numpy() - (xy / [192, 256] - 0.5)).max() < 1e-7
    torch.testing.assert_close(dec.scores, torch.ones(1, 17, dtype=torch.float64))


def test_regression_weights_follow_visibility_and_crop():
    xy = np.array([[10.0, 10.0], [10.0, 10.0], [-3.0, 50.0], [100.0, 300.0], [192.0, 256.0]])
    enc = RegressionCodec(INPUT).encode(xy, np.array([2, 0, 2, 1, 1]))
    np.testing.assert_array_equal(enc.target_weight, [[1, 1], [0, 0], [0, 0], [0, 0], [1, 1]])


def test_regression_confidence_is_one_minus_mean_sigma():
    sigma = torch.tensor([[[0.1, 0.3], [0.5, 0.5]]])
    dec = RegressionCodec(INPUT).decode(torch.zeros(1, 2, 2), sigma)
    torch.testing.assert_close(dec.scores, torch.tensor([[0.8, 0.5]]))


@pytest.mark.parametrize("seed", range(5))
def test_heatmap_official_round_trip_within_half_a_heatmap_pixel(seed):
    codec = HeatmapCodec(INPUT)
    xy = random_keypoints(seed, margin=8)
    enc = codec.encode(xy, np.full(17, 2))
    assert enc.target.shape == (17, 64, 48) and enc.target_weight.shape == (17,)
    dec = codec.decode(torch.from_numpy(enc.target)[None])
    decoded_hm = (dec.keypoints[0].double().numpy() + 0.5) * [48, 64]
    err = np.abs(decoded_hm - xy / 4.0)
    assert err.max() <= 0.5 + 1e-6  # the official rounding of the Gaussian centre
    np.testing.assert_allclose(decoded_hm, np.floor(xy / 4.0 + 0.5), atol=1e-5)
    torch.testing.assert_close(dec.scores, torch.ones(1, 17))


@pytest.mark.parametrize("seed", range(5))
def test_heatmap_unbiased_taylor_round_trip_within_half_an_input_pixel(seed):
    codec = HeatmapCodec(INPUT, unbiased=True, refine="taylor")
    xy = random_keypoints(seed, margin=8)
    dec = codec.decode(torch.from_numpy(codec.encode(xy, np.full(17, 2)).target)[None])
    err = np.abs(denormalize_coords(dec.keypoints[0].double().numpy(), INPUT) - xy)
    assert err.max() < 0.5 and err.mean() < 0.01


def test_heatmap_target_is_the_official_gaussian():
    codec = HeatmapCodec(INPUT)
    enc = codec.encode(np.array([[81.0, 121.0], [500.0, 10.0], [20.0, 20.0]]), np.array([2, 2, 0]))
    hm = enc.target[0]
    assert hm[30, 20] == 1.0  # centre int(121/4 + .5) = 30, int(81/4 + .5) = 20
    assert hm[30, 22] == pytest.approx(np.exp(-4 / 8))  # sigma 2
    assert hm[30, 26] == pytest.approx(np.exp(-36 / 8)) and hm[30, 27] == 0.0  # 3-sigma window
    np.testing.assert_array_equal(enc.target_weight, [1, 0, 0])  # outside / unlabelled
    assert enc.target[1:].max() == 0.0


def test_heatmap_quarter_shift_goes_toward_the_higher_neighbour():
    hm = torch.zeros(1, 2, 64, 48)
    hm[0, 0, 20, 10], hm[0, 0, 20, 11], hm[0, 0, 21, 10] = 1.0, 0.6, 0.2
    hm[0, 1, 0, 0] = 0.5  # at the border: no shift (official condition)
    dec = HeatmapCodec(INPUT).decode(hm)
    xy = (dec.keypoints[0].double() + 0.5) * torch.tensor([48.0, 64.0], dtype=torch.float64)
    torch.testing.assert_close(xy[0], torch.tensor([10.25, 20.25], dtype=torch.float64))
    torch.testing.assert_close(xy[1], torch.tensor([0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(dec.scores, torch.tensor([[1.0, 0.5]]))


@pytest.mark.parametrize("seed", range(3))
def test_integral_soft_argmax_round_trip(seed):
    codec = IntegralCodec(INPUT)
    xy = random_keypoints(seed, margin=40)  # the Gaussian must not be cut by the border
    hm = (xy / 4.0)[:, None, None, :]
    ys, xs = np.mgrid[0:64, 0:48]
    logits = -((xs - hm[..., 0]) ** 2 + (ys - hm[..., 1]) ** 2) / (2 * 1.5**2)  # log of a Gaussian
    dec = codec.decode(torch.from_numpy(logits)[None])
    err = np.abs(denormalize_coords(dec.keypoints[0].numpy(), INPUT) - xy)
    assert err.max() < 1e-5
    enc = codec.encode(xy, np.full(17, 2))
    np.testing.assert_allclose(enc.target, xy / [192, 256] - 0.5, atol=1e-7)


def test_soft_argmax_is_differentiable_and_stable_for_large_logits():
    logits = torch.full((1, 1, 8, 6), -1e4, requires_grad=True)
    with torch.no_grad():
        logits[0, 0, 2, 3] = 1e4
    kp, score = soft_argmax(logits)
    assert torch.isfinite(kp).all() and float(score.detach()) == pytest.approx(1.0)
    torch.testing.assert_close(kp[0, 0], torch.tensor([3 / 6 - 0.5, 2 / 8 - 0.5]))
    kp.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_create_codec_by_name():
    assert isinstance(create_codec("heatmap", input_size=(128, 96)), HeatmapCodec)
    assert create_codec("heatmap", input_size=(128, 96)).heatmap_size == (32, 24)
    with pytest.raises(
        ValueError, match="unknown codec 'argmax'; valid: regression, heatmap, integral"
    ):
        create_codec("argmax")
    assert set(CODECS) == {"regression", "heatmap", "integral"}
