"""Backbones: images (B, 3, H, W) -> feature maps (B, C, h, w).

ResNets (He et al., CVPR 2016) are built here from torchvision's block classes and keep
torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so at width 1.0 a
torchvision ImageNet state_dict and the ``preact.*`` backbone of an official RLE checkpoint
load one to one. HRNets come from timm (optional extra ``posereg[timm]``).

Light backbones for deployment are torchvision's classification networks without their pooling
and classifier (:class:`TorchvisionTrunk`: MobileNetV2/V3, ShuffleNetV2, RegNetY,
EfficientNet-B0, with torchvision's module names, so its ImageNet state_dicts load one to one),
and any timm model by ``timm:<name>`` (its last ``features_only`` map, :class:`TimmFeatures`).

Every backbone reports ``out_channels`` (C) and ``stride`` (input pixels per feature pixel): the
map heads size their maps from the stride, not from an assumed 32.

One entry point, :func:`create_backbone`; each name is a small factory in ``BACKBONES``.
"""

from __future__ import annotations

import difflib
import os
import socket
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from posereg.torchfile import (
    CHECKPOINT_WHAT,
    check_finite,
    read_safetensors_file,
    read_torch_file,
)

__all__ = [
    "BACKBONES",
    "DOWNLOAD_PROBE_TIMEOUT_S",
    "LIGHT_BACKBONES",
    "PretrainedWeightsUnavailable",
    "ResNetTrunk",
    "TIMM_PREFIX",
    "TimmBackbone",
    "TimmFeatures",
    "TorchvisionTrunk",
    "WIDTH_BACKBONES",
    "backbone_stride",
    "create_backbone",
    "init_from_checkpoint",
    "load_weights",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "hrnet_w32",
    "hrnet_w48",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "regnet_y_400mf",
    "regnet_y_800mf",
    "efficientnet_b0",
]

#: Seconds to wait for a TCP connection to the weights server before giving up. Downloads of
#: ``pretrained=True`` weights are attempted only after this probe succeeds, so an offline
#: machine (DNS failure, or a firewall that silently drops packets) fails in seconds.
DOWNLOAD_PROBE_TIMEOUT_S = 3.0


