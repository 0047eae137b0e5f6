"""Regression head (official layout), confidence (Eq. 9), and the regressor that owns the flow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from posereg.losses import build_loss
from posereg.models import NormLinear, PoseRegressor, RegressionHead, RegressionOutput


def test_norm_linear_is_xw_over_norm_plus_b():
    torch.manual_seed(0)
    layer = NormLinear(6, 4)
    x = torch.randn(3, 6)
    w, b = layer.linear.weight, layer.linear.bias
    expected = x @ w.t() / x.norm(dim=1, keepdim=True) + b
    torch.testing.assert_close(layer(x), expected)
    # invariant to the scale of the features, which a plain linear layer is not
    torch.testing.assert_close(layer(7.0 * x), layer(x))
    plain = NormLinear(6, 4, norm=False)
    assert not torch.allclose(plain(7.0 * x), plain(x))


def test_fc_layers_use_xavier_gain_001():
    head = RegressionHead(in_channels=256, num_keypoints=17)
    bound = 0.01 * math.sqrt(6 / (256 + 34))  # xavier-uniform bound with gain 0.01
    for fc in (head.fc_coord, head.fc_sigma):
        w = fc.linear.weight.detach()
        assert float(w.abs().max()) <= bound
        assert float(w.abs().max()) > 0.5 * bound  # drawn from the full range, not zeros


@pytest.mark.parametrize("dim", [2, 3])
def test_head_outputs_and_confidence(dim):
    torch.manual_seed(0)
    head = RegressionHead(in_channels=32, num_keypoints=5, dim=dim)
    with torch.no_grad():
        head.fc_sigma.linear.weight.normal_(0, 1.0)
    feats = torch.randn(4, 32, 3, 2)
    out = head(feats)
    assert isinstance(out, RegressionOutput)
    assert out.mu.shape == (4, 5, dim) and out.sigma.shape == (4, 5, dim)
    assert float(out.sigma.min()) > 0 and float(out.sigma.max()) < 1
    # global average pooling: a (B, C, H, W) map equals its pooled (B, C) vector
    pooled = head(feats.mean(dim=(2, 3)))
    torch.testing.assert_close(pooled.mu, out.mu)
    # sigma = sigmoid(fc_sigma(pooled)), confidence = 1 - mean_d sigma (Eq. 9)
    logits = head.fc_sigma(feats.mean(dim=(2, 3))).reshape(4, 5, dim)
    torch.testing.assert_close(out.sigma, torch.sigmoid(logits))
    torch.testing.assert_close(out.confidence, 1 - torch.sigmoid(logits).mean(-1))


def _tiny_model(loss="rle"):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU())
    return PoseRegressor(backbone, RegressionHead(16, 17, criterion=build_loss(loss)))


def test_flow_is_in_parameters_and_state_dict_but_not_run_at_inference():
    model = _tiny_model()
    flow = model.criterion.flow
    flow_params = {id(p) for p in flow.parameters()}
    assert flow_params <= {id(p) for p in model.parameters()}
    assert "head.criterion.flow.s.0.0.weight" in model.state_dict()
    assert "head.criterion.flow.mask" in model.state_dict()

    calls = []
    flow.register_forward_hook(lambda *a: calls.append(1))
    images = torch.randn(2, 3, 32, 24)
    out = model(images)
    assert calls == []  # inference: backbone + head only
    loss = model.loss(out, torch.zeros(2, 17, 2), torch.ones(2, 17, 1))
    assert calls == [1]
    # the flow is trained: one optimizer step over model.parameters() moves it
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = flow.s[0][0].weight.detach().clone()
    loss.backward()
    opt.step()
    assert not torch.equal(before, flow.s[0][0].weight)


def test_inference_only_model_refuses_to_compute_a_loss():
    model = PoseRegressor(nn.Identity(), RegressionHead(8, 3))
    out = model(torch.randn(2, 8))
    with pytest.raises(RuntimeError, match="without a criterion"):
        model.loss(out, torch.zeros(2, 3, 2), torch.ones(2, 3, 1))


def test_checkpoints_with_the_flow_at_the_top_still_load(tmp_path):
    """Before the head owned its loss, the flow was saved as ``criterion.flow.*``; such state dicts
    load (strictly) through ``load_state_dict`` and :func:`load_model_state` into the same model."""
    from posereg.checkpoint import load_model_state

    model = _tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    old = {k.removeprefix("head."): v for k, v in model.state_dict().items() if "criterion" in k}
    old.update({k: v for k, v in model.state_dict().items() if "criterion" not in k})
    assert "criterion.flow.s.0.0.weight" in old and not any(k.startswith("head.crit") for k in old)
    for load in (
        lambda m: m.load_state_dict(dict(old)),
        lambda m: load_model_state(m, dict(old), "old.pt"),
    ):
        fresh = _tiny_model()
        fresh.head.criterion.flow.s[0][0].weight.data.zero_()
        load(fresh)
        for k, v in model.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k
