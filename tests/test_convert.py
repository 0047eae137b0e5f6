"""Official RLE checkpoints: a stand-in of the official model, converted, must predict the same.

The stand-in classes below are written from the official source (Jeff-sjtu/
res-loglikelihood-regression: rlepose/models/regression_nf.py, regression_nf_3d.py,
layers/Resnet.py, layers/real_nvp.py) without using posereg, so the key names and the
forward pass are an independent reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributions as distributions
import torchvision
from torch import nn

from posereg.config import Config, from_dict
from posereg.convert import (
    convert_official,
    convert_official_state_dict,
    infer_official_config,
    official_to_posereg_key,
)
from posereg.models import create_pose_model
from posereg.skeletons import get_skeleton


class OfficialLinear(nn.Module):
    """regression_nf.Linear: y = x W^T (/ ||x||) + b, parameters under .linear."""

    def __init__(self, cin: int, cout: int, norm: bool = True):
        super().__init__()
        self.norm = norm
        self.linear = nn.Linear(cin, cout)

    def forward(self, x):
        y = x.matmul(self.linear.weight.t())
        if self.norm:
            y = y / torch.norm(x, dim=1, keepdim=True)
        return y + self.linear.bias


class OfficialRealNVP(nn.Module):
    """layers/real_nvp.RealNVP: mask buffer, t then s ModuleLists, prior not a module."""

    def __init__(self, dim: int):
        super().__init__()
        rows = [[0, 1], [1, 0]] if dim == 2 else [[0, 0, 1], [1, 1, 0]]
        self.prior = distributions.MultivariateNormal(torch.zeros(dim), torch.eye(dim))
        self.register_buffer("mask", torch.tensor(rows * 3, dtype=torch.float32))

        def net(tanh: bool):
            layers = [nn.Linear(dim, 64), nn.LeakyReLU(), nn.Linear(64, 64), nn.LeakyReLU()]
            return nn.Sequential(*layers, nn.Linear(64, dim), *([nn.Tanh()] if tanh else []))

        self.t = nn.ModuleList([net(False) for _ in range(6)])
        self.s = nn.ModuleList([net(True) for _ in range(6)])

    def log_prob(self, x):
        log_det_j, z = x.new_zeros(x.shape[0]), x
        for i in reversed(range(len(self.t))):
            z_ = self.mask[i] * z
            s = self.s[i](z_) * (1 - self.mask[i])
            t = self.t[i](z_) * (1 - self.mask[i])
            z = (1 - self.mask[i]) * (z - t) * torch.exp(-s) + z_
            log_det_j -= s.sum(dim=1)
        return self.prior.log_prob(z) + log_det_j


class OfficialResNet(nn.Module):
    """layers/Resnet.ResNet: torchvision's module names, no avgpool/fc."""

    def __init__(self, depth: int):
        super().__init__()
        tv = getattr(torchvision.models, f"resnet{depth}")()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(tv, name))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class OfficialRegressFlow(nn.Module):
    """regression_nf.RegressFlow (2D) and regression_nf_3d.RegressFlow3D (dim=3)."""

    def __init__(self, depth: int = 18, num_joints: int = 17, dim: int = 2):
        super().__init__()
        self.num_joints, self.dim = num_joints, dim
        self.preact = OfficialResNet(depth)
        channels = 512 if depth in (18, 34) else 2048
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fcs = nn.Sequential(nn.Identity())  # NUM_FC_FILTERS: [-1]
        self.fc_coord = OfficialLinear(channels, num_joints * dim)
        if dim == 2:
            self.fc_sigma = OfficialLinear(channels, num_joints * 2, norm=False)
            self.flow = OfficialRealNVP(2)
        else:
            self.fc_sigma = nn.Linear(channels, num_joints * 3)
            self.flow2d = OfficialRealNVP(2)
            self.flow3d = OfficialRealNVP(3)

    def forward(self, x):
        b = x.shape[0]
        feat = self.avg_pool(self.preact(x)).reshape(b, -1)
        pred_jts = self.fc_coord(feat).reshape(b, self.num_joints, self.dim)
        sigma = self.fc_sigma(feat).reshape(b, self.num_joints, -1).sigmoid()
        if self.dim == 3:
            sigma = sigma + 1e-9
        return pred_jts, sigma


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic random and O(1), so that a misplaced tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.add_(1.0)
    return model.eval()


def _official(depth=18, num_joints=17, dim=2, seed=0):
    torch.manual_seed(seed)
    return _randomized(OfficialRegressFlow(depth, num_joints, dim), seed)