class PretrainedWeightsUnavailable(RuntimeError):
    """``pretrained=True`` weights cannot be downloaded (offline); pass a local file instead."""


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without avgpool/fc (conv1 .. layer4), with a width multiplier.

    Every stage's channels (the stem's 64 and the planes 64, 128, 256, 512) are multiplied by
    ``width``, so width 0.5 halves all channels and divides the parameter count by about 4.
    Initialisation follows torchvision (kaiming-normal fan-out convs, BN weight 1, bias 0).

    Arguments:
        block: ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50/101/152).
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        width: channel multiplier (> 0).
        norm_layer: normalization class for the 2D feature maps.
        zero_init_residual: zero the last BN of each block (torchvision option).

    Attributes:
        out_channels: C of the output feature map (512 * width * block.expansion).
        stride: 32 (input pixels per feature pixel).

    Example:
        >>> trunk = ResNetTrunk(BasicBlock, (2, 2, 2, 2), width=0.25)
        >>> trunk(torch.randn(1, 3, 64, 48)).shape  # stride 32
        torch.Size([1, 128, 2, 2])
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        width: float = 1.0,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        if len(layers) != 4:
            raise ValueError(f"a ResNet has 4 stages, got layers={tuple(layers)}")

        def scaled(channels: int) -> int:
            return max(1, round(channels * width))

        self._norm_layer = norm_layer
        self.inplanes = scaled(64)
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, scaled(64), layers[0])
        self.layer2 = self._make_layer(block, scaled(128), layers[1], stride=2)
        self.layer3 = self._make_layer(block, scaled(256), layers[2], stride=2)
        self.layer4 = self._make_layer(block, scaled(512), layers[3], stride=2)
        self.out_channels = self.inplanes
        self.stride = 32

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                self._norm_layer(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer=self._norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [
            block(self.inplanes, planes, norm_layer=self._norm_layer) for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """images (B, 3, H, W) -> features (B, C, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64w, H/4, W/4)
        x = self.layer1(x)  # (B, 64w * e, H/4, W/4), e = block.expansion
        x = self.layer2(x)  # (B, 128w * e, H/8, W/8)
        x = self.layer3(x)  # (B, 256w * e, H/16, W/16)
        return self.layer4(x)  # (B, 512w * e, H/32, W/32)


def _import_timm(name: str) -> Any:
    try:
        import timm
    except ImportError:
        raise ImportError(
            f"backbone {name!r} comes from timm, which is not installed: "
            "pip install 'posereg[timm]' (or pip install timm)"
        ) from None
    return timm


class TimmBackbone(nn.Module):
    """A timm model's final feature map (``forward_features``; no pooling, no classifier).

    For HRNet this is the ImageNet-classification trunk's last map: the four branches merged
    by the incre/downsample modules into 2048 channels at stride 32, which is what a global
    average pool + FC regression head expects (like the ResNet case). Inputs must have H and
    W divisible by 32.

    Arguments:
        name: timm model name.
        pretrained: download timm's weights (needs the network; see create_backbone).
        kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Attributes:
        out_channels: C of the output feature map.
        stride: 32.
    """

    def __init__(self, name: str, pretrained: bool = False, **kwargs: Any) -> None:
        super().__init__()
        timm = _import_timm(name)
        self.model = timm.create_model(
            name, pretrained=pretrained, num_classes=0, global_pool="", **kwargs
        )
        self.out_channels: int = self.model.num_features
        self.stride = 32
        #: Key prefix of the classifier in timm's checkpoints of this model (absent here).
        self.classifier_prefix: str = self.model.pretrained_cfg.get("classifier") or "classifier"

    def forward(self, x: Tensor) -> Tensor:
        """images (B, 3, H, W) -> features (B, C, H/32, W/32)."""
        return self.model.forward_features(x)


def resnet18(width: float = 1.0, **kwargs: Any) -> ResNetTrunk:
    """ResNet-18 trunk: BasicBlock (2, 2, 2, 2), C = 512 * width."""
    return ResNetTrunk(BasicBlock, (2, 2, 2, 2), width, **kwargs)


def resnet34(width: float = 1.0, **kwargs: Any) -> ResNetTrunk:
    """ResNet-34 trunk: BasicBlock (3, 4, 6, 3), C = 512 * width."""
    return ResNetTrunk(BasicBlock, (3, 4, 6, 3), width, **kwargs)


def resnet50(width: float = 1.0, **kwargs: Any) -> ResNetTrunk:
    """ResNet-50 trunk: Bottleneck (3, 4, 6, 3), C = 2048 * width (the paper's default)."""
    return ResNetTrunk(Bottleneck, (3, 4, 6, 3), width, **kwargs)


def resnet101(width: float = 1.0, **kwargs: Any) -> ResNetTrunk:
    """ResNet-101 trunk: Bottleneck (3, 4, 23, 3), C = 2048 * width."""
    return ResNetTrunk(Bottleneck, (3, 4, 23, 3), width, **kwargs)


def resnet152(width: float = 1.0, **kwargs: Any) -> ResNetTrunk:
    """ResNet-152 trunk: Bottleneck (3, 8, 36, 3), C = 2048 * width."""
    return ResNetTrunk(Bottleneck, (3, 8, 36, 3), width, **kwargs)


#: The backbones that take a width multiplier (``model.width``).
WIDTH_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _no_width(name: str, width: float) -> None:
    if width != 1.0:
        raise ValueError(
            f"backbone {name!r} has no width multiplier (model.width applies to "
            f"{', '.join(WIDTH_BACKBONES)}); got width={width:g}, use 1.0 or a smaller backbone"
        )


def hrnet_w32(width: float = 1.0, **kwargs: Any) -> TimmBackbone:
    """HRNet-W32 (timm ``hrnet_w32``), C = 2048 at stride 32."""
    _no_width("hrnet_w32", width)
    return TimmBackbone("hrnet_w32", **kwargs)


def hrnet_w48(width: float = 1.0, **kwargs: Any) -> TimmBackbone:
    """HRNet-W48 (timm ``hrnet_w48``), C = 2048 at stride 32."""
    _no_width("hrnet_w48", width)
    return TimmBackbone("hrnet_w48", **kwargs)


# --- light backbones -------------------------------------------------------------------


class TorchvisionTrunk(nn.Module):
    """A torchvision classification network without its pooling and classifier.

    The children that make the trunk (``features`` for MobileNet/EfficientNet, ``stem`` +
    ``trunk_output`` for RegNet, ``conv1`` .. ``conv5`` for ShuffleNetV2) are kept under their
    torchvision names and run in order, so torchvision's ImageNet state_dict loads one to one
    (the dropped children's keys, the classifier's, are ignored by :func:`load_weights`).

    Arguments:
        network: the torchvision classification network.
        trunk: names of its children that make the trunk, in the order its forward runs them.
        out_channels: C of the last child's output.
        stride: input pixels per output pixel (32 for every network here).

    Attributes:
        out_channels: C.
        stride: the output stride.
        ignored_prefixes: key prefixes of the dropped children (``classifier.``, ``fc.``).

    Example:
        >>> import torchvision
        >>> trunk = TorchvisionTrunk(torchvision.models.mobilenet_v3_small(), ["features"], 576)
        >>> trunk(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 576, 2, 2])
    """

    def __init__(
        self, network: nn.Module, trunk: Sequence[str], out_channels: int, stride: int = 32
    ) -> None:
        super().__init__()
        children = dict(network.named_children())
        for name in trunk:
            self.add_module(name, children[name])
        self.trunk = tuple(trunk)
        self.out_channels = out_channels
        self.stride = stride
        self.ignored_prefixes = tuple(f"{name}." for name in children if name not in trunk)

    def forward(self, x: Tensor) -> Tensor:
        """images (B, 3, H, W) -> features (B, C, H/stride, W/stride) (rounded up)."""
        for name in self.trunk:
            x = getattr(self, name)(x)
        return x


def _torchvision(
    name: str, trunk: Sequence[str], channels: int, width: float, **kwargs: Any
) -> TorchvisionTrunk:
    """torchvision's ``name`` network, random init (weights are loaded by create_backbone)."""
    _no_width(name, width)
    network = getattr(torchvision.models, name)(weights=None, **kwargs)
    return TorchvisionTrunk(network, trunk, channels)


def mobilenet_v2(width: float = 1.0, **kwargs: Any) -> TorchvisionTrunk:
    """MobileNetV2 (Sandler et al., CVPR 2018), ``features``: C = 1280 at stride 32."""
    return _torchvision("mobilenet_v2", ["features"], 1280, width, **kwargs)


def mobilenet_v3_small(width: float = 1.0, **kwargs: Any) -> TorchvisionTrunk:
    """MobileNetV3-Small (Howard et al., ICCV 2019), ``features``: C = 576 at stride 32."""
    return _torchvision("mobilenet_v3_small", ["features"], 576, width, **kwargs)


def mobilenet_v3_large(width: float = 1.0, **kwargs: Any) -> TorchvisionTrunk:
    """MobileNetV3-Large, ``features``: C = 960 at stride 32."""
    return _torchvision("mobilenet_v3_large", ["features"], 960, width, **kwargs)


_SHUFFLENET_TRUNK = ["conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"]


def shufflenet_v2_x0_5(width: float = 1.0, **kwargs: Any) -> TorchvisionTrunk:
    """ShuffleNetV2 x0.5 (Ma et al., ECCV 2018), conv1 .. conv5: C = 1024 at stride 32."""
    return _torchvision("shufflenet_v2_x0_5", _SHUFFLENET_TRUNK, 1024, width, **kwargs)


def shufflenet_v2_x1_0(width: float = 1.0, **kwargs: Any) -> TorchvisionTrunk:
    """ShuffleNetV2 x1.0, conv1 .. conv5: C = 1024 at stride 32."""
    return _torchvision("shufflenet_v2_x1_0", _SHUFFLENET_TRUNK, 1024, width, **kwargs)


def regnet_y_400mf(width: float = 1.0, **kwargs: Any) -> TorchvisionTrunk:
    """RegNetY-400MF (Radosavovic et al., CVPR 2020), stem + trunk: C = 440 at stride 32."""
    return _torchvision("regnet_y_400mf", ["stem", "trunk_output"], 440, width, **kwargs)


def regnet_y_800mf(width: float = 1.0, **kwargs: Any) -> TorchvisionTrunk:
    """RegNetY-800MF, stem + trunk: C = 784 at stride 32."""
    return _torchvision("regnet_y_800mf", ["stem", "trunk_output"], 784, width, **kwargs)


def efficientnet_b0(width: float = 1.0, **kwargs: Any) -> TorchvisionTrunk:
    """EfficientNet-B0 (Tan & Le, ICML 2019), ``features``: C = 1280 at stride 32."""
    return _torchvision("efficientnet_b0", ["features"], 1280, width, **kwargs)


#: ``timm:<name>``: any timm model, through :class:`TimmFeatures`.
TIMM_PREFIX = "timm:"


class TimmFeatures(nn.Module):
    """Any timm model's deepest feature map, through timm's ``features_only`` API.

    ``timm.create_model(name, features_only=True, out_indices=(-1,))``: the model without its
    pooling and classifier, returning its last feature map; its channels and stride come from
    timm's ``feature_info``, so a model whose last map is at stride 16 (many ViTs) reports 16.

    Arguments:
        name: the timm model name (without ``timm:``).
        pretrained: timm's weights (downloaded: see create_backbone).
        state_dict: weights of the full timm model (e.g. read from a local file), loaded by
            timm's own loader, which drops the classifier and adapts them to ``features_only``.
        kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Attributes:
        out_channels: C of the last feature map.
        stride: its reduction (input pixels per feature pixel).

    Example:
        >>> backbone = TimmFeatures("resnet10t")
        >>> backbone.out_channels, backbone.stride
        (512, 32)
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        state_dict: Mapping[str, Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        timm = _import_timm(TIMM_PREFIX + name)
        if state_dict is not None:
            kwargs = {**kwargs, "pretrained_cfg_overlay": {"state_dict": dict(state_dict)}}
        self.model = timm.create_model(
            name,
            pretrained=pretrained or state_dict is not None,
            features_only=True,
            out_indices=(-1,),
            **kwargs,
        )
        self.out_channels = int(self.model.feature_info.channels()[-1])
        self.stride = int(self.model.feature_info.reduction()[-1])

    def forward(self, x: Tensor) -> Tensor:
        """images (B, 3, H, W) -> features (B, C, H/stride, W/stride)."""
        return self.model(x)[-1]


def _check_timm_name(name: str) -> None:
    """ValueError naming timm's closest models when timm has no model ``name``."""
    timm = _import_timm(TIMM_PREFIX + name)
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close names: {', '.join(TIMM_PREFIX + c for c in close)}" if close else ""
        raise ValueError(
            f"unknown timm model {name!r} in backbone {TIMM_PREFIX + name!r}{hint} "
            "(timm.list_models() lists them all)"
        )


def _timm_features(name: str, width: float = 1.0, **kwargs: Any) -> TimmFeatures:
    """``timm:<name>``: the model's deepest features_only map."""
    _check_timm_name(name)
    _no_width(TIMM_PREFIX + name, width)
    return TimmFeatures(name, **kwargs)


#: Name -> factory(width=1.0, **kwargs) -> module with ``out_channels`` and ``stride``. Any timm
#: model is also a backbone by ``timm:<name>`` (:class:`TimmFeatures`).
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "hrnet_w32": hrnet_w32,
    "hrnet_w48": hrnet_w48,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_small": mobilenet_v3_small,
    "mobilenet_v3_large": mobilenet_v3_large,
    "shufflenet_v2_x0_5": shufflenet_v2_x0_5,
    "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "regnet_y_400mf": regnet_y_400mf,
    "regnet_y_800mf": regnet_y_800mf,
    "efficientnet_b0": efficientnet_b0,
}

#: The light backbones (deployment; docs/backbones.md), smallest first by parameters.
LIGHT_BACKBONES = (
    "shufflenet_v2_x0_5", "mobilenet_v3_small", "shufflenet_v2_x1_0", "mobilenet_v2",
    "mobilenet_v3_large", "regnet_y_400mf", "efficientnet_b0", "regnet_y_800mf",
)  # fmt: skip

#: torchvision ImageNet weights used by ``pretrained=True``: V1, the weights the official RLE
#: code loaded (``tm.resnetXX(pretrained=True)``), not torchvision's newer DEFAULT (V2).
TORCHVISION_WEIGHTS: dict[str, str] = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
    "resnet152": "ResNet152_Weights.IMAGENET1K_V1",
    # the light backbones: torchvision's DEFAULT (its best ImageNet weights) of each
    "mobilenet_v2": "MobileNet_V2_Weights.IMAGENET1K_V2",
    "mobilenet_v3_small": "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
    "shufflenet_v2_x0_5": "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1",
    "shufflenet_v2_x1_0": "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
    "regnet_y_400mf": "RegNet_Y_400MF_Weights.IMAGENET1K_V2",
    "regnet_y_800mf": "RegNet_Y_800MF_Weights.IMAGENET1K_V2",
    "efficientnet_b0": "EfficientNet_B0_Weights.IMAGENET1K_V1",
}


def create_backbone(
    name: str, pretrained: bool | str | os.PathLike = False, width: float = 1.0, **kwargs: Any
) -> tuple[nn.Module, int]:
    """Create a backbone by name; returns the module and its output channels C.

    Arguments:
        name: one of ``BACKBONES`` (resnet18/34/50/101/152, hrnet_w32/w48, the light backbones
            mobilenet_v2, mobilenet_v3_small/large, shufflenet_v2_x0_5/x1_0,
            regnet_y_400mf/800mf, efficientnet_b0), or ``timm:<name>`` for any timm model.
        pretrained: ``False`` (random init), ``True`` (torchvision's ImageNet weights for the
            torchvision networks, V1 for the ResNets; timm's for HRNets and ``timm:`` models;
            needs the network and fails within ``DOWNLOAD_PROBE_TIMEOUT_S`` seconds with
            :class:`PretrainedWeightsUnavailable` when offline, unless the file is already in
            the torch hub cache), or the path of a local weights file (a torchvision/timm-style
            state_dict, ``.pth`` or ``.safetensors``; its classifier keys are ignored, any other
            mismatch is an error).
        width: channel multiplier (ResNets only; ImageNet weights exist for 1.0 only).
        kwargs: the factory's own options (ResNet: ``norm_layer``, ``zero_init_residual``;
            torchvision networks: their constructor's; timm: passed to ``timm.create_model``).

    Returns:
        ``(module, C)``: module maps images (B, 3, H, W) to features (B, C, H/s, W/s), s =
        ``module.stride`` (32 for every named backbone).

    Example:
        >>> backbone, channels = create_backbone("resnet18", width=0.5)
        >>> channels, backbone(torch.randn(1, 3, 64, 48)).shape[1], backbone.stride
        (256, 256, 32)
    """
    timm_file = None  # a local weights file, read here and loaded by timm
    if name.startswith(TIMM_PREFIX):
        timm_name = name[len(TIMM_PREFIX) :]
        _check_timm_name(timm_name)  # before any download or file
        _no_width(name, width)

        def factory(width: float = 1.0, **kw: Any) -> nn.Module:
            return _timm_features(timm_name, width, **kw)

        if pretrained is not False and pretrained is not True:
            timm_file = str(pretrained)  # read here (checked, weights only), loaded by timm
            kwargs = {**kwargs, "state_dict": _read_weights_file(pretrained)}
    else:
        try:
            factory = BACKBONES[name]
        except KeyError:
            raise ValueError(
                f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}, or "
                f"{TIMM_PREFIX}<name> for any timm model (e.g. {TIMM_PREFIX}resnet10t)"
            ) from None
    if pretrained is not False and width != 1.0:
        raise ValueError(
            f"pretrained weights exist for width 1.0 only; got width={width} for {name!r}"
        )
    download_timm = pretrained is True and name not in TORCHVISION_WEIGHTS
    if download_timm:
        _require_hf_hub(name)
    if download_timm:
        kwargs = {**kwargs, "pretrained": True}
    try:
        module = factory(width=width, **kwargs)
    except TypeError as e:
        raise ValueError(f"backbone {name!r} does not take options {sorted(kwargs)}: {e}") from None
    except Exception as e:
        if download_timm:  # the hub's errors have many types (HTTP, timeouts, cache misses)
            raise PretrainedWeightsUnavailable(
                f"downloading timm's weights of {name!r} failed ({type(e).__name__}: {e}). "
                f"Pass a local weights file: create_backbone({name!r}, pretrained="
                "'/path/to/weights')"
            ) from e
        if timm_file is not None:  # timm's loader raises what torch's load_state_dict raises
            raise ValueError(
                f"{timm_file}: not the weights of timm's {name[len(TIMM_PREFIX) :]!r} "
                f"({type(e).__name__}: {e})"
            ) from None
        raise

    if pretrained is True and name in TORCHVISION_WEIGHTS:
        load_weights(module, _torchvision_state_dict(name), f"torchvision {name} weights")
    elif pretrained is not False and pretrained is not True and timm_file is None:
        load_weights(module, _read_weights_file(pretrained), str(pretrained))
    return module, int(module.out_channels)


