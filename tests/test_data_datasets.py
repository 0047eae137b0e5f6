"""Loaders and TopDownDataset on the real COCO, MPII and Human3.6M fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from _real_data import real
from posereg.codecs import HeatmapCodec, IntegralCodec
from posereg.data import TopDownDataset, TransformConfig, collate
from posereg.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from posereg.data.h36m import load_h36m_body3d
from posereg.data.transforms import affine_points, crop_to_image, warp_crop
from posereg.skeletons import H36M17, MPII16


@pytest.fixture(scope="module")
def coco_json():
    return json.loads(real("coco", "test_coco.json").read_text())


def test_coco_loader_keeps_labelled_instances_and_reports_the_rest(coco_json):
    ds = TopDownDataset.from_coco(real("coco", "test_coco.json"), real("coco"))
    empty = [a["id"] for a in coco_json["annotations"] if a["num_keypoints"] == 0]
    assert len(ds) == len(coco_json["annotations"]) - len(empty) == 12
    assert ds.report.counts() == {"no labelled keypoints": len(empty)}
    assert sorted(int(s.record.split()[2]) for s in ds.report.skipped) == sorted(empty)
    assert "2 skipped" in ds.report.summary()
    by_id = {a["id"]: a for a in coco_json["annotations"]}
    for i in range(len(ds)):
        sample = ds[i]
        ann = by_id[sample.ann_id]
        assert sample.image_id == ann["image_id"]
        np.testing.assert_array_equal(sample.keypoints.ravel(), ann["keypoints"])
        assert sample.area == ann["area"] and sample.bbox_score == 1.0


def test_image_is_rgb_imagenet_normalized_crop(coco_json):
    """De-normalizing the tensor gives Pillow's RGB pixels warped with the same matrix."""
    ds = TopDownDataset.from_coco(
        real("coco", "test_coco.json"), real("coco"), transform=TransformConfig(fast_decode=False)
    )
    sample = ds[3]
    assert sample.image.dtype == torch.float32 and sample.image.shape == (3, 256, 192)
    rgb = np.asarray(Image.open(ds.table.image_path(3)).convert("RGB"))
    matrix = ds.crop_matrix(sample.center, sample.scale, 0.0, False)
    want = warp_crop(rgb, matrix, (256, 192)).astype(np.float64)
    got = sample.image.numpy().transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    assert np.abs(got * 255.0 - want).mean() < 1.0  # Pillow and libjpeg-turbo may differ by 1


@pytest.mark.parametrize("codec_cls", [HeatmapCodec, IntegralCodec])
def test_dataset_uses_the_codec(codec_cls):
    codec = codec_cls((256, 192))
    ds = TopDownDataset.from_coco(real("coco", "test_coco.json"), real("coco"), codec=codec)
    sample = ds[0]
    if codec_cls is HeatmapCodec:
        assert sample.target.shape == (17, 64, 48) and sample.target_weight.shape == (17,)
        peak = sample.target.reshape(17, -1).argmax(-1)
        kp = affine_points(
            sample.keypoints[:, :2], ds.crop_matrix(sample.center, sample.scale, 0, False)
        )
        np.testing.assert_array_equal(peak % 48, np.floor(kp[:, 0] / 4 + 0.5))
    else:
        assert sample.target.shape == (17, 2) and sample.target_weight.shape == (17, 2)


def test_codec_size_must_match():
    with pytest.raises(ValueError, match=r"codec input_size \(256, 256\) differs"):
        TopDownDataset.from_coco(
            real("coco", "test_coco.json"), real("coco"), codec=IntegralCodec((256, 256))
        )


def test_detection_boxes_with_threshold():
    dets = json.loads(real("coco", "test_coco_det_AP_H_56.json").read_text())
    ds = TopDownDataset.from_coco(
        real("coco", "test_coco.json"),
        real("coco"),
        detections=real("coco", "test_coco_det_AP_H_56.json"),
        det_score_threshold=0.5,
    )
    kept = [d for d in dets if d["score"] >= 0.5]
    assert len(ds) == len(kept)
    assert ds.report.counts() == {"below detection score threshold": len(dets) - len(kept)}
    batch = collate([ds[i] for i in range(len(ds))])
    np.testing.assert_allclose(np.sort(batch.bbox_score), np.sort([d["score"] for d in kept]))
    assert np.all(batch.ann_id == -1) and np.all(batch.target_weight.numpy() == 0)


def test_keypoints_clean_pass_through(tmp_path, coco_json):
    data = dict(coco_json)
    data["annotations"] = [dict(a) for a in coco_json["annotations"]]
    for a in data["annotations"]:
        kp = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        kp[:, :2] += np.where(kp[:, 2:] > 0, 3.5, 0.0)
        a["keypoints_clean"] = kp.ravel().tolist()
    ann = tmp_path / "with_clean.json"
    ann.write_text(json.dumps(data))
    ds = TopDownDataset.from_coco(ann, real("coco"))
    batch = collate([ds[i] for i in range(4)])
    assert batch.keypoints_clean is not None and batch.keypoints_clean.shape == (4, 17, 3)
    labelled = batch.keypoints[..., 2] > 0
    np.testing.assert_allclose((batch.keypoints_clean - batch.keypoints)[..., :2][labelled], 3.5)


