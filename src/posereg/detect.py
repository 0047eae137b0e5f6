"""Person boxes for top-down pose: torchvision's COCO detectors, from local weights only.

Nothing downloads here. The weights come from a file the user names (``--detector-weights``) or
from torchvision's own cache (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints``
by default), where torchvision stores them the first time a machine with internet access builds
the model with ``weights="DEFAULT"`` (docs/serve.md, "Person detection"). The file name in the
cache is the one in torchvision's weights enum (its URL's last part), so it is never copied here.

One detector, ``fasterrcnn_resnet18_fpn_w0.5`` (Faster R-CNN on posereg's half-width ResNet-18
FPN, :mod:`posereg.models.detector`), has no COCO weights: it is trained on posereg's multi-person
images (:mod:`posereg.engine.detector`), and so can any of the others. Such a trained detector is
a posereg checkpoint whose ``detector`` entry (:func:`detector_record`) says which architecture
it is, how many classes it has (2: background, person) and the builder options it was trained
with; ``--detector NAME --detector-weights FILE`` loads it as it loads torchvision's files.

This module imports neither torch nor torchvision until a detector is built, so that the command
line can check a ``--detector`` name in a moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "COCO_DETECTORS",
    "DETECTORS",
    "DetectorName",
    "DetectorSpec",
    "Detected",
    "PersonDetector",
    "build_detector",
    "check_detector_name",
    "detector_record",
    "detector_spec",
    "detector_weights_path",
]

PERSON = 1  # the COCO category id of a person in torchvision's detection models

#: The ``--detector`` choices: torchvision's COCO detectors, heaviest first (Faster R-CNN
#: ResNet-50 FPN (the default), Faster R-CNN MobileNet-V3-Large FPN at 800 and at 320 pixels,
#: SSDlite 320), then posereg's small Faster R-CNN on the half-width ResNet-18 FPN, which has no
#: COCO weights (trained with :mod:`posereg.engine.detector`).
DetectorName = Literal[
    "fasterrcnn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_resnet18_fpn_w0.5",
]
DETECTORS: tuple[DetectorName, ...] = get_args(DetectorName)
#: The detectors torchvision has COCO weights for (its cache, :func:`detector_weights_path`).
COCO_DETECTORS: tuple[DetectorName, ...] = DETECTORS[:4]
#: Where a user learns to train a detector (the messages about a missing one say it).
TRAIN_HINT = "posereg.engine.detector.train_detector, docs/multiperson.md"


@dataclass(frozen=True)
class DetectorSpec:
    """How to build one detector of :data:`DETECTORS` without downloading anything.

    Attributes:
        builder: the ``torchvision.models.detection`` function that builds the architecture
            (``posereg.models.detector``'s for ``fasterrcnn_resnet18_fpn_w0.5``).
        weights: its COCO weights enum there (the cache file name and box AP come from it);
            None: no COCO weights (a posereg-trained detector only).
        score_kwarg: the builder's keyword for the minimum score a detection is kept at.
    """

    builder: str
    weights: str | None
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
    if name == "ssdlite320_mobilenet_v3_large":
        return DetectorSpec(name, "SSDLite320_MobileNet_V3_Large_Weights", "score_thresh")
    return DetectorSpec("fasterrcnn_resnet18_fpn_w05", None, "box_score_thresh")


def check_detector_name(name: str) -> DetectorName:
    """``name`` if it is one of :data:`DETECTORS`; else ValueError listing them."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    return name  # type: ignore[return-value]


def _weights_enum(spec: DetectorSpec):  # -> a torchvision WeightsEnum member
    from torchvision.models import detection

    return getattr(detection, str(spec.weights)).DEFAULT


def detector_weights_path(name: DetectorName) -> Path:
    """Where torchvision keeps the COCO weights of detector ``name`` once downloaded.

    Raises:
        ValueError: ``name`` has no COCO weights (not one of :data:`COCO_DETECTORS`).
    """
    import torch

    spec = detector_spec(name)
    if spec.weights is None:
        raise ValueError(f"the {name} detector has no COCO weights; train one ({TRAIN_HINT})")
    url = _weights_enum(spec).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def build_detector(
    name: DetectorName, score_threshold: float = 0.5, num_classes: int = 91, **options: Any
) -> nn.Module:
    """The architecture of detector ``name`` with random weights, in train mode, downloading
    nothing: ``weights=None, weights_backbone=None``.

    Arguments:
        name: one of :data:`DETECTORS`.
        score_threshold: the minimum score a detection is kept at.
        num_classes: classes including the background: 91 (the default) gives the same modules
            and state-dict keys as torchvision's COCO model, which :class:`PersonDetector`
            loads into it; 2 (background, person) the detectors posereg trains.
        options: further options of the builder (torchvision's ``FasterRCNN`` / ``SSD``
            keywords: ``min_size``, ``max_size``, ``rpn_post_nms_top_n_train``, ...; for
            ``fasterrcnn_resnet18_fpn_w0.5`` also ``fpn_channels``, ``box_representation``,
            ``anchor_sizes``, :func:`posereg.models.detector.fasterrcnn_resnet18_fpn_w05`).
    """
    spec = detector_spec(name)
    kwargs = {**options, spec.score_kwarg: score_threshold}
    if spec.weights is None:
        from posereg.models.detector import fasterrcnn_resnet18_fpn_w05

        return fasterrcnn_resnet18_fpn_w05(num_classes, **kwargs)
    from torchvision.models import detection

    builder = getattr(detection, spec.builder)
    return builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)


