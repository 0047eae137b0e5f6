"""Person boxes for top-down pose: torchvision's Faster R-CNN detectors, from local weights only.

Nothing downloads here. The weights come from a file the user names (``--detector-weights``) or
from torchvision's own cache (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints``
by default), where torchvision stores them the first time a machine with internet access builds
the model with ``weights="DEFAULT"`` (docs/serve.md, "Person detection").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posereg.torchfile import read_torch_file

__all__ = ["DETECTORS", "PersonDetector", "Detected", "detector_weights_path"]

PERSON = 1  # the COCO category id of a person in torchvision's detection models


def _factories() -> dict[str, tuple[Callable[..., nn.Module], str, str]]:
    """name -> (builder, the torchvision weights enum name, its file name in the cache)."""
    from torchvision.models import detection as d

    return {
        "fasterrcnn": (
            d.fasterrcnn_resnet50_fpn,
            "FasterRCNN_ResNet50_FPN_Weights",
            "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
        ),
        "fasterrcnn_mobilenet": (
            d.fasterrcnn_mobilenet_v3_large_fpn,
            "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
            "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
        ),
        "fasterrcnn_mobilenet_320": (
            d.fasterrcnn_mobilenet_v3_large_320_fpn,
            "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
            "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth",
        ),
    }


# --detector choices: ResNet-50 FPN (37.0 box AP on COCO), MobileNet-V3 FPN (32.8), and its
# 320-pixel variant (22.8; the fastest on a CPU)
DETECTORS = ("fasterrcnn", "fasterrcnn_mobilenet", "fasterrcnn_mobilenet_320")


def detector_weights_path(name: str) -> Path:
    """Where torchvision keeps the COCO weights of detector ``name`` once downloaded."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / _factories()[name][2]


@dataclass
class Detected:
    """People found in one image.

    Attributes:
        boxes: (N, 4) (x, y, w, h) pixels, best first.
        scores: (N,) detection scores in [0, 1].
    """

    boxes: np.ndarray
    scores: np.ndarray


class PersonDetector:
    """A torchvision Faster R-CNN that returns person boxes.

    Arguments:
        name: one of :data:`DETECTORS`.
        weights: a state dict file of that model (``torch.save(model.state_dict(), path)``, as
            torchvision's own downloads are); None: torchvision's cache
            (:func:`detector_weights_path`).
        score_threshold: keep people scored at least this.
        device: where the detector runs.

    Raises:
        FileNotFoundError: no weights file (the message says how to get one).
        ValueError: an unknown name, or a file that is not that model's state dict.

    Example:
        >>> detector = PersonDetector("fasterrcnn", score_threshold=0.5)  # doctest: +SKIP
        >>> found = detector(cv2.imread("photo.jpg"))  # doctest: +SKIP
        >>> found.boxes.shape  # doctest: +SKIP
        (2, 4)
    """

    def __init__(
        self,
        name: str = "fasterrcnn",
        weights: str | Path | None = None,
        score_threshold: float = 0.5,
        device: str | torch.device = "cpu",
    ) -> None:
        if name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
        builder, enum_name, _ = _factories()[name]
        path = Path(weights) if weights is not None else detector_weights_path(name)
        if not path.is_file():
            where = "" if weights is not None else " (torchvision's cache)"
            raise FileNotFoundError(
                f"no weights for the {name} detector at {path}{where}. posereg never downloads: "
                f'on a machine with internet access run `python -c "import torchvision; '
                f"torchvision.models.detection.{builder.__name__}(weights='DEFAULT')\"`, which "
                f"stores them in ~/.cache/torch/hub/checkpoints, then copy that file here or "
                f"pass it with --detector-weights FILE (torchvision's {enum_name}.DEFAULT)"
            )
        self.name = name
        self.score_threshold = float(score_threshold)
        self.device = torch.device(device)
        # weights=None, weights_backbone=None: build the architecture only, download nothing
        model = builder(
            weights=None, weights_backbone=None, num_classes=91, box_score_thresh=score_threshold
        )
        state = read_torch_file(path, f"the {name} detector weights (a torchvision state dict)")
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict of {builder.__name__}")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a {builder.__name__} state dict ({len(missing)} missing keys, e.g. "
                f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
            )
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Detected:
        """People in an (H, W, 3) uint8 BGR image (OpenCV's order, as :class:`Predictor`)."""
        rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1]))
        x = rgb.permute(2, 0, 1).float().div(255).to(self.device)  # (3, H, W) in [0, 1]
        out = self.model([x])[0]
        wh = out["boxes"][:, 2:] - out["boxes"][:, :2]
        person = (out["labels"] == PERSON) & (out["scores"] >= self.score_threshold)
        person &= (wh >= 1).all(dim=1)  # a box under a pixel wide cannot be cropped
        xyxy = out["boxes"][person].double().cpu().numpy()
        scores = out["scores"][person].double().cpu().numpy()
        order = np.argsort(-scores, kind="stable")
        xyxy, scores = xyxy[order], scores[order]
        boxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).reshape(-1, 4)
        return Detected(boxes, scores)