def test_stand_in_has_the_official_key_names():
    keys = set(_official().state_dict())
    for key in (
        "preact.conv1.weight",
        "preact.bn1.running_var",
        "preact.layer1.0.conv1.weight",
        "preact.layer2.0.downsample.0.weight",
        "preact.layer2.0.downsample.1.running_mean",
        "fc_coord.linear.weight",
        "fc_coord.linear.bias",
        "fc_sigma.linear.weight",
        "fc_sigma.linear.bias",
        "flow.mask",
        "flow.s.0.0.weight",
        "flow.s.5.4.bias",
        "flow.t.3.2.weight",
    ):
        assert key in keys, key
    assert not any(k.startswith(("avg_pool", "fcs", "flow.prior")) for k in keys)


@pytest.mark.parametrize(
    "depth, num_joints", [(18, 17), pytest.param(50, 16, marks=pytest.mark.slow)]
)
def test_converted_model_predicts_like_the_official_one(tmp_path, depth, num_joints):
    official = _official(depth, num_joints)
    src, out = tmp_path / "final.pth", tmp_path / "converted.pt"
    torch.save(official.state_dict(), src)  # as scripts/train.py: m.module.state_dict()

    report = convert_official(src, out)
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["converted_from"] == "official"
    # a full run config: posereg eval / predict / info / init_from use it as any checkpoint
    cfg = from_dict(Config, ckpt["config"])
    assert cfg.model.backbone == report.config["backbone"] and cfg.model.pretrained is False
    assert get_skeleton(cfg.data.skeleton).num_keypoints == num_joints
    assert report.config["backbone"] == f"resnet{depth}"
    assert report.config["num_keypoints"] == num_joints and report.config["dim"] == 2
    assert set(report.filled) == {
        "head.criterion.flow.prior_loc",
        "head.criterion.flow.prior_scale",
    }
    assert report.dropped == [] and len(report.mapping) == len(official.state_dict())

    model = create_pose_model(**report.config)
    model.load_state_dict(ckpt["model"])  # strict
    model.eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        mu_ref, sigma_ref = official(x)
        out_ = model(x)
    torch.testing.assert_close(out_.mu, mu_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_.sigma, sigma_ref, rtol=1e-5, atol=1e-6)
    assert float(sigma_ref.std()) > 1e-3  # the comparison is not between constants

    residuals = 2 * torch.randn(100, 2)
    with torch.no_grad():
        torch.testing.assert_close(
            model.criterion.flow.log_prob(residuals), official.flow.log_prob(residuals)
        )
        # and the trained flow is not the prior: the flow's weights were really carried over
        prior = distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        assert not torch.allclose(official.flow.log_prob(residuals), prior.log_prob(residuals))


def test_dataparallel_prefix_and_wrapping_are_handled():
    official = _official()
    plain = convert_official_state_dict(official.state_dict())
    wrapped = {"state_dict": {"module." + k: v for k, v in official.state_dict().items()}}
    converted = convert_official_state_dict(wrapped)
    assert converted.state_dict.keys() == plain.state_dict.keys()
    for k, v in plain.state_dict.items():
        assert torch.equal(converted.state_dict[k], v), k
    assert official_to_posereg_key("module.flow.t.2.0.bias") == "head.criterion.flow.t.2.0.bias"


def test_missing_fc_sigma_names_the_keys(tmp_path):
    state = {k: v for k, v in _official().state_dict().items() if not k.startswith("fc_sigma")}
    src = tmp_path / "broken.pth"
    torch.save(state, src)
    with pytest.raises(ValueError) as info:
        convert_official(src, tmp_path / "out.pt")
    msg = str(info.value)
    assert "fc_sigma.linear.weight" in msg and "fc_sigma.linear.bias" in msg
    assert str(src) in msg
    assert not (tmp_path / "out.pt").exists()


def test_unknown_keys_and_wrong_shapes_are_reported():
    state = _official().state_dict()
    with pytest.raises(ValueError, match="no posereg counterpart: heatmap_head.weight"):
        convert_official_state_dict({**state, "heatmap_head.weight": torch.zeros(1)})
    bad = {**state, "fc_sigma.linear.bias": torch.zeros(5)}
    with pytest.raises(ValueError, match=r"fc_sigma.linear.bias: checkpoint \(5,\) vs \(34,\)"):
        convert_official_state_dict(bad)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_backbone_depth_is_inferred_from_block_counts(depth):
    with torch.device("meta"):  # names and shapes only
        trunk = getattr(torchvision.models, f"resnet{depth}")().state_dict()
    state = {f"preact.{k}": v for k, v in trunk.items() if not k.startswith("fc.")}
    state["fc_coord.linear.weight"] = torch.zeros(14 * 2, 8)
    state["flow.mask"] = torch.zeros(6, 2)
    config = infer_official_config(state)
    assert config["backbone"] == f"resnet{depth}" and config["num_keypoints"] == 14