def detector_record(name: DetectorName, num_classes: int, options: dict[str, Any]) -> dict:
    """The ``detector`` entry of a trained detector's posereg checkpoint: what
    :class:`PersonDetector` rebuilds it from (:func:`build_detector` arguments).

    Arguments:
        name: one of :data:`DETECTORS`.
        num_classes: classes including the background (2 for a person detector).
        options: the builder options it was trained with (plain values: ints, floats, tuples).
    """
    check_detector_name(name)
    return {"name": name, "num_classes": int(num_classes), "options": dict(options)}


def _trained_detector(state: dict, name: DetectorName, path: Path) -> tuple[int, dict[str, Any]]:
    """The classes and builder options of a posereg checkpoint given as detector weights
    (its :func:`detector_record`); ValueError naming the file when it is not a detector of
    architecture ``name``."""
    record = state.get("detector")
    if not isinstance(record, dict):
        raise ValueError(
            f"{path}: a posereg checkpoint without a detector (a pose model's?), not weights of "
            f"the {name} detector: --detector-weights takes a torchvision state dict or a "
            f"detector checkpoint trained by posereg ({TRAIN_HINT})"
        )
    if record.get("name") != name:
        raise ValueError(
            f"{path}: a checkpoint of the {record.get('name')} detector, not of {name}: "
            f"pass --detector {record.get('name')}"
        )
    options = record.get("options") or {}
    num_classes = record.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 2 or not isinstance(options, dict):
        raise ValueError(
            f"{path}: its detector entry needs num_classes (an int >= 2) and options (a dict), "
            f"got {num_classes!r} and {type(options).__name__}"
        )
    return num_classes, dict(options)


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
            torchvision's own downloads are), or a posereg checkpoint of a detector trained by
            :mod:`posereg.engine.detector` (its ``detector`` entry names the architecture, which
            must be ``name``, and its classes); None: torchvision's cache
            (:func:`detector_weights_path`).
        score_threshold: keep people scored at least this.
        device: where the detector runs.

    Raises:
        FileNotFoundError: no weights file (the message says how to get one).
        ValueError: an unknown name, or a file that is not that model's state dict or trained
            checkpoint (another detector's, a pose model's, ...): the message names the file.

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
        if weights is None and spec.weights is None:
            raise FileNotFoundError(
                f"the {name} detector has no COCO weights: train one ({TRAIN_HINT}) and pass "
                "it with --detector-weights FILE"
            )
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
        state = read_torch_file(path, f"the {name} detector weights (a torchvision state dict)")
        num_classes, options = 91, {}
        if isinstance(state, dict) and "format" in state:  # a posereg checkpoint
            num_classes, options = _trained_detector(state, name, path)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict of {spec.builder}")
        model = build_detector(name, score_threshold, num_classes, **options)
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in state and getattr(state[k], "shape", None) != v.shape
        ]
        if missing or unexpected or shapes:
            raise ValueError(
                f"{path}: not a {spec.builder} state dict with {num_classes} classes "
                f"({len(missing)} missing keys, e.g. {missing[:2]}; {len(unexpected)} "
                f"unexpected, e.g. {unexpected[:2]}; {len(shapes)} of another shape, e.g. "
                f"{shapes[:2]})"
            )
        from posereg.torchfile import check_finite

        check_finite(state, str(path))
        model.load_state_dict(state)
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
