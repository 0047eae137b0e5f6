"""Backbones: images (B, 3, H, W) -> feature maps (B, C, h, w).

ResNets (He et al., CVPR 2016) are built here from torchvision's block classes and keep
torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so at width 1.0 a
torchvision ImageNet state_dict and the ``preact.*`` backbone of an official RLE checkpoint
load one to one. HRNets come from timm (optional extra ``posereg[timm]``).

One entry point, :func:`create_backbone`; each name is a small factory in ``BACKBONES``.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
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
    "PretrainedWeightsUnavailable",
    "ResNetTrunk",
    "TimmBackbone",
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
    """

    def __init__(self, name: str, pretrained: bool = False, **kwargs: Any) -> None:
        super().__init__()
        timm = _import_timm(name)
        self.model = timm.create_model(
            name, pretrained=pretrained, num_classes=0, global_pool="", **kwargs
        )
        self.out_channels: int = self.model.num_features
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


def _timm_width(name: str, width: float) -> None:
    if width != 1.0:
        raise ValueError(f"backbone {name!r} (timm) has no width multiplier; got width={width}")


def hrnet_w32(width: float = 1.0, **kwargs: Any) -> TimmBackbone:
    """HRNet-W32 (timm ``hrnet_w32``), C = 2048 at stride 32."""
    _timm_width("hrnet_w32", width)
    return TimmBackbone("hrnet_w32", **kwargs)


def hrnet_w48(width: float = 1.0, **kwargs: Any) -> TimmBackbone:
    """HRNet-W48 (timm ``hrnet_w48``), C = 2048 at stride 32."""
    _timm_width("hrnet_w48", width)
    return TimmBackbone("hrnet_w48", **kwargs)


#: Name -> factory(width=1.0, **kwargs) -> module with ``out_channels``.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "hrnet_w32": hrnet_w32,
    "hrnet_w48": hrnet_w48,
}

#: torchvision ImageNet weights used by ``pretrained=True``: V1, the weights the official RLE
#: code loaded (``tm.resnetXX(pretrained=True)``), not torchvision's newer DEFAULT (V2).
TORCHVISION_WEIGHTS: dict[str, str] = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
    "resnet152": "ResNet152_Weights.IMAGENET1K_V1",
}


def create_backbone(
    name: str, pretrained: bool | str | os.PathLike = False, width: float = 1.0, **kwargs: Any
) -> tuple[nn.Module, int]:
    """Create a backbone by name; returns the module and its output channels C.

    Arguments:
        name: one of ``BACKBONES`` (resnet18/34/50/101/152, hrnet_w32/w48).
        pretrained: ``False`` (random init), ``True`` (torchvision ImageNet V1 weights for
            ResNets, timm's for HRNets; needs the network and fails within
            ``DOWNLOAD_PROBE_TIMEOUT_S`` seconds with :class:`PretrainedWeightsUnavailable`
            when offline, unless the file is already in the torch hub cache), or the path of
            a local weights file (a torchvision/timm-style state_dict, ``.pth`` or
            ``.safetensors``; its classifier keys are ignored, any other mismatch is an error).
        width: channel multiplier (ResNets only; ImageNet weights exist for 1.0 only).
        kwargs: the factory's own options (ResNet: ``norm_layer``, ``zero_init_residual``;
            timm: passed to ``timm.create_model``).

    Returns:
        ``(module, C)``: module maps images (B, 3, H, W) to features (B, C, H/32, W/32).

    Example:
        >>> backbone, channels = create_backbone("resnet18", width=0.5)
        >>> channels, backbone(torch.randn(1, 3, 64, 48)).shape[1]
        (256, 256)
    """
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}") from None
    if pretrained is not False and width != 1.0:
        raise ValueError(
            f"pretrained weights exist for width 1.0 only; got width={width} for {name!r}"
        )
    download_timm = pretrained is True and name not in TORCHVISION_WEIGHTS
    if download_timm:
        _require_hf_hub(name)
        kwargs = {**kwargs, "pretrained": True}
    try:
        module = factory(width=width, **kwargs)
    except TypeError as e:
        raise ValueError(f"backbone {name!r} does not take options {sorted(kwargs)}: {e}") from None
    except Exception as e:
        if not download_timm:
            raise
        # the hub's errors have many types (HTTP, timeouts, cache misses)
        raise PretrainedWeightsUnavailable(
            f"downloading timm's weights of {name!r} failed ({type(e).__name__}: {e}). "
            f"Pass a local weights file: create_backbone({name!r}, pretrained='/path/to/weights')"
        ) from e

    if pretrained is True and name in TORCHVISION_WEIGHTS:
        load_weights(module, _torchvision_state_dict(name), f"torchvision {name} weights")
    elif pretrained is not False and pretrained is not True:
        load_weights(module, _read_weights_file(pretrained), str(pretrained))
    return module, int(module.out_channels)


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

    Classifier keys (``fc.*`` for ResNets, the timm model's classifier) and a ``module.``
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
    ignore = (backbone.classifier_prefix + ".",) if isinstance(backbone, TimmBackbone) else ("fc.",)
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