def test_regressflow3d_converts_with_flow3d_and_plain_fc_sigma():
    official = _official(num_joints=5, dim=3)
    report = convert_official_state_dict(official.state_dict())
    assert report.variant == "RegressFlow3D" and report.config["dim"] == 3
    assert report.mapping["fc_sigma.weight"] == "head.fc_sigma.linear.weight"
    assert report.mapping["flow3d.s.0.0.weight"] == "head.criterion.flow.s.0.0.weight"
    assert all(k.startswith("flow2d.") for k in report.dropped) and report.dropped
    assert any("root-relative" in note for note in report.notes)

    model = create_pose_model(**report.config)
    model.load_state_dict(report.state_dict)
    model.eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        mu_ref, sigma_ref = official(x)
        out = model(x)
        residuals = torch.randn(50, 3)
        torch.testing.assert_close(
            model.criterion.flow.log_prob(residuals), official.flow3d.log_prob(residuals)
        )
    torch.testing.assert_close(out.mu, mu_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.sigma, sigma_ref, rtol=1e-5, atol=1e-6)


def test_official_3d_checkpoint_loads_and_predicts_through_the_one_path(tmp_path):
    """A converted RegressFlow3D file: model_from_checkpoint rebuilds it, TopDownModel.predict
    returns the official (u, v, depth) and sigma, with and without the flip test."""
    from posereg.convert import convert_official
    from posereg.models.build import model_from_checkpoint
    from posereg.skeletons import H36M17

    official = _official(num_joints=17, dim=3, seed=4)
    src = tmp_path / "official_3d.pth"
    torch.save({"model": official.state_dict()}, src)
    convert_official(src, tmp_path / "converted.pt")
    model, cfg, _ = model_from_checkpoint(tmp_path / "converted.pt")
    assert cfg.data.skeleton == "h36m17" and cfg.model.head_options == {"dim": 3}
    model.eval()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        mu_ref, sigma_ref = official(x)
        decoded = model.predict(x)
        flipped = model.predict(x, flip_test=True, flip_index=H36M17.flip_index)
    assert decoded.keypoints.shape == (2, 17, 3)
    torch.testing.assert_close(decoded.keypoints, mu_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(decoded.sigma, sigma_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(decoded.scores, 1 - sigma_ref.mean(-1), rtol=1e-5, atol=1e-6)
    # the flip test averages with the mirrored crop's output: depth is not mirrored, u is
    with torch.no_grad():
        mu_f, _ = official(x.flip(-1))
    perm = torch.as_tensor(H36M17.flip_index)
    back_depth = mu_f[:, perm, 2]
    torch.testing.assert_close(
        flipped.keypoints[..., 2], (mu_ref[..., 2] + back_depth) / 2, rtol=1e-5, atol=1e-6
    )


def test_official_3d_checkpoint_predicts_root_relative_depth_through_predictor(tmp_path):
    """A converted RegressFlow3D file on disk -> Predictor: per-joint depth in mm, root-relative
    at the pelvis as the official model makes it at evaluation ((z - z[0]) x 2000 mm)."""
    from posereg.convert import convert_official
    from posereg.data.dataset import image_to_tensor
    from posereg.data.transforms import box_to_center_scale, get_affine_transform, warp_crop
    from posereg.predict import Predictor, result_entries

    official = _official(num_joints=17, dim=3, seed=5)
    src = tmp_path / "official_3d.pth"
    torch.save({"model": official.state_dict()}, src)
    convert_official(src, tmp_path / "converted.pt")
    predictor = Predictor.from_checkpoint(tmp_path / "converted.pt", device="cpu", flip_test=False)
    image = np.random.default_rng(0).integers(0, 255, (300, 280, 3), dtype=np.uint8)
    box = np.array([[40.0, 20.0, 150.0, 240.0]])
    result = predictor(image, boxes=box)
    center, scale = box_to_center_scale(box, 1.0, 1.25)
    crop = warp_crop(image, get_affine_transform(center[0], scale[0], 0.0, (256, 256)), (256, 256))
    with torch.no_grad():
        mu, sigma = official(image_to_tensor(crop)[None])
    expected = ((mu[..., 2] - mu[:, :1, 2]) * 2000.0).numpy()
    np.testing.assert_allclose(result.depth, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(result.depth_sigma, sigma[..., 2].numpy() * 2000.0, rtol=1e-4)
    assert result.depth[0, 0] == 0.0
    entry = result_entries(result, image_id=1)[0]
    assert len(entry["depth"]) == 17 and entry["depth"][0] == 0.0
