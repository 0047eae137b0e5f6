"""Transforms: affine crop and its exact inverse, flips, reduced decoding alignment."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from _real_data import real
from posereg.data import TopDownDataset, TransformConfig, collate
from posereg.data.image_io import decode_bgr, read_bytes
from posereg.data.transforms import (
    affine_points,
    box_to_center_scale,
    compose,
    crop_to_image,
    flip_keypoints,
    get_affine_transform,
    normalize_coords,
    reduction_matrix,
    warp_crop,
)
from posereg.models.heads import (
    RegressionHead,
    RegressionOutput,
    average_outputs,
    flip_back_coordinates,
)
from posereg.skeletons import COCO17, MPII16

INPUT = (256, 192)


def official_three_point_matrix(center, scale_w, rotation, output_size):
    """The official RLE construction (written here from its description) for comparison."""
    out_h, out_w = output_size
    t = np.deg2rad(rotation)
    rotate = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    src_dir = rotate @ np.array([0.0, -0.5 * scale_w])
    src = np.array([center, center + src_dir, [0, 0]], np.float32)
    dst = np.array(
        [[out_w / 2, out_h / 2], [out_w / 2, out_h / 2 - 0.5 * out_w], [0, 0]], np.float32
    )
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(src, dst)


def test_box_to_center_scale_fixes_aspect_then_pads():
    center, scale = box_to_center_scale(np.array([[10, 20, 30, 80], [0, 0, 90, 40]]), 0.75, 1.25)
    np.testing.assert_allclose(center, [[25, 60], [45, 20]])
    np.testing.assert_allclose(scale, [[75, 100], [112.5, 150]])
    np.testing.assert_allclose(scale[:, 0] / scale[:, 1], 0.75)


@pytest.mark.parametrize("rotation", [0.0, 17.0, -45.0, 90.0])
def test_affine_matches_official_construction_and_inverts(rotation):
    center, scale = np.array([312.5, 201.0]), np.array([150.0, 200.0])
    m = get_affine_transform(center, scale, rotation, INPUT)
    ref = official_three_point_matrix(center, scale[0], rotation, INPUT)
    np.testing.assert_allclose(m, ref, atol=2e-3)  # ref is float32
    inv = get_affine_transform(center, scale, rotation, INPUT, inverse=True)
    np.testing.assert_allclose(compose(inv, m), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    # the centre lands in the middle of the crop
    np.testing.assert_allclose(affine_points(center, m), [96.0, 128.0], atol=1e-9)


def test_crop_inverse_round_trip_on_real_labels():
    """Label -> crop -> normalized target -> crop_to_image == label, with augmentation."""
    ds = TopDownDataset.from_coco(
        real("coco", "test_coco.json"),
        real("coco"),
        transform=TransformConfig(augment=True, flip_prob=0.5, rotation_prob=1.0),
    )
    torch.manual_seed(0)
    batch = collate([ds[i % len(ds)] for i in range(48)])
    pred = batch.target.double().numpy().copy()
    assert batch.flipped.any() and (~batch.flipped).any() and np.all(batch.rotation != 0)
    # a training flip mirrors the image about the crop centre, then rotates the mirrored image:
    # undo with the pair swap, u -> -u and the opposite rotation
    pred[batch.flipped] = pred[batch.flipped][:, COCO17.flip_index]
    pred[batch.flipped, :, 0] *= -1
    rotation = np.where(batch.flipped, -batch.rotation, batch.rotation)
    image_xy = crop_to_image(pred, batch.center, batch.scale, rotation)
    labelled = batch.keypoints[..., 2] > 0
    inside = np.all(np.abs(batch.target.numpy()) <= 0.5, axis=-1)
    inside[batch.flipped] = inside[batch.flipped][:, COCO17.flip_index]
    err = np.abs(image_xy - batch.keypoints[..., :2])[labelled & inside]
    assert err.size > 100 and err.max() < 1e-3
    # torch path agrees
    torch_xy = crop_to_image(torch.from_numpy(pred), batch.center, batch.scale, rotation)
    np.testing.assert_allclose(torch_xy.numpy(), image_xy, atol=1e-9)


@pytest.mark.parametrize("flipped", [False, True])
@pytest.mark.parametrize("fast_decode", [False, True])
def test_crop_pixels_follow_the_keypoint_transform(flipped, fast_decode):
    """The image crop (incl. flip, reduced decode) is the full-resolution warp with the same matrix."""
    ann, root = real("coco", "test_coco.json"), real("coco")
    ds = TopDownDataset.from_coco(ann, root, transform=TransformConfig(fast_decode=fast_decode))
    i = 0  # the large person in 000000000785.jpg: the crop allows a reduced decode
    center, scale = ds.centers[i] * 1.0, ds.scales[i] * 1.6
    matrix = ds.crop_matrix(center, scale, 20.0, flipped)
    pixels, factor = ds._load_image(i, scale)
    assert (factor > 1) == fast_decode
    got = warp_crop(pixels, compose(matrix, reduction_matrix(factor)), INPUT).astype(float)
    full = decode_bgr(read_bytes(ds.table.image_path(i))).pixels
    want = warp_crop(full, matrix, INPUT).astype(float)
    if fast_decode:
        assert np.abs(got - want).mean() < 4.0  # resampled from a 1/2-size decode
    else:
        np.testing.assert_array_equal(got, want)
    if flipped:
        # mirrored about the crop centre (x -> W - x) after rotating the other way
        mirror = cv2.flip(warp_crop(full, ds.crop_matrix(center, scale, -20.0, False), INPUT), 1)
        assert np.abs(mirror.astype(float)[:, :-1] - want[:, 1:]).mean() < 1.0


def test_flip_keypoints_twice_is_identity_and_swaps_named_pairs():
    rng = np.random.default_rng(0)
    kpts = np.concatenate([rng.uniform(0, 600, (3, 17, 2)), rng.integers(0, 3, (3, 17, 1))], -1)
    once = flip_keypoints(kpts, 640, COCO17)
    np.testing.assert_allclose(flip_keypoints(once, 640, COCO17), kpts, rtol=0, atol=1e-12)
    lw, rw = COCO17.index("left_wrist"), COCO17.index("right_wrist")
    np.testing.assert_allclose(once[:, lw, 0], 639 - kpts[:, rw, 0])
    np.testing.assert_array_equal(once[:, lw, 1:], kpts[:, rw, 1:])
    nose = COCO17.index("nose")
    np.testing.assert_allclose(once[:, nose, 0], 639 - kpts[:, nose, 0])
    mpii = flip_keypoints(np.arange(16 * 3, dtype=float).reshape(16, 3), 100, MPII16)
    assert mpii[MPII16.index("left_ankle"), 1] == 1.0  # right_ankle's y (index 0 -> 0*3 + 1)


def test_flip_back_undoes_a_pixel_mirror_of_the_crop():
    """A keypoint at crop pixel x appears at W - 1 - x in image.flip(-1); flip back recovers it."""
    rng = np.random.default_rng(1)
    xy = rng.uniform([0, 0], [191, 255], (4, 17, 2))
    mirrored = xy[:, COCO17.flip_index].copy()
    mirrored[..., 0] = 191 - mirrored[..., 0]
    pred = torch.from_numpy(normalize_coords(xy, INPUT))
    pred_flipped = torch.from_numpy(normalize_coords(mirrored, INPUT))
    back = flip_back_coordinates(pred_flipped, COCO17.flip_index, 192)
    torch.testing.assert_close(back, pred, atol=1e-12, rtol=0)
    # the flip test of the regression head: mu as above, sigma swapped back, then averaged
    head = RegressionHead(8, 17, input_size=INPUT)
    sigma = torch.rand(4, 17, 2, dtype=torch.float64)
    flipped = RegressionOutput(pred_flipped, sigma[:, COCO17.flip_index])
    mean = average_outputs(
        RegressionOutput(pred, sigma), head.flip_back(flipped, COCO17.flip_index)
    )
    torch.testing.assert_close(mean.mu, pred, atol=1e-12, rtol=0)
    torch.testing.assert_close(mean.sigma, sigma)


def test_cropping_a_mirrored_image_mirrors_the_crop_about_its_centre():
    """Official training flip (mirror the image, then crop at w - 1 - cx) == crop mirrored x -> W - x.

    That is why a training flip maps targets u -> -u, while the flip test, which mirrors the crop
    tensor (x -> W - 1 - x), needs the extra -1/W shift of
    :func:`posereg.models.heads.flip_back_coordinates`.
    """
    ds = TopDownDataset.from_coco(real("coco", "test_coco.json"), real("coco"))
    sample = ds[0]
    full = decode_bgr(read_bytes(ds.table.image_path(0))).pixels
    w = full.shape[1]
    center = np.array([w - 1 - sample.center[0], sample.center[1]])
    crop = warp_crop(cv2.flip(full, 1), get_affine_transform(center, sample.scale, 0, INPUT), INPUT)
    direct = warp_crop(full, get_affine_transform(sample.center, sample.scale, 0, INPUT), INPUT)
    diff = np.abs(crop[:, 1:].astype(int) - cv2.flip(direct, 1)[:, :-1].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05  # equal up to warpAffine's fixed-point rounding
    ours = ds.crop_matrix(sample.center, sample.scale, 0.0, flipped=True)
    ours_diff = np.abs(warp_crop(full, ours, INPUT).astype(int) - crop.astype(int))
    assert ours_diff.max() <= 1 and ours_diff.mean() < 0.01