def test_dataloader_two_workers_collates_and_does_not_repeat_augmentations():
    ds = TopDownDataset.from_coco(
        real("coco", "test_coco.json"), real("coco"), transform=TransformConfig(augment=True)
    )
    loader = DataLoader(
        torch.utils.data.Subset(ds, [0] * 8), batch_size=2, num_workers=2, collate_fn=collate
    )
    batches = list(loader)
    assert all(b.image.shape == (2, 3, 256, 192) and b.center.shape == (2, 2) for b in batches)
    scales = np.concatenate([b.scale[:, 0] for b in batches])
    assert len(np.unique(scales.round(6))) == 8  # every worker draws its own augmentation
    assert all(b.num_invalid == 0 and b.keypoints.shape == (2, 17, 3) for b in batches)


def test_augmentation_is_reproducible_from_the_torch_seed():
    def draw():
        ds = TopDownDataset.from_coco(
            real("coco", "test_coco.json"), real("coco"), transform=TransformConfig(augment=True)
        )
        return [ds._augmentation(i, ds._rng(i))[2] for i in range(12)]

    torch.manual_seed(3)
    first = draw()
    torch.manual_seed(3)
    assert draw() == first


def test_mpii_joint_order_against_pixel_values():
    entries = json.loads(real("mpii", "test_mpii.json").read_text())
    ds = TopDownDataset.from_mpii(real("mpii", "test_mpii.json"), real("mpii"))
    assert len(ds) == len(entries) == 5 and ds.skeleton is MPII16
    y, v = ds.table.keypoints[..., 1], ds.table.keypoints[..., 2] > 0
    idx = MPII16.index
    # head above neck above thorax above pelvis; knees above ankles (all 5 people stand upright)
    for upper, lower in [
        ("head_top", "upper_neck"),
        ("upper_neck", "thorax"),
        ("thorax", "pelvis"),
        ("left_knee", "left_ankle"),
        ("right_knee", "right_ankle"),
    ]:
        both = v[:, idx(upper)] & v[:, idx(lower)]
        assert both.sum() >= 3 and np.all((y[:, idx(upper)] < y[:, idx(lower)])[both]), (
            upper,
            lower,
        )
    # 1-based MATLAB coordinates -> 0-based pixels
    np.testing.assert_allclose(ds.table.keypoints[0, :, :2], np.array(entries[0]["joints"]) - 1.0)
    # the official box (centre moved 15 x scale px down, side 200 x scale x 1.25) holds every joint
    for i in range(len(ds)):
        sample = ds[i]
        assert sample.scale[1] == pytest.approx(entries[i]["scale"] * 200 * 1.25)
        labelled = sample.keypoints[:, 2] > 0
        assert np.all(np.abs(sample.target.numpy()[labelled]) < 0.5)


def test_h36m_joint_order_against_pixels_and_3d():
    frames = load_h36m_body3d(real("h36m", "test_h36m_body3d.npz"))
    cameras = json.loads(real("h36m", "cameras.json").read_text())
    idx = H36M17.index
    for i, name in enumerate(frames.image_names):
        uv, xyz = frames.keypoints[i], frames.joints_3d[i, :, :3]
        assert uv[idx("head"), 1] < uv[idx("thorax"), 1] < uv[idx("pelvis"), 1]
        # the 2D labels are the projections of the 3D joints, joint by joint (lens distortion aside)
        subject, camera = name.split("/")[0], name.split("/")[1].split(".")[1]
        cam = cameras[f"{subject}/{camera}"]
        proj = xyz[:, :2] / xyz[:, 2:] * np.ravel(cam["f"]) + np.ravel(cam["c"])
        assert np.abs(proj - uv[:, :2]).max() < 3.0
        # chirality: the face (neck/nose) points forward; up x forward points to the person's left
        up = xyz[idx("thorax")] - xyz[idx("pelvis")]
        forward = xyz[idx("neck")] - (xyz[idx("thorax")] + xyz[idx("head")]) / 2
        left = np.cross(up, forward)
        for a, b in [("left_hip", "right_hip"), ("left_shoulder", "right_shoulder")]:
            assert np.dot(left, xyz[idx(a)] - xyz[idx(b)]) > 0, (name, a)
    ds = TopDownDataset.from_h36m(real("h36m", "test_h36m_body3d.npz"), real("h36m"))
    sample = ds[0]
    back = crop_to_image(
        sample.target.double().numpy()[None], sample.center[None], sample.scale[None]
    )
    np.testing.assert_allclose(back[0], frames.keypoints[0, :, :2], atol=1e-3)
