"""ONNX export of multi-person models with the people decoded in the graph, and its ONNX Runtime
runner (issue 17 §4; Keypoint R-CNN + RLE, the RLE paper's Tab. 2c, :mod:`posereg.models.keypoint_rcnn`;
the dense one-stage model, Tab. 2d, :mod:`posereg.models.dense`).

A top-down export (:mod:`posereg.export`) maps crops to crop-normalised keypoints and leaves the
cropping and decoding to :class:`posereg.predict.Predictor`. A multi-person model needs neither
boxes nor crops, so its whole inference path is in the graph: resize and normalisation, the
detector, NMS, the keypoint head and the decoding to image pixels. The graph (``opset`` >= 11, as
torchvision documents for its detection models; written by torch's TorchScript exporter, as
torchvision's own ``test/test_onnx.py`` does) has

    input   ``image``            (3, H, W) float32 RGB in [0, 1], one image per call; H, W dynamic
    outputs ``boxes``            (N, 4) x1, y1, x2, y2, pixels of the input image
            ``scores``           (N,) the detection (box) score, in [0, 1], decreasing
            ``keypoints``        (N, K, 2) x, y, pixels of the input image
            ``keypoint_scores``  (N, K) the head's per-keypoint score: 1 - mean_d sigma_d with
                                 sigma in box units (RLE Eq. 9; the dense model: person-scale
                                 units sqrt(w h)); torchvision's heatmap logit for the heatmap head
            ``sigma``            (N, K, 2) per-axis sigma in pixels of the input image (heads
                                 that predict one; absent for the heatmap head)

with N (the people found, 0 included) dynamic. The batch is fixed at one image: a traced
detection model takes a list of images whose length the trace fixes, so a batch of B images is B
calls (the outputs of B images would be ragged in N anyway).

Any model plugs in through :func:`export_people`: a module whose ``forward(image)`` takes one
image (3, H, W) and returns those tensors in that order (:data:`PEOPLE_OUTPUTS`, ``sigma``
optional). :class:`KeypointRCNNPeople` is that module for a Keypoint R-CNN, :class:`DensePeopleModule`
for the dense one-stage model (:func:`export_keypoint_rcnn`, :func:`export_dense`). :class:`OnnxPeopleModel` runs any such file and returns one
:class:`posereg.predict.PoseResult` per image, through the same conversion as the PyTorch model
(:func:`posereg.models.keypoint_rcnn.to_pose_results`).

The file's ``metadata_props`` follow :mod:`posereg.runtime`'s (``posereg_export``, ``config``,
``precision``) plus ``family`` (:data:`posereg.runtime.FAMILY_KEY`), which tells a multi-person
export from a top-down one. Needs the optional extra ``posereg[export]`` (onnx, onnxruntime).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import KeypointRCNN

from posereg.errors import CheckpointError
from posereg.export import OnnxMismatchError, _eval_mode, _require
from posereg.models.keypoint_rcnn import RegressionRoIHeads, to_pose_results
from posereg.outputs import atomic_path, os_error
from posereg.result import PoseResult
from posereg.runtime import EXPORT_VERSION, FAMILY_KEY, METADATA_KEY, TOP_DOWN, open_export

__all__ = [
    "DENSE",
    "DensePeopleModule",
    "INPUT_NAME",
    "KEYPOINT_RCNN",
    "MIN_OPSET",
    "PEOPLE_OUTPUTS",
    "KeypointRCNNPeople",
    "OnnxPeopleModel",
    "PeopleParity",
    "check_people_onnx",
    "export_dense",
    "export_keypoint_rcnn",
    "export_people",
    "load_people_onnx",
]

INPUT_NAME = "image"
#: The graph's outputs in order; ``sigma`` only for heads that predict one.
PEOPLE_OUTPUTS = ("boxes", "scores", "keypoints", "keypoint_scores", "sigma")
#: The graph outputs' names in torchvision's result dicts, what
#: :func:`posereg.models.keypoint_rcnn.to_pose_results` reads.
_RESULT_KEYS = {
    "boxes": "boxes",
    "scores": "scores",
    "keypoints": "keypoints",
    "keypoint_scores": "keypoints_scores",
    "sigma": "keypoints_sigma",
}
#: torchvision's detection models export to ONNX from opset 11 (RoiAlign, NonMaxSuppression).
MIN_OPSET = 11
#: The ``family`` of a Keypoint R-CNN export.
KEYPOINT_RCNN = "keypoint_rcnn"
#: The ``family`` of a dense one-stage export.
DENSE = "dense"
#: Warnings of tracing torchvision's detection models that say nothing about the exported graph
#: (see :func:`export_people`).
_EXPORT_NOISE = (
    "To copy construct from a tensor",
    "Exporting aten::index operator of advanced indexing",
    "`torch.jit.script` is deprecated",
    "The feature will be removed",
    "You are using the legacy TorchScript-based ONNX export",
    "Constant folding - Only steps=1",
)


class KeypointRCNNPeople(nn.Module):
    """What is exported of a Keypoint R-CNN: one image in, its people's tensors out.

    Shares the model (no copy); the RLE flow (in the head's criterion) is used only in training
    and so is not in the graph.

    Arguments:
        model: a Keypoint R-CNN of :func:`posereg.models.keypoint_rcnn.build_keypoint_rcnn`,
            with the ``"rle"`` or the ``"heatmap"`` head.

    Example:
        >>> from posereg.models.keypoint_rcnn import build_keypoint_rcnn
        >>> model = build_keypoint_rcnn("rle", "resnet18_fpn_w0.5", min_size=128, max_size=128)
        >>> people = KeypointRCNNPeople(model).eval()
        >>> [tuple(t.shape[1:]) for t in people(torch.rand(3, 128, 96))]
        [(4,), (), (17, 2), (17,), (17, 2)]
    """

    def __init__(self, model: KeypointRCNN) -> None:
        super().__init__()
        self.model = model

    @property
    def has_sigma(self) -> bool:
        """Whether the head predicts sigma (the RLE head)."""
        return isinstance(self.model.roi_heads, RegressionRoIHeads)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """image (3, H, W) in [0, 1] -> boxes (N, 4) x1y1x2y2, scores (N,), keypoints (N, K, 2),
        keypoint_scores (N, K)[, sigma (N, K, 2)], all in the image's pixels."""
        r = self.model([image])[0]
        people = (r["boxes"], r["scores"], r["keypoints"][..., :2], r["keypoints_scores"])
        return (*people, r["keypoints_sigma"]) if self.has_sigma else people


class DensePeopleModule(nn.Module):
    """What is exported of the dense one-stage model (:mod:`posereg.models.dense`): one image in,
    its people's tensors out, by the model's own forward and
    :func:`posereg.models.dense.decode_image` (the code ``DensePoseModel.predict`` runs).

    The image is padded at the bottom and right to a multiple of 32 inside the graph (no
    coordinate moves), so any H, W works. With ``nms="box"`` the graph ends with box NMS and the
    ``max_people`` cut; with ``nms="oks"`` it ends before NMS (the ``pre_nms_top_k`` candidates,
    best first) and :class:`OnnxPeopleModel` applies OKS-NMS
    (:func:`posereg.models.dense.oks_nms_people`, NumPy) after it. ``flip_test`` puts
    :meth:`posereg.models.dense.DensePoseModel.flip_forward` in the graph (two network passes).

    Arguments:
        model: a :class:`posereg.models.dense.DensePoseModel`; shared, not copied.
        score_threshold, pre_nms_top_k, nms, nms_threshold, max_people, flip_test: the
            decoding's (:meth:`posereg.models.dense.DensePoseModel.predict`), fixed in the graph.

    Example:
        >>> from posereg.models.dense import build_dense_model
        >>> model = build_dense_model("rle", width=0.25, fpn_channels=16, head_convs=1)
        >>> people = DensePeopleModule(model, score_threshold=0.0, max_people=3).eval()
        >>> [tuple(t.shape) for t in people(torch.rand(3, 64, 80))]
        [(3, 4), (3,), (3, 17, 2), (3, 17), (3, 17, 2)]
    """

    def __init__(
        self,
        model: nn.Module,
        score_threshold: float = 0.05,
        pre_nms_top_k: int = 1000,
        nms: str = "box",
        nms_threshold: float | None = None,
        max_people: int = 100,
        flip_test: bool = False,
    ) -> None:
        from posereg.models.dense import NMS_THRESHOLDS

        super().__init__()
        if nms not in NMS_THRESHOLDS:
            raise ValueError(f"unknown nms {nms!r}; valid: {', '.join(NMS_THRESHOLDS)}")
        self.model = model
        self.score_threshold = float(score_threshold)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.nms = nms
        self.nms_threshold = NMS_THRESHOLDS[nms] if nms_threshold is None else float(nms_threshold)
        self.max_people = int(max_people)
        self.flip_test = bool(flip_test)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """image (3, H, W) in [0, 1] -> boxes (N, 4) x1y1x2y2, scores (N,), keypoints (N, K, 2),
        keypoint_scores (N, K), sigma (N, K, 2), the image's pixels, best score first."""
        from posereg.models.dense import decode_image

        box_threshold = self.nms_threshold if self.nms == "box" else None
        images = image[None]
        out = self.model.flip_forward(images) if self.flip_test else self.model(images)
        people = decode_image(
            out, 0, self.score_threshold, self.pre_nms_top_k, box_threshold,
            self.max_people,
        )  # fmt: skip
        return tuple(people)


def export_people(
    module: nn.Module,
    path: str | os.PathLike,
    example: Tensor,
    family: str,
    opset: int = 17,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export a people module (one image in, :data:`PEOPLE_OUTPUTS` out) to ONNX.

    Arguments:
        module: ``forward(image (3, H, W)) -> (boxes, scores, keypoints, keypoint_scores[,
            sigma])`` as :class:`KeypointRCNNPeople`; exported in eval mode (every submodule's
            mode is restored afterwards).
        path: the ``.onnx`` file to write (parent folders are created; written to a temporary
            file and renamed, so a failed export leaves no partial file).
        example: an image (3, H, W) to trace with; H and W stay dynamic.
        family: the model family written to the metadata (e.g. :data:`KEYPOINT_RCNN`).
        opset: ONNX opset, at least :data:`MIN_OPSET`.
        metadata: more ``metadata_props`` (``config`` among them).

    Returns:
        The path written.

    Raises:
        ValueError: an opset below :data:`MIN_OPSET`, ``family`` ``top_down``, or a module that
            returns neither 4 nor 5 tensors.
        OSError: ``cannot write PATH: <why>``.
    """
    onnx = _require("onnx")
    if opset < MIN_OPSET:
        raise ValueError(f"multi-person export needs opset >= {MIN_OPSET}, got opset {opset}")
    if family == TOP_DOWN:
        raise ValueError("family top_down is posereg.export's (crops in), not a people export")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e, f"cannot create the folder of {path}") from None
    with torch.no_grad(), _eval_mode(module):
        people = module(example)
    if len(people) not in (4, 5):
        raise ValueError(
            f"a people module returns {', '.join(PEOPLE_OUTPUTS[:4])}[, sigma]; "
            f"{type(module).__name__} returns {len(people)} tensors"
        )
    names = list(PEOPLE_OUTPUTS[: len(people)])
    num_keypoints = people[2].shape[1]
    axes = {INPUT_NAME: {1: "height", 2: "width"}, **{n: {0: "people"} for n in names}}
    with atomic_path(path) as tmp, _eval_mode(module), warnings.catch_warnings():
        # torchvision's detection code handles traced sizes in ways it has made trace-safe
        # (torch.tensor of a traced size, Python numbers), and the tracer warns on each; it
        # indexes boxes with indices from torch.where / NMS (never negative, which the index
        # warning is about); the TorchScript exporter warns that it is deprecated. What matters
        # is checked by parity (check_people_onnx) on images of other sizes and people counts.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        for message in _EXPORT_NOISE:
            warnings.filterwarnings("ignore", message)
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
            verbose=False,
        )
        proto = onnx.load(str(tmp))
        props = {
            METADATA_KEY: str(EXPORT_VERSION),
            FAMILY_KEY: family,
            "producer": "posereg",
            "input": f"{INPUT_NAME} (3, H, W) float32 RGB in [0, 1], one image per call",
            "outputs": ",".join(names),
            "num_keypoints": str(num_keypoints),
            "coordinates": "pixels of the input image; boxes x1, y1, x2, y2",
            "opset": str(opset),
            "precision": "float32",
            **dict(metadata or {}),
        }
        onnx.helper.set_model_props(proto, props)
        onnx.save(proto, str(tmp))
    return path


def export_keypoint_rcnn(
    model: KeypointRCNN,
    path: str | os.PathLike,
    opset: int = 17,
    config: Mapping[str, Any] | None = None,
    score_rule: str | None = None,
) -> Path:
    """Export a Keypoint R-CNN (RLE or heatmap head) with its people decoded in the graph.

    The thresholds in the graph are the model's (``roi_heads.score_thresh``, ``nms_thresh``,
    ``detections_per_img``; the resize ``min_size``/``max_size``): set them before exporting.
    They are written to the metadata.

    Arguments:
        model: the model (:func:`posereg.models.keypoint_rcnn.build_keypoint_rcnn`).
        path: the ``.onnx`` file to write.
        opset: ONNX opset (>= :data:`MIN_OPSET`).
        config: the run's config or the builder's options, saved as JSON in ``config``.
        score_rule: the instance score rule :class:`OnnxPeopleModel` applies
            (:func:`posereg.metrics.instance_score`); default ``"official"`` for the RLE head and
            ``"box"`` for the heatmap head (whose keypoint scores are logits).

    Returns:
        The path written.
    """
    people = KeypointRCNNPeople(model)
    heads = model.roi_heads
    size = model.transform.min_size[-1]
    rule = score_rule or ("official" if people.has_sigma else "box")
    metadata = {
        "config": json.dumps(dict(config or {}), default=str),
        "head": "rle" if people.has_sigma else "heatmap",
        "score_rule": rule,
        "min_size": str(size),
        "max_size": str(model.transform.max_size),
        "box_score_thresh": str(heads.score_thresh),
        "box_nms_thresh": str(heads.nms_thresh),
        "box_detections_per_img": str(heads.detections_per_img),
    }
    example = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    device = next(model.parameters()).device
    return export_people(people, path, example.to(device), KEYPOINT_RCNN, opset, metadata)


def export_dense(
    people: DensePeopleModule,
    path: str | os.PathLike,
    opset: int = 17,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Export the dense one-stage model with its people decoded in the graph
    (:class:`DensePeopleModule`, family :data:`DENSE`).

    The decoding's settings are written to the metadata; ``nms`` ``oks`` tells
    :class:`OnnxPeopleModel` to apply OKS-NMS at ``nms_threshold`` and the ``max_people`` cut to
    the graph's candidates. The trace's example is a 128 x 96 image (H, W stay dynamic).
    """
    metadata = {
        "config": json.dumps(dict(config or {}), default=str),
        "score_rule": "box",  # the score is the model's own (FCOS), as in DensePoseModel.predict
        "score_threshold": str(people.score_threshold),
        "pre_nms_top_k": str(people.pre_nms_top_k),
        "nms": people.nms,
        "nms_in_graph": "box" if people.nms == "box" else "none",
        "nms_threshold": str(people.nms_threshold),
        "max_people": str(people.max_people),
        "flip_test": str(people.flip_test).lower(),
        "padding": "bottom and right to a multiple of 32, inside the graph",
    }
    example = torch.rand(3, 128, 96, generator=torch.Generator().manual_seed(0))
    device = next(people.parameters()).device
    return export_people(people, path, example.to(device), DENSE, opset, metadata)


@dataclass(frozen=True)
class PeopleParity:
    """The largest differences between ONNX Runtime and PyTorch over the images checked.

    Attributes:
        people: people found (the same number by both) over all images.
        boxes: max |box corner difference|, px.
        scores: max |detection score difference|.
        keypoints: max |keypoint coordinate difference|, px.
        keypoint_scores: max |keypoint score difference|.
        sigma: max |sigma difference| / sigma (relative); None without sigma.
    """

    people: int
    boxes: float
    scores: float
    keypoints: float
    keypoint_scores: float
    sigma: float | None


def _match(expected: Tensor, got: Tensor) -> Tensor | None:
    """For each expected box (N, 4) the index of the nearest got box (N, 4), if that pairs them
    one to one (detections with equal scores may come out in another order)."""
    if len(expected) == 0:
        return torch.zeros(0, dtype=torch.long)
    order = (expected[:, None] - got[None]).abs().amax(dim=-1).argmin(dim=1)
    return order if len(set(order.tolist())) == len(order) else None


def check_people_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    images: Sequence[Tensor],
    atol: float = 1e-3,
    sigma_rtol: float = 1e-4,
) -> PeopleParity:
    """Run a people export with ONNX Runtime (CPU) and compare its people with PyTorch's.

    The same people: the same count per image, each PyTorch person paired with the ONNX one of
    the nearest box; then boxes and keypoints within ``atol`` px, scores within ``atol``, sigma
    within ``sigma_rtol`` relative.

    Arguments:
        module: the exported people module (:class:`KeypointRCNNPeople`).
        path: the ``.onnx`` file.
        images: images (3, H, W) in [0, 1]; use other sizes than the export's example.
        atol: the largest accepted difference of boxes, keypoints (px) and scores.
        sigma_rtol: the largest accepted relative difference of sigma.

    Returns:
        The largest differences (:class:`PeopleParity`).

    Raises:
        OnnxMismatchError: another number of people, people that do not pair, or a difference
            above the tolerance (naming the image and the output).
    """
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst = dict.fromkeys(names, 0.0)
    count = 0
    device = next(module.parameters()).device
    with torch.no_grad(), _eval_mode(module):
        for i, image in enumerate(images):
            where = f"{path}: image {i} ({image.shape[1]}x{image.shape[2]})"
            expected = [t.float().cpu() for t in module(image.to(device))]
            feed = {INPUT_NAME: np.ascontiguousarray(image.float().cpu().numpy())}
            got = [torch.from_numpy(g) for g in session.run(names, feed)]
            if len(got) != len(expected):
                raise OnnxMismatchError(
                    f"{where}: outputs {names}, but the model gives {len(expected)}"
                )
            if len(got[0]) != len(expected[0]):
                raise OnnxMismatchError(
                    f"{where}: ONNX Runtime finds {len(got[0])} people, PyTorch {len(expected[0])}"
                )
            order = _match(expected[0], got[0])
            if order is None:
                raise OnnxMismatchError(f"{where}: ONNX Runtime's boxes do not pair with PyTorch's")
            count += len(order)
            for name, e, g in zip(names, expected, got, strict=True):
                g = g[order]
                diff = (g - e).abs()
                if name == "sigma":
                    diff = diff / e.abs().clamp_min(1e-12)
                worst[name] = max(worst[name], float(diff.max()) if diff.numel() else 0.0)
                limit = sigma_rtol if name == "sigma" else atol
                if worst[name] > limit:
                    raise OnnxMismatchError(
                        f"{where}: {name} differs from PyTorch's by {worst[name]:.3g} > {limit:g}"
                        + (" (relative)" if name == "sigma" else "")
                    )
    return PeopleParity(
        people=count,
        boxes=worst["boxes"],
        scores=worst["scores"],
        keypoints=worst["keypoints"],
        keypoint_scores=worst["keypoint_scores"],
        sigma=worst.get("sigma"),
    )


