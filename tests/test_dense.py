"""The one-stage dense model (RLE paper Tab. 2d): target codec, flip, losses, overfit."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from posereg.dense_codec import DenseCodec, flip_targets, person_scale
from posereg.dense_losses import build_dense_keypoint_loss, dense_loss, oks_similarity
from posereg.metrics.coco import oks
from posereg.models.dense import DenseOutput, build_dense_model, decode_people
from posereg.skeletons import COCO17
from posereg.synth.sticks import draw_sticks, stick_people

K = COCO17.num_keypoints


def perfect_output(codec, targets, image_size, sigma=0.1, dtype=torch.float64):
    """The outputs of a perfect network: the encoded targets at the assigned locations."""
    grid = codec.grid(image_size, dtype=dtype)
    enc = [codec.encode(t, grid) for t in targets]
    logits = torch.stack([torch.where(e.positive, 10.0, -10.0).to(dtype) for e in enc])
    return DenseOutput(
        logits,
        torch.stack([e.boxes for e in enc]),
        logits.clone(),
        torch.stack([e.keypoints for e in enc]),
        torch.full((len(targets), grid.num_locations, K, 2), sigma, dtype=dtype),
        grid,
    ), enc


# --------------------------------------------------------------------------- codec
def test_every_person_is_assigned_by_the_fcos_rule():
    codec = DenseCodec((8, 16, 32), K)
    grid = codec.grid((256, 256), dtype=torch.float64)
    # a small person (P3), a large one (P4 range), and a small one standing inside the large box
    target = stick_people([(60, 60, 50), (170, 140, 200), (170, 140, 40)], dtype=torch.float64)
    enc = codec.encode(target, grid)
    boxes = target["boxes"]
    for n in range(3):
        mine = enc.matched == n
        assert mine.any(), f"person {n} got no location"
        p, s = grid.points[mine], grid.strides[mine]
        centre = (boxes[n, :2] + boxes[n, 2:]) / 2
        assert ((p - centre).abs().amax(1) < 1.5 * s).all()  # centre sampling
        ltrb = torch.cat([p - boxes[n, :2], boxes[n, 2:] - p], 1)
        assert (ltrb.amin(1) > 0).all()
        lo, hi = grid.size_ranges[mine].unbind(1)
        assert ((ltrb.amax(1) > lo) & (ltrb.amax(1) < hi)).all()  # the level's size range
    # the large person (max distances ~ 100-130 px) lives on P4 and P5, the small ones on P3
    assert set(grid.strides[enc.matched == 1].tolist()) == {16.0, 32.0}
    assert set(grid.strides[enc.matched == 0].tolist()) == {8.0}
    # where the small inner person's locations also qualify for the big box, the small box wins
    assert set(grid.strides[enc.matched == 2].tolist()) == {8.0}


def test_encode_then_decode_gives_back_boxes_and_keypoints():
    codec = DenseCodec((8, 16, 32), K)
    targets = [
        stick_people([(60, 70, 80), (150, 120, 120), (200, 200, 50)], seed=1, dtype=torch.float64),
        stick_people([(128, 128, 220)], seed=2, dtype=torch.float64),
    ]
    out, enc = perfect_output(codec, targets, (256, 256))
    # every assigned location decodes to its person exactly
    for b, (t, e) in enumerate(zip(targets, enc, strict=True)):
        pos = e.positive
        boxes = codec.decode_boxes(out.box_distances[b], out.grid)[pos]
        assert torch.allclose(boxes, t["boxes"][e.matched[pos]], atol=1e-4, rtol=0)
        kp, sigma = codec.decode_keypoints(
            out.mu[b, pos], out.sigma[b, pos], boxes, out.grid.points[pos]
        )
        want = t["keypoints"][e.matched[pos], :, :2]
        assert (kp - want).abs().max() < 1e-4
        s = person_scale(t["boxes"][e.matched[pos]])
        assert torch.allclose(sigma, 0.1 * s[:, None, None].expand_as(sigma))
    # and the whole decode (threshold, NMS) returns each person once
    for nms in ("box", "oks"):
        results = decode_people(out, COCO17, nms=nms)
        for r, t in zip(results, targets, strict=True):
            assert len(r.scores) == len(t["boxes"])
            order = np.argsort(r.boxes[:, 0])
            gt_order = np.argsort(t["boxes"][:, 0].numpy())
            gt = t["boxes"].numpy()[gt_order]
            np.testing.assert_allclose(r.boxes[order, :2], gt[:, :2], atol=1e-4)
            np.testing.assert_allclose(r.boxes[order, 2:], gt[:, 2:] - gt[:, :2], atol=1e-4)
            kp = t["keypoints"].numpy()[gt_order, :, :2]
            assert np.abs(r.keypoints[order] - kp).max() < 1e-4
            np.testing.assert_allclose(r.confidence, 0.9)  # Eq. 9: 1 - mean sigma


def test_oks_nms_keeps_two_people_whose_boxes_overlap_where_box_nms_merges_them():
    codec = DenseCodec((8, 16, 32), K)
    grid = codec.grid((64, 64), dtype=torch.float64)
    a = grid.num_locations
    i, j = 27, 28  # two neighbouring P3 locations, (28, 28) and (36, 28)
    logits = torch.full((1, a), -10.0, dtype=torch.float64)
    logits[0, [i, j]] = torch.tensor([5.0, 4.0], dtype=torch.float64)
    boxes = torch.zeros(1, a, 4, dtype=torch.float64)
    boxes[0, i] = torch.tensor([2.0, 3.0, 2.0, 3.0])  # (12, 4, 44, 52)
    boxes[0, j] = torch.tensor([3.0, 3.0, 1.0, 3.0])  # (12, 4, 44, 52): the same box
    mu = torch.zeros(1, a, K, 2, dtype=torch.float64)
    mu[0, i, :, 0] = -0.2  # one person left of its location, the other right
    mu[0, j, :, 0] = 0.3
    out = DenseOutput(logits, boxes, logits.clone(), mu, torch.full_like(mu, 0.1), grid)
    assert len(decode_people(out, nms="box")[0].scores) == 1
    both = decode_people(out, nms="oks")[0]
    assert len(both.scores) == 2
    np.testing.assert_allclose(both.boxes, [[12, 4, 32, 48]] * 2)
    s = np.sqrt(32 * 48)
    np.testing.assert_allclose(both.keypoints[:, 0, 0], [27.5 - 0.2 * s, 35.5 + 0.3 * s])


def test_encoding_is_flip_equivariant():
    codec = DenseCodec((8, 16, 32), K)
    width = 224
    grid = codec.grid((160, width), dtype=torch.float64)
    target = stick_people(
        [(50, 70, 90), (150, 90, 110), (185, 70, 40)], seed=3, dtype=torch.float64
    )
    enc = codec.encode(target, grid)
    flipped = codec.encode(flip_targets(target, width, COCO17.flip_index), grid)
    # the flipped image's targets, mapped back, are the image's own targets
    logits, boxes, mu, _ = codec.mirror_outputs(
        flipped.labels[None],
        flipped.boxes[None],
        flipped.keypoints[None],
        flipped.keypoints[None],
        grid,
        COCO17.flip_index,
    )
    assert enc.positive.sum() > 10
    assert torch.equal(logits[0], enc.labels)
    assert torch.allclose(boxes[0], enc.boxes, atol=1e-9)
    assert torch.allclose(mu[0], enc.keypoints, atol=1e-9)
    weight = codec.mirror(flipped.keypoint_weight[None], grid)[0][:, COCO17.flip_index]
    assert torch.equal(weight, enc.keypoint_weight)
    # a wrong permutation (no left/right swap) breaks it: the test sees the permutation
    _, _, mu_wrong, _ = codec.mirror_outputs(
        flipped.labels[None], flipped.boxes[None], flipped.keypoints[None],
        flipped.keypoints[None], grid, list(range(K)),
    )  # fmt: skip
    assert not torch.allclose(mu_wrong[0], enc.keypoints, atol=1e-3)


def test_model_flip_test_is_equivariant():
    torch.manual_seed(0)
    model = build_dense_model("rle", width=0.25, fpn_channels=32, head_convs=1).eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        out = model.flip_forward(image)
        out_flipped = model.flip_forward(image.flip(-1))
    logits, boxes, mu, sigma = model.codec.mirror_outputs(
        torch.stack([out_flipped.logits, out_flipped.centerness], -1), out_flipped.box_distances, out_flipped.mu, out_flipped.sigma,
        out.grid, COCO17.flip_index,
    )  # fmt: skip
    scores = torch.stack([out.logits, out.centerness], -1)
    for got, want in (
        (logits, scores),
        (boxes, out.box_distances),
        (mu, out.mu),
        (sigma, out.sigma),
    ):
        assert torch.allclose(got, want, atol=1e-5)
    # and its people mirror: the decode of the flipped image is the flipped decode
    a = model.predict(image, score_threshold=0.0, flip_test=True, max_people=5)[0]
    b = model.predict(image.flip(-1), score_threshold=0.0, flip_test=True, max_people=5)[0]
    mirrored = a.keypoints[:, COCO17.flip_index].copy()
    mirrored[..., 0] = 96 - 1 - mirrored[..., 0]
    order_a, order_b = np.argsort(-a.scores, kind="stable"), np.argsort(-b.scores, kind="stable")
    np.testing.assert_allclose(b.scores[order_b], a.scores[order_a], atol=1e-5)
    np.testing.assert_allclose(b.keypoints[order_b], mirrored[order_a], atol=1e-3)


# --------------------------------------------------------------------------- losses
def test_a_confident_correct_prediction_has_a_negative_rle_loss_and_a_gradient():
    """Never clamp: the RLE loss of a good prediction is below 0 and still trains."""
    torch.manual_seed(0)
    criterion = build_dense_keypoint_loss("rle")
    target = 0.3 * torch.randn(4, K, 2)
    mu = (target + 0.002 * torch.randn_like(target)).requires_grad_()
    sigma_logit = torch.full_like(target, -4.0, requires_grad=True)  # sigma ~ 0.018
    terms = dense_loss(
        logits=torch.full((4,), 5.0),
        pred_boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(4, 1),
        centerness=torch.zeros(4),
        mu=mu,
        sigma=torch.sigmoid(sigma_logit),
        target_labels=torch.ones(4),
        target_boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(4, 1),
        target_centerness=torch.ones(4),
        target_keypoints=target,
        keypoint_weight=torch.ones(4, K),
        keypoint_loss=criterion,
    )
    assert terms.keypoint < 0
    terms.total.backward()
    assert mu.grad.norm() > 0 and sigma_logit.grad.norm() > 0
    # the gradient still pulls mu toward the target
    step = mu.detach() - 1e-4 * mu.grad / mu.grad.norm()
    assert (step - target).abs().sum() < (mu.detach() - target).abs().sum()


@pytest.mark.parametrize("name", ["rle", "l1", "oks"])
def test_each_keypoint_loss_pulls_the_offsets_to_the_target(name):
    torch.manual_seed(0)
    criterion = build_dense_keypoint_loss(name)
    target = 0.3 * torch.randn(6, K, 2)
    mu = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    sigma = torch.full_like(target, 0.1)
    weight = (torch.rand(6, K, 1) > 0.2).float()
    start = ((mu - target).abs() * weight).sum().item()
    optimizer = torch.optim.SGD([mu], lr=0.02 if name == "rle" else 0.5)
    for _ in range(20):
        optimizer.zero_grad()
        criterion(mu, sigma, target, weight).backward()
        optimizer.step()
    assert ((mu - target).abs() * weight).sum().item() < 0.7 * start
    # unlabelled keypoints get no gradient
    assert (mu.grad * (1 - weight)).abs().sum() == 0


def test_oks_similarity_is_coco_oks_in_person_units():
    rng = np.random.default_rng(0)
    box_area = 70.0 * 130.0
    truth = rng.uniform(0, 200, (K, 2))
    preds = truth[None] + rng.normal(0, 6, (5, K, 2))
    visible = rng.uniform(size=(K,)) > 0.3
    want = oks(truth, preds, box_area, COCO17.sigmas, visible)
    s = np.sqrt(box_area)
    got = oks_similarity(
        torch.tensor(preds / s),
        torch.tensor(truth / s)[None].expand(5, K, 2),
        torch.tensor(visible, dtype=torch.float64)[None].expand(5, K),
        2 * torch.tensor(COCO17.sigmas, dtype=torch.float64),
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def test_unknown_keypoint_loss_and_backbone_are_named():
    with pytest.raises(ValueError, match="unknown dense keypoint loss 'l2'; valid: rle, l1, oks"):
        build_dense_keypoint_loss("l2")
    with pytest.raises(ValueError, match="needs a ResNet backbone"):
        build_dense_model("rle", backbone="mobilenet_v2")


def test_an_image_without_people_trains_objectness_only():
    torch.manual_seed(0)
    model = build_dense_model("oks", width=0.25, fpn_channels=32, head_convs=1)
    empty = {"boxes": torch.zeros(0, 4), "keypoints": torch.zeros(0, K, 3)}
    terms = model.loss(torch.rand(1, 3, 64, 64), [empty])
    assert terms.num_positive == 0 and torch.isfinite(terms.total)
    assert terms.total == terms.objectness > 0
    terms.total.backward()
    assert model.head.cls_logits.weight.grad.norm() > 0


# --------------------------------------------------------------------------- overfit
def test_a_tiny_dense_rle_model_overfits_three_images():
    """People found and keypoints within a few pixels after ~100 steps (a few seconds)."""
    torch.manual_seed(0)
    size = (128, 128)
    scenes = [[(40, 60, 70)], [(35, 64, 60), (95, 60, 75)], [(25, 70, 45), (64, 60, 60), (105, 64, 50)]]  # fmt: skip
    targets = [stick_people(s, seed=i) for i, s in enumerate(scenes)]
    images = torch.stack([draw_sticks(size, t) for t in targets])
    model = build_dense_model("rle", width=0.25, fpn_channels=32, head_convs=1)
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    start = time.perf_counter()
    for _ in range(100):
        loss = model.loss(images, targets).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    # trained this far, the RLE term is negative and still trains the keypoint head (no clamp)
    terms = model.loss(images, targets)
    assert terms.keypoint < 0
    model.zero_grad()
    terms.total.backward()
    assert model.head.mu.weight.grad.norm() > 0 and model.head.sigma.weight.grad.norm() > 0
    model.eval()
    errors = []
    for result, target in zip(model.predict(images, score_threshold=0.5), targets, strict=True):
        truth = target["keypoints"][..., :2].numpy()
        assert len(result.scores) == len(truth)  # every person found once
        # each person's closest prediction
        err = np.linalg.norm(result.keypoints[None] - truth[:, None], axis=-1).mean(-1)  # (N, M)
        assert len(set(err.argmin(1).tolist())) == len(truth)
        errors += err.min(1).tolist()
    assert np.mean(errors) < 6.0, (errors, seconds)  # px, people 45-75 px tall