def backbone_stride(name: str) -> int:
    """The output stride of backbone ``name`` (input pixels per feature pixel), without weights.

    32 for every name in ``BACKBONES`` (tested against each module's ``stride`` and its real
    output); for ``timm:<name>`` timm's ``feature_info`` of the model built on the meta device
    (no memory, no download).

    Raises:
        ValueError: an unknown name (listing the valid ones).
    """
    if name.startswith(TIMM_PREFIX):
        with torch.device("meta"):
            return _timm_features(name[len(TIMM_PREFIX) :]).stride
    if name not in BACKBONES:
        create_backbone(name)  # raises the error that lists the valid names
    return 32


def _read_weights_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state_dict from a ``.pth``/``.pt`` (torch.load, weights_only) or ``.safetensors`` file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        state = read_safetensors_file(path, "a safetensors weights file")
        check_finite(state, str(path))
        return state
    state = read_torch_file(
        path, "a weights file (a state_dict in a .pth, .pt or .safetensors file)"
    )
    if isinstance(state, Mapping) and "model" in state and "config" in state:
        raise ValueError(
            f"{path} is a posereg checkpoint, not a backbone state_dict: initialise the "
            "backbone with init_from_checkpoint(backbone, path) (config: model.init_from)"
        )
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    check_finite(state, str(path))
    return dict(state)


