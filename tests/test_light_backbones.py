"""Light backbones (issue 18 §1): every one builds with its real stride and channels, loads
torchvision's/timm's state_dicts one to one, trains two steps with each head and exports to ONNX
with ONNX Runtime parity; the map heads follow the backbone's stride; bad names and widths are
one clear error each.

The matrix is every light backbone with the regression head (train + export), and every head,
the 3D ones too, with one light backbone (MobileNetV3-Small; train + export): all at 64x64 or
64x48, so the file runs in about a minute on one core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from _real_data import tiny_config
from posereg.config import ConfigError, load_config, to_dict
from posereg.models import HEADS, create_backbone, create_head, create_pose_model
from posereg.models import backbones as bb
from posereg.models.build import backbone_stride_of, build_model, codec_for

pytest.importorskip("onnxruntime")
from posereg.export import check_onnx, export_onnx  # noqa: E402

timm = pytest.importorskip("timm")

#: name -> (C, the torchvision node whose output the trunk must equal)
TORCHVISION_LIGHT = {
    "mobilenet_v2": (1280, "features"),
    "mobilenet_v3_small": (576, "features"),
    "mobilenet_v3_large": (960, "features"),
    "shufflenet_v2_x0_5": (1024, "conv5"),
    "shufflenet_v2_x1_0": (1024, "conv5"),
    "regnet_y_400mf": (440, "trunk_output"),
    "regnet_y_800mf": (784, "trunk_output"),
    "efficientnet_b0": (1280, "features"),
}
#: tiny timm models, random init (no download): name -> C of the last features_only map
TIMM_LIGHT = {"timm:mobilenetv3_small_050": 288, "timm:resnet10t": 512}
K = 5
REPO = Path(__file__).resolve().parents[1]


def _randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so that a state_dict that loads wrongly shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))


def test_the_light_list_is_every_light_backbone():
    assert set(bb.LIGHT_BACKBONES) == set(TORCHVISION_LIGHT)
    assert set(bb.LIGHT_BACKBONES) <= set(bb.BACKBONES)


@pytest.mark.parametrize("name", list(TORCHVISION_LIGHT))
def test_torchvision_weights_load_one_to_one_and_features_match(tmp_path, name):
    """A torchvision state_dict (with its classifier) loads into the trunk; the trunk's output
    is torchvision's own feature extractor's at the named node; stride 32 and C as documented."""
    channels, node = TORCHVISION_LIGHT[name]
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().eval()
    _randomize_bn(reference)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    ours, c = create_backbone(name, pretrained=path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = create_feature_extractor(reference, {node: "out"})(x)["out"]
        got = ours.eval()(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert c == ours.out_channels == channels
    assert got.shape == (1, channels, 64 // 32, 96 // 32)
    assert ours.stride == bb.backbone_stride(name) == 32


@pytest.mark.parametrize("name", list(TIMM_LIGHT))
def test_timm_model_by_name_reports_its_features(name):
    module, channels = create_backbone(name)
    assert channels == TIMM_LIGHT[name]
    with torch.no_grad():
        out = module.eval()(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, channels, 2, 3)
    assert module.stride == bb.backbone_stride(name) == 32


def test_timm_stride_follows_the_model():
    """A timm ResNet at output_stride 16 (dilated last stage) reports 16, and a heatmap head on it
    makes maps at 16 / 2**num_deconv of the input, which the codec and the loss agree with."""
    model = create_pose_model(
        "timm:resnet10t", num_keypoints=K, head="heatmap", input_size=(48, 48),
        backbone_options={"output_stride": 16}, head_options={"num_deconv": 2, "deconv_channels": 16},
    )  # fmt: skip
    assert model.backbone.stride == 16
    out = model(torch.randn(2, 3, 48, 48))
    assert out.heatmaps.shape[-2:] == model.head.codec.heatmap_size == (12, 12)  # stride 4
    with pytest.raises(ValueError, match=r"multiples of 16 .*'timm:resnet10t'.* e\.g\. 48x64"):
        create_pose_model(
            "timm:resnet10t", head="integral", input_size=(48, 56),
            backbone_options={"output_stride": 16},
        )  # fmt: skip


def test_timm_weights_file_loads_and_a_wrong_file_is_named(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model("resnet10t").eval()  # with its classifier
    _randomize_bn(reference)
    path = tmp_path / "resnet10t.pth"
    torch.save(reference.state_dict(), path)
    ours, _ = create_backbone("timm:resnet10t", pretrained=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.forward_features(x))
    wrong = tmp_path / "mobilenet.pth"
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), wrong)
    with pytest.raises(ValueError, match=f"{wrong}: not the weights of timm's 'resnet10t'"):
        create_backbone("timm:resnet10t", pretrained=wrong)
    with pytest.raises(FileNotFoundError, match="pretrained weights file not found"):
        create_backbone("timm:resnet10t", pretrained=tmp_path / "absent.pth")
    state = reference.state_dict()
    state["layer4.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"layer4\.0\.conv1\.weight"):
        create_backbone("timm:resnet10t", pretrained=path)


def test_light_pretrained_true_offline_names_the_file_and_uses_the_hub_cache(monkeypatch, tmp_path):
    """The ResNets' no-download rule: offline -> one error naming the file to fetch, fast; a file
    in the torch hub cache is used without the network."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache
    monkeypatch.setattr(bb, "_probe", lambda url, timeout: f"cannot connect to {url}")

    def no_download(*args, **kwargs):
        raise AssertionError("must not try to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(bb.PretrainedWeightsUnavailable) as info:
        create_backbone("mobilenet_v3_small", pretrained=True)
    assert "pretrained='/path/to/mobilenet_v3_small-047dcff4.pth'" in str(info.value)
    assert "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth" in str(info.value)

    torch.manual_seed(1)
    reference = torchvision.models.mobilenet_v3_small()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "mobilenet_v3_small-047dcff4.pth")
    ours, _ = create_backbone("mobilenet_v3_small", pretrained=True)
    torch.testing.assert_close(ours.features[0][0].weight, reference.features[0][0].weight)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(bb.PretrainedWeightsUnavailable, match="HF_HUB_OFFLINE=1"):
        create_backbone("timm:resnet10t", pretrained=True)


