"""Person boxes for top-down pose: torchvision's COCO detectors, from local weights only.

Nothing downloads here. The weights come from a file the user names (``--detector-weights``) or
from torchvision's own cache (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints``
by default), where torchvision stores them the first time a machine with internet access builds
the model with ``weights="DEFAULT"`` (docs/serve.md, "Person detection"). The file name in the
cache is the one in torchvision's weights enum (its URL's last part), so it is never copied here.

This module imports neither torch nor torchvision until a detector is built, so that the command
line can check a ``--detector`` name in a moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "DETECTORS",
    "DetectorName",
    "DetectorSpec",
    "Detected",
    "PersonDetector",
    "build_detector",
    "check_detector_name",
    "detector_spec",
    "detector_weights_path",
]

PERSON = 1  # the COCO category id of a person in torchvision's detection models

#: The ``--detector`` choices, heaviest first: torchvision's Faster R-CNN ResNet-50 FPN (the
#: default), Faster R-CNN MobileNet-V3-Large FPN at 800 and at 320 pixels, and SSDlite 320.
DetectorName = Literal[
    "fasterrcnn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_mobilenet_v3_large",
]
DETECTORS: tuple[DetectorName, ...] = get_args(DetectorName)


@dataclass(frozen=True)
class DetectorSpec:
    """How to build one detector of :data:`DETECTORS` without downloading anything.

    Attributes:
        builder: the ``torchvision.models.detection`` function that builds the architecture.
        weights: its COCO weights enum there (the cache file name and box AP come from it).
        score_kwarg: the builder's keyword for the minimum score a detection is kept at.
    """

    builder: str
    weights: str
    score_kwarg: Literal["box_score_thresh", "score_thresh"]


def detector_spec(name: DetectorName) -> DetectorSpec:
    """The :class:`DetectorSpec` of ``name`` (one of :data:`DETECTORS`)."""
    check_detector_name(name)
    if name == "fasterrcnn":
        return DetectorSpec(
            "fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights", "box_score_thresh"
        )
    if name == "fasterrcnn_mobilenet_v3_large_fpn":
        return DetectorSpec(name, "FasterRCNN_MobileNet_V3_Large_FPN_Weights", "box_score_thresh")
    if name == "fasterrcnn_mobilenet_v3_large_320_fpn":
        return DetectorSpec(
            name, "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights", "box_score_thresh"
        )
    return DetectorSpec(name, "SSDLite320_MobileNet_V3_Large_Weights", "score_thresh")


def check_detector_name(name: str) -> DetectorName:
    """``name`` if it is one of :data:`DETECTORS`; else ValueError listing them."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    return name  # type: ignore[return-value]


def _weights_enum(spec: DetectorSpec):  # -> a torchvision WeightsEnum member
    from torchvision.models import detection

    return getattr(detection, spec.weights).DEFAULT


def detector_weights_path(name: DetectorName) -> Path:
    """Where torchvision keeps the COCO weights of detector ``name`` once downloaded."""
    import torch

    url = _weights_enum(detector_spec(name)).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def build_detector(name: DetectorName, score_threshold: float = 0.5) -> nn.Module:
    """The architecture of detector ``name`` with random weights (91 COCO classes), in train
    mode, downloading nothing: ``weights=None, weights_backbone=None``. The same modules and
    state-dict keys as torchvision's COCO model, which :class:`PersonDetector` loads into it."""
    from torchvision.models import detection

    spec = detector_spec(name)
    builder = getattr(detection, spec.builder)
    return builder(
        weights=None, weights_backbone=None, num_classes=91, **{spec.score_kwarg: score_threshold}
    )


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
    """A torchvision COCO detector that returns person boxes.

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
        >>> detector = PersonDetector("ssdlite320_mobilenet_v3_large")  # doctest: +SKIP
        >>> found = detector(cv2.imread("photo.jpg"))  # doctest: +SKIP
        >>> found.boxes.shape  # doctest: +SKIP
        (2, 4)
    """

    def __init__(
        self,
        name: DetectorName = "fasterrcnn",
        weights: str | Path | None = None,
        score_threshold: float = 0.5,
        device: str | torch.device = "cpu",
    ) -> None:
        from posereg.torchfile import read_torch_file

        spec = detector_spec(name)
        path = Path(weights) if weights is not None else detector_weights_path(name)
        if not path.is_file():
            where = "" if weights is not None else " (torchvision's cache)"
            raise FileNotFoundError(
                f"no weights for the {name} detector at {path}{where}. posereg never downloads: "
                f'on a machine with internet access run `python -c "import torchvision; '
                f"torchvision.models.detection.{spec.builder}(weights='DEFAULT')\"`, which "
                f"stores them in ~/.cache/torch/hub/checkpoints, then copy that file here or "
                f"pass it with --detector-weights FILE (torchvision's {spec.weights}.DEFAULT)"
            )
        model = build_detector(name, score_threshold)
        state = read_torch_file(path, f"the {name} detector weights (a torchvision state dict)")
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict of {spec.builder}")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a {spec.builder} state dict ({len(missing)} missing keys, e.g. "
                f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
            )
        self._setup(name, model, score_threshold, device)

    @classmethod
    def untrained(
        cls,
        name: DetectorName,
        score_threshold: float = 0.5,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> PersonDetector:
        """The detector with random weights (:func:`build_detector`, seeded): the same
        computation as the trained one, for tests and latency benchmarks on machines without
        the weights. It finds no real people."""
        import torch

        torch.manual_seed(seed)
        detector = cls.__new__(cls)
        detector._setup(name, build_detector(name, score_threshold), score_threshold, device)
        return detector

    def _setup(
        self,
        name: DetectorName,
        model: nn.Module,
        score_threshold: float,
        device: str | torch.device,
    ) -> None:
        import torch

        self.name = name
        self.score_threshold = float(score_threshold)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, image: np.ndarray) -> Detected:
        """People in an (H, W, 3) uint8 BGR image (OpenCV's order, as :class:`Predictor`)."""
        import torch

        rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1]))
        x = rgb.permute(2, 0, 1).float().div(255).to(self.device)  # (3, H, W) in [0, 1]
        with torch.no_grad():
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