def _short_list(items: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_weights(
    backbone: nn.Module, state_dict: Mapping[str, Tensor], source: str, strict: bool = True
) -> None:
    """Load a torchvision/timm-style state_dict into a backbone, reporting every mismatch.

    Classifier keys (``fc.*`` for ResNets, ``classifier.*`` / ``fc.*`` for the torchvision light
    backbones, the timm model's classifier) and a ``module.``
    prefix are ignored. BN ``num_batches_tracked`` may be absent (old torchvision files).

    Arguments:
        backbone: a module from create_backbone.
        state_dict: names -> tensors, in the layout of torchvision's/timm's full model.
        source: where the weights come from, for error messages.
        strict: raise on missing/unexpected keys (shape mismatches always raise).

    Raises:
        ValueError: naming the missing keys, unexpected keys and shape mismatches.
    """
    target = backbone.model if isinstance(backbone, TimmBackbone) else backbone
    if isinstance(backbone, TimmBackbone):
        ignore: tuple[str, ...] = (backbone.classifier_prefix + ".",)
    elif isinstance(backbone, TorchvisionTrunk):
        ignore = backbone.ignored_prefixes
    else:
        ignore = ("fc.",)
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith(ignore)}
    own = target.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_short_list(shapes, 3)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {_short_list(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_short_list(unexpected)}")
    if problems:
        raise ValueError(
            f"{source} does not fit this {type(target).__name__} backbone: "
            + "; ".join(problems)
            + ". Are these the weights of another architecture or width?"
        )
    target.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


def init_from_checkpoint(
    backbone: nn.Module, path: str | os.PathLike, prefix: str = "backbone."
) -> int:
    """Initialise a backbone from an earlier posereg run's checkpoint (e.g. a heatmap model).

    This is the paper's "heatmap-pretrained backbone" variant (Tab. 5, 71.3 AP): train a
    heatmap model, then start the regression model's backbone from its weights.

    Arguments:
        backbone: the module to initialise (same architecture and width as in the run).
        path: a checkpoint saved by torch.save: a dict with ``"model"`` (the model's
            state_dict) and ``"config"``.
        prefix: the backbone's key prefix in that state_dict.

    Returns:
        The number of tensors loaded.

    Raises:
        ValueError: not a posereg checkpoint, no keys under ``prefix``, or keys/shapes that do
            not fit the backbone (all named).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = read_torch_file(path, CHECKPOINT_WHAT)
    if not isinstance(state, Mapping) or "model" not in state:
        raise ValueError(
            f"{path}: not a posereg checkpoint (expected a dict with a 'model' state_dict). "
            "For an ImageNet state_dict use pretrained=path; convert an official RLE "
            "checkpoint first with posereg.convert.convert_official"
        )
    model_sd = state["model"]
    check_finite(model_sd, str(path))
    sd = {k[len(prefix) :]: v for k, v in model_sd.items() if k.startswith(prefix)}
    if not sd:
        found = sorted({k.split(".", 1)[0] + "." for k in model_sd})
        raise ValueError(
            f"{path}: no keys under {prefix!r} in its model state_dict; prefixes found: "
            + ", ".join(found)
        )
    own = backbone.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs backbone {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label}: {_short_list(keys)}"
            for label, keys in (
                (f"{len(missing)} missing keys", missing),
                (f"{len(unexpected)} unexpected keys", unexpected),
                (f"{len(shapes)} shape mismatches", shapes),
            )
            if keys
        ]
        config = state.get("config")
        raise ValueError(
            f"the backbone of {path} does not fit this backbone: {'; '.join(parts)}. "
            f"It was saved with config {config!r}: use the same backbone name and width"
        )
    backbone.load_state_dict(sd)
    return len(sd)


# --- downloads -------------------------------------------------------------------------


def _probe(url: str, timeout: float) -> str | None:
    """None if a TCP connection to url's host (or its proxy) opens within ``timeout`` s.

    Otherwise the reason. Runs in a daemon thread so that a hanging DNS lookup is bounded too.
    """
    parsed = urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no connection to {host}:{port} within {timeout:g} s"
    error = outcome[0]
    return None if error is None else f"cannot connect to {host}:{port} ({error})"


def _torchvision_state_dict(name: str) -> dict[str, Tensor]:
    """torchvision's ImageNet state_dict for ``name``: from the hub cache, else downloaded."""
    from torchvision.models import get_weight

    weights = get_weight(TORCHVISION_WEIGHTS[name])
    cached = (
        Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    )
    if cached.is_file():
        return read_torch_file(cached, f"torchvision's {name} weights")
    advice = (
        f"Pass a local weights file instead: pretrained='/path/to/{cached.name}' (download "
        f"{weights.url} on a machine with internet access), or copy it to {cached}"
    )
    reason = _probe(weights.url, DOWNLOAD_PROBE_TIMEOUT_S)
    if reason is not None:
        raise PretrainedWeightsUnavailable(
            f"pretrained=True needs to download the ImageNet weights of {name}, but {reason}. "
            + advice
        )
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, progress=False, check_hash=True, map_location="cpu", weights_only=True
        )
    except (OSError, RuntimeError) as e:  # URLError is an OSError; hash mismatch a RuntimeError
        raise PretrainedWeightsUnavailable(
            f"downloading {weights.url} failed ({type(e).__name__}: {e}). " + advice
        ) from e


def _require_hf_hub(name: str) -> None:
    """Fail fast when timm's weights (Hugging Face Hub) cannot be reached."""
    _import_timm(name)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return  # the user asked for the local Hugging Face cache
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    reason = _probe(endpoint, DOWNLOAD_PROBE_TIMEOUT_S)
    if reason is not None:
        raise PretrainedWeightsUnavailable(
            f"pretrained=True needs to download timm's weights of {name} from {endpoint}, but "
            f"{reason}. Pass a local weights file instead: pretrained='/path/to/weights' "
            "(.safetensors or .pth), or set HF_HUB_OFFLINE=1 if they are in the Hugging Face cache"
        )