def test_bad_names_list_the_valid_ones():
    with pytest.raises(ValueError) as info:
        create_backbone("mobilenet_v4")
    for name in (*bb.BACKBONES, "timm:<name>"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="close names: .*timm:mobilenetv3_small_050"):
        create_backbone("timm:mobilenetv3_small_05")
    with pytest.raises(ValueError, match="head_options 'stride': set by the backbone"):
        create_pose_model("mobilenet_v3_small", head="heatmap", head_options={"stride": 16})


def test_an_unknown_timm_name_is_named_before_any_download(monkeypatch):
    def no_network(url, timeout):
        raise AssertionError("must not probe the network for a model timm does not have")

    monkeypatch.setattr(bb, "_probe", no_network)
    with pytest.raises(ValueError, match="unknown timm model 'resnet10x'"):
        create_backbone("timm:resnet10x", pretrained=True)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "timm:resnet10t", "hrnet_w32"])
def test_width_on_a_backbone_without_one_is_an_error(name):
    with pytest.raises(ValueError, match=f"backbone '{name}' has no width multiplier"):
        create_backbone(name, width=0.5)


def _config(tmp_path: Path, **model) -> Path:
    return tiny_config(tmp_path, model={"width": 1.0, **model})


def test_config_errors_name_the_key(tmp_path):
    cfg = load_config(_config(tmp_path, backbone="mobilenet_v3_small", width=0.25))
    with pytest.raises(ConfigError, match=r"model.width: 0.25, .*'mobilenet_v3_small'.*resnet18"):
        codec_for(cfg)
    cfg = load_config(_config(tmp_path, backbone="mobilenet_v9"))
    with pytest.raises(ConfigError, match=r"model.backbone: unknown backbone 'mobilenet_v9'"):
        codec_for(cfg)
    cfg = load_config(_config(tmp_path, backbone="timm:resnet10t"))
    assert backbone_stride_of(cfg) == 32


def test_a_map_head_names_the_backbone_and_its_stride(tmp_path):
    """A heatmap head at 64x48 on a MobileNet: the config's codec is refused with the backbone's
    name and stride (the message ``posereg train`` prints as its one error line)."""
    cfg = load_config(_config(tmp_path, backbone="mobilenet_v3_small", head="heatmap"))
    with pytest.raises(ValueError) as info:
        codec_for(cfg)
    msg = str(info.value)
    assert "multiples of 32" in msg and "'mobilenet_v3_small'" in msg, msg
    assert "got 64x48; e.g. 64x64" in msg, msg
    with pytest.raises(ValueError, match=r"multiples of 32 .*'efficientnet_b0'.* got 64x40"):
        create_pose_model("efficientnet_b0", head="integral_rle", input_size=(64, 40))
    with pytest.raises(ValueError, match="num_deconv=6: 64x upsampling of stride-32 features"):
        create_head("heatmap", 8, K, (64, 64), num_deconv=6)


