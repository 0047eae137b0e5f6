"""The top-down model: backbone -> head, with the head's loss, decoding and the flip test.

Every consumer of a trained model (training validation, ``posereg eval``, ``Predictor``, the ONNX
export) calls :meth:`TopDownModel.predict`, so decoding, the confidence of Eq. 9 and the flip
test each live in one place: the head's ``decode`` (which calls :mod:`posereg.codecs`), and
``predict`` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from posereg.codecs import DecodedKeypoints
from posereg.models.heads import FlipIndex, HeadOutput, average_outputs

__all__ = ["PoseRegressor", "TopDownModel", "upgrade_state_dict"]

# Checkpoints written before the head owned its loss kept the flow at the top of the model.
_MOVED_PREFIXES = (("criterion.", "head.criterion."),)


def upgrade_state_dict(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Rename the keys of an older :class:`TopDownModel` state_dict to today's names.

    ``criterion.*`` (the loss and its flow, at the top of the model before the head owned it)
    becomes ``head.criterion.*``. Other keys are kept as they are.

    Arguments:
        state_dict: a model state_dict (keys under ``prefix``).
        prefix: the model's prefix inside ``state_dict`` (``""`` for a whole model).

    Example:
        >>> list(upgrade_state_dict({"criterion.flow.mask": 0, "head.fc_coord.linear.bias": 1}))
        ['head.criterion.flow.mask', 'head.fc_coord.linear.bias']
    """
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        for old, new in _MOVED_PREFIXES:
            if key.startswith(prefix + old):
                key = prefix + new + key[len(prefix + old) :]
                break
        out[key] = value
    return out


class TopDownModel(nn.Module):
    """Backbone + head. The head owns the loss (and the RLE flow in it), the decoding and the
    flip back; the model adds the flip test.

    ``forward`` runs the backbone and the head only: a flow inside the head's criterion is used
    by ``loss`` during training and never at inference (paper Sec. 3.3, "no overhead").

    Arguments:
        backbone: maps images (B, 3, H, W) to features (B, C, h, w).
        head: a :class:`posereg.models.heads.PoseHead`.

    Example:
        >>> import torch
        >>> from posereg.models.heads import create_head
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
        >>> model = TopDownModel(backbone, create_head("regression", 8, 17, (64, 48)))
        >>> out = model(torch.randn(2, 3, 64, 48))
        >>> out.mu.shape
        torch.Size([2, 17, 2])
        >>> model.predict(torch.randn(2, 3, 64, 48)).scores.shape
        torch.Size([2, 17])
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._register_load_state_dict_pre_hook(_upgrade_hook)

    @property
    def criterion(self) -> nn.Module | None:
        """The head's training loss (with its flow), or None (e.g. the heatmap head's fixed MSE)."""
        return getattr(self.head, "criterion", None)

    def forward(self, images: Tensor) -> HeadOutput:
        """images (B, 3, H, W) -> the head's output (e.g. RegressionOutput mu, sigma (B, K, D))."""
        return self.head(self.backbone(images))

    def loss(self, output: HeadOutput, target: Tensor, weight: Tensor) -> Tensor:
        """Training loss of an output against the codec's batched targets (the head's ``loss``)."""
        return self.head.loss(output, target, weight)

    def predict(
        self, images: Tensor, flip_test: bool = False, flip_index: FlipIndex | None = None
    ) -> DecodedKeypoints:
        """Decoded keypoints of a batch of crops: the one inference path.

        Arguments:
            images: (B, 3, H, W) normalized crops.
            flip_test: also run ``images.flip(-1)``, bring its output back with the head's
                ``flip_back`` and average the two outputs before decoding.
            flip_index: (K,) left/right permutation (``Skeleton.flip_index``); needed with
                ``flip_test``.

        Returns:
            keypoints (B, K, D) crop-normalized, scores (B, K), sigma (B, K, D) or None.
        """
        out = self(images)
        if flip_test:
            if flip_index is None:
                raise ValueError("predict(flip_test=True) needs the skeleton's flip_index")
            back = self.head.flip_back(self(images.flip(-1)), flip_index)
            out = average_outputs(out, back)
        return self.head.decode(out)


def _upgrade_hook(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: older key names (see :func:`upgrade_state_dict`), in place."""
    upgraded = upgrade_state_dict(state_dict, prefix)
    if upgraded.keys() != state_dict.keys():
        state_dict.clear()
        state_dict.update(upgraded)


#: The name before heads other than regression existed.
PoseRegressor = TopDownModel
