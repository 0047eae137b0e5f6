"""Keypoint R-CNN with the regression + RLE keypoint head (posereg.models.keypoint_rcnn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from _keypoint_rcnn_scenes import SMALL, scene
from posereg.losses import RLELoss
from posereg.models.keypoint_rcnn import (
    PREDICTOR_PREFIX,
    RegressionRoIHeads,
    box_denormalize,
    box_sigma_to_pixels,
    build_keypoint_rcnn,
    encode_box_targets,
    init_from_heatmap,
    to_pose_results,
)


def test_box_targets_match_a_hand_computed_example():
    # box (10, 20)-(50, 100): w 40, h 80. (30, 60) is the centre -> (0, 0); (10, 100) the
    # bottom-left corner -> (-0.5, 0.5); (20, 40) -> (10/40 - .5, 20/80 - .5) = (-.25, -.25);
    # (60, 60) lies right of the box (1.25 - .5 = .75) -> weight 0; (30, 60) unlabelled -> 0.
    keypoints = torch.tensor(
        [[[30.0, 60.0, 2], [10, 100, 1], [20, 40, 2], [60, 60, 2], [30, 60, 0]]]
    )
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    target, weight = encode_box_targets(keypoints, boxes)
    expected = torch.tensor([[[0.0, 0.0], [-0.5, 0.5], [-0.25, -0.25], [0.75, 0.0], [0, 0]]])
    torch.testing.assert_close(target, expected)
    torch.testing.assert_close(weight[0, :, 0], torch.tensor([1.0, 1, 1, 0, 0]))
    assert weight.shape == (1, 5, 2) and torch.equal(weight[..., 0], weight[..., 1])
    torch.testing.assert_close(box_denormalize(target, boxes), keypoints[..., :2])
    # sigma in box units -> pixels: x by the width 40, y by the height 80
    sigma = torch.tensor([[[0.1, 0.2]]])
    torch.testing.assert_close(box_sigma_to_pixels(sigma, boxes), torch.tensor([[[4.0, 16.0]]]))


def test_rle_loss_is_finite_and_its_gradient_reaches_the_head():
    torch.manual_seed(0)
    model = build_keypoint_rcnn("rle", **SMALL)
    assert isinstance(model.roi_heads, RegressionRoIHeads)
    assert isinstance(model.roi_heads.keypoint_predictor.criterion, RLELoss)
    assert model.roi_heads.keypoint_predictor.criterion.convention == "official"
    image, target = scene(0, 2)
    losses = model([image], [target])
    assert set(losses) == {
        "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_keypoint"
    }  # fmt: skip
    assert torch.isfinite(losses["loss_keypoint"]) and losses["loss_keypoint"] != 0
    losses["loss_keypoint"].backward()
    predictor = model.roi_heads.keypoint_predictor
    for name, p in [
        ("fc_coord", predictor.fc_coord.linear.weight),
        ("fc_sigma", predictor.fc_sigma.linear.weight),
        ("flow", next(predictor.criterion.flow.parameters())),
        ("keypoint convs", model.roi_heads.keypoint_head[0].weight),
        ("backbone", model.backbone.body.conv1.weight),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_rle_outputs_are_decoded_through_the_box_and_rescaled_to_the_image():
    # The network sees the 128x128 image at 64x64 (min_size 64): boxes, keypoints and sigma
    # must all come back in the original pixels, so sigma / box size is the head's sigma in box
    # units and the keypoint score is 1 - its mean (Eq. 9).
    torch.manual_seed(0)
    model = build_keypoint_rcnn("rle", **{**SMALL, "min_size": 64, "max_size": 64}).eval()
    with torch.no_grad():
        out = model([scene(1, 2)[0]])[0]
    assert len(out["boxes"]) > 0
    wh = out["boxes"][:, None, 2:] - out["boxes"][:, None, :2]  # (N, 1, 2)
    sigma_box = out["keypoints_sigma"] / wh
    assert ((sigma_box > 0) & (sigma_box < 1)).all()
    torch.testing.assert_close(out["keypoints_scores"], 1 - sigma_box.mean(-1))
    assert torch.equal(out["keypoints"][..., 2], torch.ones_like(out["keypoints"][..., 2]))

    results = to_pose_results([out], score_rule="box")
    r = results[0]
    np.testing.assert_allclose(r.keypoints, out["keypoints"][..., :2].double().numpy())
    np.testing.assert_allclose(r.sigma, out["keypoints_sigma"].double().numpy())
    np.testing.assert_allclose(r.boxes[:, 2:], wh[:, 0].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(r.boxes[:, :2], out["boxes"][:, :2].double().numpy())
    np.testing.assert_allclose(r.scores, out["scores"].double().numpy())
    official = to_pose_results([out])[0].scores  # det + mean_k(c) + max_k(c)
    c = out["keypoints_scores"].double().numpy()
    np.testing.assert_allclose(official, r.scores + c.mean(1) + c.max(1))


def test_heatmap_baseline_trains_one_step_and_predicts():
    torch.manual_seed(0)
    model = build_keypoint_rcnn("heatmap", **SMALL)
    assert type(model.roi_heads).__name__ == "RoIHeads"  # torchvision's own
    image, target = scene(2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.roi_heads.keypoint_predictor.kps_score_lowres.weight.clone()
    losses = model([image], [target])
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_keypoint"] > 0
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(before, model.roi_heads.keypoint_predictor.kps_score_lowres.weight)
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    r = to_pose_results([out], score_rule="box")[0]
    assert r.sigma is None and r.keypoints.shape == (len(out["boxes"]), 17, 2)


def test_init_from_heatmap_copies_the_shared_weights_and_leaves_the_rle_head_fresh(tmp_path):
    torch.manual_seed(1)
    heatmap = build_keypoint_rcnn("heatmap", **SMALL)
    torch.save(heatmap.state_dict(), tmp_path / "heatmap.pt")
    torch.manual_seed(2)
    torch.save(build_keypoint_rcnn("rle", **SMALL).state_dict(), tmp_path / "rle.pt")
    heatmap_state = torch.load(tmp_path / "heatmap.pt", weights_only=True)
    rle_state = torch.load(tmp_path / "rle.pt", weights_only=True)

    model = build_keypoint_rcnn("rle", **SMALL)
    model.load_state_dict(rle_state)
    copied = init_from_heatmap(model, tmp_path / "heatmap.pt")
    after = model.state_dict()
    shared = [k for k in after if not k.startswith(PREDICTOR_PREFIX)]
    assert copied == sorted(shared)
    assert any(k.startswith("backbone.") for k in copied)
    assert any(k.startswith("rpn.") for k in copied)
    assert any(k.startswith("roi_heads.box_head.") for k in copied)
    assert any(k.startswith("roi_heads.keypoint_head.") for k in copied)
    differs = [k for k in shared if not torch.equal(heatmap_state[k], rle_state[k])]
    # the two seeds give different conv/linear weights, so the copy did something
    assert [k for k in shared if heatmap_state[k].dim() > 1] == [
        k for k in differs if heatmap_state[k].dim() > 1
    ]
    for k in shared:
        assert torch.equal(after[k], heatmap_state[k]), k
    predictor = [k for k in after if k.startswith(PREDICTOR_PREFIX)]
    assert any(".criterion.flow." in k for k in predictor)
    for k in predictor:  # the RLE head (and its flow) as they were
        assert torch.equal(after[k], rle_state[k]), k

    # the builder's pretrained= does the same (BatchNorms frozen, as torchvision fine-tunes)
    built = build_keypoint_rcnn("rle", pretrained=tmp_path / "heatmap.pt", **SMALL).state_dict()
    for k in (
        "backbone.body.conv1.weight",
        "backbone.body.bn1.running_var",
        "rpn.head.conv.0.0.weight",
    ):
        assert torch.equal(built[k], heatmap_state[k]), k

    other = build_keypoint_rcnn("rle", **{**SMALL, "keypoint_layers": (16, 16)})
    with pytest.raises(ValueError, match=r"heatmap\.pt: not a Keypoint R-CNN of this architecture"):
        init_from_heatmap(other, tmp_path / "heatmap.pt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(head="dense"), "unknown Keypoint R-CNN head 'dense'; valid: rle, heatmap"),
        (
            dict(backbone="resnet18"),
            "unknown Keypoint R-CNN backbone 'resnet18'; valid: resnet50_fpn",
        ),
        (dict(backbone="mobilenet_v3_fpn", pretrained=True), "resnet50_fpn only"),
    ],
)
def test_bad_names_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_keypoint_rcnn(**kwargs)


def test_rle_model_overfits_three_synthetic_images():
    # 3 images with 1, 2 and 3 people, 50 Adam steps of the small model (a few seconds on one
    # CPU thread): every person is found (a detection scored > 0.5 with IoU > 0.5) and the mean
    # keypoint error is under 8 px for people 70-100 px tall (30-36 px wide).
    data = [scene(seed, n) for seed, n in [(0, 1), (1, 2), (2, 3)]]
    images, targets = [d[0] for d in data], [d[1] for d in data]
    torch.manual_seed(0)
    model = build_keypoint_rcnn("rle", **SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def errors() -> list[float]:
        model.eval()
        with torch.no_grad():
            outputs = model(images)
        model.train()
        found = []
        for out, target in zip(outputs, targets, strict=True):
            keep = out["scores"] > 0.5
            iou = box_iou(target["boxes"], out["boxes"][keep])  # (G, N)
            if iou.numel() == 0:
                return [float("inf")]
            best = iou.max(dim=1)
            assert (best.values > 0.5).all(), f"a person not found: IoU {best.values.tolist()}"
            assert keep.sum() <= len(target["boxes"]) + 1, "more than one spurious detection"
            kp = out["keypoints"][keep][best.indices, :, :2]  # (G, K, 2)
            found += (kp - target["keypoints"][..., :2]).norm(dim=-1).mean(dim=1).tolist()
        return found

    for _ in range(50):
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    err = errors()
    assert len(err) == 6 and max(err) < 8.0, err


def test_resnet50_fpn_has_torchvision_keypoint_rcnn_layout():
    # built on the meta device (no memory, no weights): the heatmap model's state dict is
    # torchvision's keypointrcnn_resnet50_fpn's, so its COCO weights load; the RLE model takes
    # every one of them but the heatmap predictor's.
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    with torch.device("meta"):
        reference = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
        heatmap = build_keypoint_rcnn("heatmap", "resnet50_fpn").state_dict()
        rle_model = build_keypoint_rcnn("rle", "resnet50_fpn")
        copied = init_from_heatmap(rle_model, reference)
    assert {k: v.shape for k, v in heatmap.items()} == {k: v.shape for k, v in reference.items()}
    assert copied == sorted(k for k in reference if not k.startswith(PREDICTOR_PREFIX))


def test_pretrained_true_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torchvision cache
    with pytest.raises(FileNotFoundError, match="posereg never downloads"):
        build_keypoint_rcnn("rle", "resnet50_fpn", pretrained=True)


@pytest.mark.parametrize("head", ["rle", "heatmap"])
def test_images_without_people_or_labelled_keypoints_give_a_zero_keypoint_loss(head):
    torch.manual_seed(0)
    model = build_keypoint_rcnn(head, **SMALL)
    image, target = scene(0, 2)
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "keypoints": torch.zeros(0, 17, 3),
    }
    unlabelled = {**target, "keypoints": target["keypoints"] * torch.tensor([1.0, 1.0, 0.0])}
    for t in (empty, unlabelled):
        losses = model([image], [t])
        assert losses["loss_keypoint"] == 0
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