def _targets(model: nn.Module, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded targets of random in-crop keypoints (the head's own codec), batched."""
    rng = np.random.default_rng(seed)
    h, w = model.head.input_size
    encoded = [
        model.head.codec.encode(rng.uniform(4, [w - 4, h - 4], (K, 2)), np.full(K, 2))
        for _ in range(batch)
    ]
    target = torch.from_numpy(np.stack([e.target for e in encoded])).float()
    weight = torch.from_numpy(np.stack([e.target_weight for e in encoded])).float()
    return target, weight


def _train_two_steps_and_export(
    tmp_path: Path, backbone: str, head: str, size, dim: int = 2, **head_options
) -> None:
    torch.manual_seed(0)
    if head != "regression":
        head_options = {"deconv_channels": 16, **head_options}
    model = create_pose_model(
        backbone, num_keypoints=K, dim=dim, head=head, input_size=size, head_options=head_options
    )
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    if model.head.dim == 3:  # 3D joints, crop-normalized (the 3D datasets' targets)
        target = torch.rand(2, K, 3, generator=torch.Generator().manual_seed(0)) * 0.8 - 0.4
        weight = torch.ones(2, K, 3)
    else:
        target, weight = _targets(model, 2, seed=0)
    model.train()
    for _ in range(2):
        loss = model.loss(model(images), target, weight)
        assert torch.isfinite(loss), (backbone, head, float(loss))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # every trainable tensor moved: the backbone's first and last layers, and the head's
    first = next(k for k in before if k.startswith("backbone."))
    last = [k for k in before if k.startswith("backbone.") and k.endswith("weight")][-1]
    for k in (first, last, *[k for k in before if k.startswith("head.")][:2]):
        assert not torch.equal(before[k], dict(model.named_parameters())[k]), (backbone, head, k)

    path = export_onnx(model, tmp_path / "model.onnx", size)
    assert check_onnx(model, path, atol=1e-4, batch_sizes=(1, 2)) < 1e-4


SIZES = {"regression": (64, 48), "heatmap": (64, 64), "integral": (64, 64)}
SIZES["integral_rle"] = (64, 64)


@pytest.mark.parametrize("backbone", [*TORCHVISION_LIGHT, *TIMM_LIGHT])
def test_every_light_backbone_trains_and_exports_with_the_regression_head(tmp_path, backbone):
    _train_two_steps_and_export(tmp_path, backbone, "regression", SIZES["regression"])


@pytest.mark.parametrize("head", [h for h in HEADS if h != "regression"])
def test_every_head_trains_and_exports_on_a_light_backbone(tmp_path, head):
    """The heads see only (B, C, h, w) features: one light backbone covers them (a timm model's
    heatmap head at another stride: test_timm_stride_follows_the_model)."""
    _train_two_steps_and_export(tmp_path, "mobilenet_v3_small", head, SIZES[head])


def test_synth_light_is_synth_rle_with_the_smallest_backbone():
    """Same data, input, optimizer, schedule, budget and evaluation as the main job: only the
    backbone differs (and the width a light backbone does not have), so the runs compare."""
    light = to_dict(load_config(REPO / "configs" / "synth_light.yaml"))
    main = to_dict(load_config(REPO / "configs" / "synth_rle.yaml"))
    for section in ("data", "optim", "train", "eval"):
        assert light[section] == main[section], section
    assert light["model"] == {**main["model"], "backbone": "shufflenet_v2_x0_5", "width": 1.0}
    assert bb.LIGHT_BACKBONES[0] == "shufflenet_v2_x0_5"  # the smallest (params, FLOPs)


def test_coco_light_recipe_builds_mmposes_model():
    """MobileNetV2 (1280 channels at stride 32) + the RLE regression head at 256x192, MMPose's
    schedule (Adam 1e-3, 210 epochs, x0.1 at 170 and 200, 500 warm-up steps, 64 per GPU)."""
    cfg = load_config(
        REPO / "configs" / "coco_mobilenetv2_256x192_rle.yaml",
        ["model.pretrained=false"],
    )
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.milestones) == ("adam", 1e-3, [170, 200])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.warmup_steps) == (210, 64, 500)
    model = build_model(cfg)
    assert model.backbone.out_channels == 1280 and model.backbone.stride == 32
    assert model.head.fc_coord.linear.in_features == 1280 and model.head.input_size == (256, 192)
    assert type(model.head.criterion).__name__ == "RLELoss"


@pytest.mark.parametrize(
    ("head", "dim", "options"), [("regression", 3, {}), ("integral_rle", 2, {"depth": 4})],
    ids=["regression_3d", "integral_rle_volumetric"],
)  # fmt: skip
def test_the_3d_heads_train_and_export_on_a_light_backbone(tmp_path, head, dim, options):
    _train_two_steps_and_export(tmp_path, "mobilenet_v3_small", head, (64, 64), dim, **options)
