"""Backbones: every name builds and runs, width scaling, torchvision/timm weights, offline errors."""

from __future__ import annotations

import math
import sys
import time

import pytest
import torch
import torchvision
from torch import nn

from posereg.models import backbones as bb
from posereg.models import create_backbone, create_pose_model, init_from_checkpoint

RESNET_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
RESNET_CHANNELS["resnet152"] = 2048


def _randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so that loading them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize("name", list(bb.BACKBONES))
def test_every_backbone_builds_and_gives_finite_features(name):
    if name.startswith("hrnet"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    module, channels = create_backbone(name)
    if name in RESNET_CHANNELS:
        assert channels == RESNET_CHANNELS[name]
    h, w = (64, 64) if name.startswith("hrnet") else (64, 48)  # HRNet needs H, W % 32 == 0
    module.eval()
    with torch.no_grad():
        features = module(torch.randn(1, 3, h, w))
    assert features.shape == (1, channels, math.ceil(h / 32), math.ceil(w / 32))  # stride 32
    assert torch.isfinite(features).all()
    assert float(features.abs().sum()) > 0


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_width_half_halves_every_stage_and_quarters_parameters(name):
    full, c_full = create_backbone(name)
    half, c_half = create_backbone(name, width=0.5)
    assert c_half == c_full // 2
    full_convs = {k: p.shape for k, p in full.named_parameters() if p.dim() == 4}
    half_convs = {k: p.shape for k, p in half.named_parameters() if p.dim() == 4}
    assert full_convs.keys() == half_convs.keys()  # same names, so same structure
    for k, shape in full_convs.items():
        assert half_convs[k][0] == shape[0] // 2, k
    ratio = sum(p.numel() for p in half.parameters()) / sum(p.numel() for p in full.parameters())
    assert 0.24 < ratio < 0.26


def test_resnet_has_torchvision_keys_and_parameter_count():
    ours, _ = create_backbone("resnet50")
    theirs = torchvision.models.resnet50().state_dict()
    assert set(theirs) - set(ours.state_dict()) == {"fc.weight", "fc.bias"}
    assert set(ours.state_dict()) <= set(theirs)


def _torchvision_trunk(model: torchvision.models.ResNet) -> nn.Module:
    return nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc


@pytest.mark.parametrize("old_style", [False, True])
def test_torchvision_state_dict_loads_and_features_match(tmp_path, old_style):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    _randomize_bn(reference)
    state = reference.state_dict()
    if old_style:  # torchvision's hub files predate num_batches_tracked; DataParallel prefix
        state = {"module." + k: v for k, v in state.items() if "num_batches_tracked" not in k}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    ours, _ = create_backbone("resnet18", pretrained=str(path))
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = _torchvision_trunk(reference.eval())(x)
        got = ours.eval()(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # a fresh random backbone does not match: loading the file is what made them equal
    fresh, _ = create_backbone("resnet18")
    with torch.no_grad():
        assert not torch.allclose(fresh.eval()(x), expected, atol=1e-3)


def test_mismatched_weights_file_names_the_keys(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(ValueError) as info:
        create_backbone("resnet18", pretrained=path)
    msg = str(info.value)
    assert str(path) in msg
    assert "shape mismatches" in msg and "layer1.0.conv1.weight" in msg
    assert "unexpected keys" in msg and "conv3.weight" in msg  # Bottleneck-only layers


def test_missing_weights_file_and_posereg_checkpoint_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("resnet18", pretrained=tmp_path / "nope.pth")
    model = create_pose_model("resnet18", width=0.25)
    path = tmp_path / "run.pt"
    torch.save({"model": model.state_dict(), "config": {"backbone": "resnet18"}}, path)
    with pytest.raises(ValueError, match="init_from_checkpoint"):
        create_backbone("resnet18", pretrained=path)


def test_pretrained_needs_width_one():
    with pytest.raises(ValueError, match="width 1.0"):
        create_backbone("resnet18", pretrained=True, width=0.5)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        create_backbone("resnet19")
    for name in bb.BACKBONES:
        assert name in str(info.value)


def test_unknown_option_is_a_value_error():
    with pytest.raises(ValueError, match="does not take options"):
        create_backbone("resnet18", dilation=2)


def _no_download(*args, **kwargs):
    raise AssertionError("must not try to download")


def test_pretrained_true_fails_fast_when_the_network_hangs(monkeypatch, tmp_path):
    """A firewall that drops packets (no answer at all) must not hang create_backbone."""

    def hang(*args, **kwargs):
        time.sleep(60)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache
    monkeypatch.setattr(bb.socket, "create_connection", hang)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
    monkeypatch.setattr(bb, "DOWNLOAD_PROBE_TIMEOUT_S", 0.5)
    start = time.perf_counter()
    with pytest.raises(bb.PretrainedWeightsUnavailable) as info:
        create_backbone("resnet50", pretrained=True)
    assert time.perf_counter() - start < 3.0
    msg = str(info.value)
    assert "within 0.5 s" in msg
    assert "pretrained='/path/to/resnet50-0676ba61.pth'" in msg  # what to do instead
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg


def test_pretrained_true_offline_here(monkeypatch, tmp_path):
    """The real network path: an offline machine gets the clear error within seconds."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def online(*args, **kwargs):
        pytest.skip("this machine is online: the offline error cannot be observed here")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", online)
    assert bb.DOWNLOAD_PROBE_TIMEOUT_S <= 5
    start = time.perf_counter()
    with pytest.raises(bb.PretrainedWeightsUnavailable, match="Pass a local weights file"):
        create_backbone("resnet18", pretrained=True)
    assert time.perf_counter() - start < bb.DOWNLOAD_PROBE_TIMEOUT_S + 2


def test_pretrained_true_uses_the_hub_cache_without_network(monkeypatch, tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(bb.socket, "create_connection", _no_download)
    ours, _ = create_backbone("resnet18", pretrained=True)
    torch.testing.assert_close(ours.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(ours.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_timm_backbone_without_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match=r"posereg\[timm\]"):
        create_backbone("hrnet_w32")


def test_timm_pretrained_true_fails_fast_offline(monkeypatch):
    pytest.importorskip("timm")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(bb, "_probe", lambda url, timeout: f"cannot connect to {url}")
    with pytest.raises(bb.PretrainedWeightsUnavailable, match="HF_HUB_OFFLINE=1"):
        create_backbone("hrnet_w32", pretrained=True)
    with pytest.raises(ValueError, match="no width multiplier"):
        create_backbone("hrnet_w32", width=0.5)


def test_timm_weights_file_loads_and_features_match(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("hrnet_w32").eval()  # with its classifier
    _randomize_bn(reference)
    path = tmp_path / "hrnet_w32.pth"
    torch.save(reference.state_dict(), path)
    ours, channels = create_backbone("hrnet_w32", pretrained=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.forward_features(x))
    assert channels == reference.num_features == 2048


def test_init_from_checkpoint_copies_the_backbone(tmp_path):
    torch.manual_seed(0)
    source = create_pose_model("resnet18", width=0.25)
    _randomize_bn(source.backbone)
    path = tmp_path / "heatmap_run.pt"
    config = {"model": {"backbone": "resnet18", "width": 0.25}}
    torch.save({"model": source.state_dict(), "config": config}, path)

    target, _ = create_backbone("resnet18", width=0.25)
    assert init_from_checkpoint(target, path) == len(source.backbone.state_dict())
    for k, v in source.backbone.state_dict().items():
        torch.testing.assert_close(target.state_dict()[k], v, rtol=0, atol=0)

    other, _ = create_backbone("resnet18", width=0.5)
    with pytest.raises(ValueError, match=r"shape mismatches.*'width': 0.25"):
        init_from_checkpoint(other, path)
    with pytest.raises(ValueError, match="prefixes found: backbone., head."):
        init_from_checkpoint(target, path, prefix="encoder.")
    bare = tmp_path / "bare.pth"
    torch.save(source.backbone.state_dict(), bare)
    with pytest.raises(ValueError, match="not a posereg checkpoint"):
        init_from_checkpoint(target, bare)