class OnnxPeopleModel:
    """A multi-person export run by ONNX Runtime: images in, one PoseResult per image out.

    The counterpart of :class:`posereg.runtime.OnnxPoseModel` for models without boxes: the graph
    decodes the people, and the conversion to :class:`posereg.predict.PoseResult` is the PyTorch
    model's (:func:`posereg.models.keypoint_rcnn.to_pose_results`: boxes to x, y, w, h;
    confidence = the keypoint scores; sigma; the instance score by the export's ``score_rule``).

    Arguments:
        session: an ``onnxruntime.InferenceSession`` of a people export.
        metadata: its ``metadata_props``.
    """

    def __init__(self, session: Any, metadata: Mapping[str, str]) -> None:
        self.session = session
        self.metadata = dict(metadata)
        self.family = self.metadata[FAMILY_KEY]
        self.score_rule = self.metadata.get("score_rule", "official")
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, image: Tensor) -> dict[str, np.ndarray]:
        """image (3, H, W) in [0, 1] -> the graph's outputs by name (:data:`PEOPLE_OUTPUTS`)."""
        x = np.ascontiguousarray(image.detach().float().cpu().numpy())
        return dict(
            zip(
                self.output_names, self.session.run(self.output_names, {INPUT_NAME: x}), strict=True
            )
        )

    def predict(self, images: Sequence[Tensor]) -> list[PoseResult]:
        """images, each (3, H, W) in [0, 1] (any sizes) -> one PoseResult per image, pixels of
        that image (keypoints (N, K, 2), sigma (N, K, 2) or None, confidence (N, K), boxes (N, 4)
        x, y, w, h, scores (N,))."""
        raw = [{k: torch.from_numpy(v) for k, v in self.run(image).items()} for image in images]
        if self.metadata.get("nms") == "oks":  # a dense export's post-step (no OKS-NMS in graph)
            from posereg.models.dense import DensePeople, oks_nms_people

            threshold, most = (
                float(self.metadata["nms_threshold"]),
                int(self.metadata["max_people"]),
            )
            raw = [oks_nms_people(DensePeople(**r), threshold, most)._asdict() for r in raw]
        outputs = [{_RESULT_KEYS[k]: v for k, v in r.items()} for r in raw]
        return to_pose_results(outputs, self.score_rule)


def load_people_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxPeopleModel:
    """The :class:`OnnxPeopleModel` of a multi-person export (:func:`export_people`).

    Arguments:
        path: an ``.onnx`` file written by :func:`export_keypoint_rcnn` (or another family's
            people exporter).
        threads: ONNX Runtime's intra-op threads (default ``torch.get_num_threads()``).

    Raises:
        CheckpointError: no such file, not an ONNX model, not a posereg export or of another
            format version (:func:`posereg.runtime.open_export`), or a top-down export.
    """
    session, meta = open_export(path, threads)
    family = meta.get(FAMILY_KEY, TOP_DOWN)
    if family == TOP_DOWN:
        raise CheckpointError(
            f"{path}: a top-down export (person crops in, crop keypoints out), not a multi-person "
            "one; run it with posereg predict --checkpoint (boxes from a detector) or "
            "posereg.runtime.load_onnx_model"
        )
    return OnnxPeopleModel(session, meta)
