"""ONNX export of a top-down model's inference path: backbone + head + decode, no flow (Sec. 3.3).

The exported graph is ``model.predict`` (without the flip test): it maps ``images`` (B, 3, H, W)
to ``keypoints`` (B, K, D), ``scores`` (B, K) and, for heads that predict one, ``sigma``
(B, K, D), with a dynamic batch axis. Keypoints are in normalized crop coordinates
(x / W - 0.5, y / H - 0.5); images must be preprocessed as in training. The head's own output
fields (``head.mu``, ``head.sigma``, ``head.heatmaps``, ...) are outputs too: what
:mod:`posereg.runtime` flips back, averages and decodes with the head's own code, so that an
exported model predicts through :class:`posereg.predict.Predictor` and ``posereg eval`` exactly as
the PyTorch model does. Everything else those need (the config, the predictive regions' radii,
the sigma calibration) is in the file's ``metadata_props`` (:data:`EXPORT_VERSION`).

``posereg export --int8`` quantises the graph with ONNX Runtime's static QDQ quantisation
(:func:`quantize_int8`), calibrated on training crops. Needs the optional extra
``posereg[export]`` (onnx, onnxruntime).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from posereg.config import Config, to_dict
from posereg.data.dataset import TopDownDataset
from posereg.family import detector_free_family
from posereg.models.build import codec_for, data_skeleton, model_from_checkpoint
from posereg.models.pose import TopDownModel
from posereg.outputs import atomic_path, os_error, refuse_existing
from posereg.runtime import EXPORT_VERSION, HEAD_PREFIX, METADATA_KEY, is_onnx
from posereg.torchfile import CHECKPOINT_WHAT, read_torch_file
from posereg.uncertainty import (
    DRAW_LEVEL,
    FAST_NUM_SAMPLES,
    RELIABILITY_LEVELS,
    REPORT_LEVELS,
    region_from_criterion,
)

__all__ = [
    "InferenceModel",
    "OnnxMismatchError",
    "check_onnx",
    "export_metadata",
    "export_onnx",
    "quantize_int8",
]

INPUT_NAMES = ["images"]
OUTPUT_NAMES = ["keypoints", "scores", "sigma"]  # sigma only for heads that predict one
#: The smallest opset whose QuantizeLinear/DequantizeLinear take per-channel scales (axis),
#: which --int8 uses for the convolution weights. Below it ``quantize_static`` (ONNX Runtime
#: 1.32) still writes the axis, and the model fails to load ("Unrecognized attribute: axis").
INT8_MIN_OPSET = 13
#: Training crops ``--int8`` calibrates on by default.
CALIBRATION_IMAGES = 256


class OnnxMismatchError(RuntimeError):
    """The ONNX model's outputs differ from PyTorch's by more than the tolerance."""


class InferenceModel(nn.Module):
    """What is exported: ``model.predict`` as plain tensors ``(keypoints, scores[, sigma])``,
    then the head's output fields that are not None (``head.mu``, ``head.sigma``, ...).

    ``model.predict`` without the flip test is ``head.decode(model(images))``; both the decoded
    keypoints and the head's output they come from leave the graph, so that
    :class:`posereg.runtime.OnnxPoseModel` can run the flip test with the head's own code.
    Shares the model (no copy); the flow in the head's criterion is never called, so it is not
    in the graph.

    Arguments:
        model: the trained top-down model.
    """

    def __init__(self, model: TopDownModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """images (B, 3, H, W) -> keypoints (B, K, D), scores (B, K)[, sigma (B, K, D)], and
        the head's output fields."""
        out = self.model(images)
        decoded = self.model.head.decode(out)
        head = tuple(v for v in _fields(out).values() if v is not None)
        if decoded.sigma is None:
            return decoded.keypoints, decoded.scores, *head
        return decoded.keypoints, decoded.scores, decoded.sigma, *head


def _fields(output: Any) -> dict[str, Tensor | None]:
    return {f.name: getattr(output, f.name) for f in dataclasses.fields(output)}


def output_names(model: TopDownModel, input_size: tuple[int, int]) -> list[str]:
    """The exported outputs of ``model``: keypoints, scores, and sigma when its head has one, then
    ``head.FIELD`` for each field of the head's output that is not None."""
    with torch.no_grad(), _eval_mode(model):
        out = model(torch.zeros(1, 3, *input_size, device=_device(model)))
        decoded = model.head.decode(out)
    head = [HEAD_PREFIX + k for k, v in _fields(out).items() if v is not None]
    return OUTPUT_NAMES[: 2 if decoded.sigma is None else 3] + head


def _head_output_type(model: TopDownModel, input_size: tuple[int, int]) -> str:
    with torch.no_grad(), _eval_mode(model):
        return type(model(torch.zeros(1, 3, *input_size, device=_device(model)))).__name__


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"ONNX export needs {module}: pip install 'posereg[export]' (onnx, onnxruntime)"
        ) from None


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, then every submodule's own mode back (frozen BN layers stay frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def export_onnx(
    model: TopDownModel,
    path: str | os.PathLike,
    input_size: tuple[int, int] = (256, 192),
    opset: int = 17,
    dynamo: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export the inference path of ``model`` to an ONNX file.

    Arguments:
        model: a TopDownModel; exported in eval mode (its mode is restored afterwards).
        path: the ``.onnx`` file to write (parent folders are created).
        input_size: (H, W) of the input crops (fixed in the graph; the batch is dynamic).
        opset: ONNX opset version.
        dynamo: use torch's ``torch.export``-based exporter (needs ``onnxscript``, opset >=
            18) instead of the TorchScript-based one (default; deprecated upstream but
            dependency-free and fast).
        metadata: more ``metadata_props`` (:func:`export_metadata`: what makes the file a
            posereg export that :mod:`posereg.runtime` loads).

    The file is written to a temporary file in the same folder and renamed over ``path``, so
    an existing ``path`` is replaced whole and a failed export (a full disk) leaves no partial
    file.

    Raises:
        OSError: ``cannot write PATH: <why>`` (a full disk, a read-only folder).

    Returns:
        The path written. The model's metadata (input size, K, D, coordinate convention) is
        stored in the file's ``metadata_props``.
    """
    onnx = _require("onnx")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e, f"cannot create the folder of {path}") from None
    h, w = input_size
    wrapper = InferenceModel(model)
    outputs = output_names(model, (h, w))
    # Batch 2, not 1: an example batch of 1 would let the exporter specialise the batch axis.
    example = torch.randn(2, 3, h, w, device=_device(model))
    # written to a temporary file and renamed: a full disk or a kill leaves no half .onnx
    with atomic_path(path) as tmp, _eval_mode(model), _eval_mode(wrapper):
        if dynamo:
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise ImportError(
                    "export_onnx(dynamo=True) needs onnxscript: pip install onnxscript, "
                    "or use the default dynamo=False"
                ) from None
            if opset < 18:
                raise ValueError(f"the dynamo exporter writes opset >= 18, got opset={opset}")
            # the dynamo exporter takes dynamic shapes, the TorchScript one dynamic axes
            shapes = {
                "dynamic_shapes": {"images": {0: torch.export.Dim("batch")}},
                "external_data": False,
            }
        else:
            shapes = {"dynamic_axes": {name: {0: "batch"} for name in INPUT_NAMES + outputs}}
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            input_names=INPUT_NAMES,
            output_names=outputs,
            opset_version=opset,
            dynamo=dynamo,
            verbose=False,
            **shapes,
        )
        proto = onnx.load(str(tmp))
        head = model.head
        metadata = {
            "producer": "posereg",
            "input_size": f"{h},{w}",
            "num_keypoints": str(getattr(head, "num_keypoints", "")),
            "dim": str(getattr(head, "dim", "")),
            "head": type(head).__name__,
            "outputs": ",".join(outputs),
            "coordinates": "normalized crop coordinates: x / W - 0.5, y / H - 0.5",
            "scores": "the head's per-keypoint score (1 - mean_d sigma, RLE Eq. 9, with sigma)",
            "head_output": _head_output_type(model, (h, w)),
            **(metadata or {}),
        }
        onnx.helper.set_model_props(proto, metadata)
        onnx.save(proto, str(tmp))
    return path


def check_onnx(
    model: TopDownModel,
    path: str | os.PathLike,
    atol: float = 1e-4,
    batch_sizes: tuple[int, ...] = (1, 3),
    seed: int = 0,
) -> float:
    """Run the ONNX file with onnxruntime (CPU) and compare it with PyTorch on random images.

    Arguments:
        model: the TopDownModel that was exported.
        path: the ``.onnx`` file.
        atol: the largest accepted absolute difference.
        batch_sizes: batch sizes to try (exercises the dynamic batch axis).
        seed: seed of the random images.

    Returns:
        The largest absolute difference over every output (keypoints, scores[, sigma]) and all
        batch sizes.

    Raises:
        OnnxMismatchError: a difference above ``atol`` (naming the output and batch size).
    """
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, _, h, w = session.get_inputs()[0].shape
    names = [o.name for o in session.get_outputs()]
    wrapper = InferenceModel(model)
    generator = torch.Generator().manual_seed(seed)
    worst, where = 0.0, ""
    with _eval_mode(model):
        for b in batch_sizes:
            images = torch.randn(b, 3, h, w, generator=generator)
            with torch.no_grad():
                expected = wrapper(images.to(_device(model)))
            got = session.run(names, {INPUT_NAMES[0]: images.numpy()})
            if len(got) != len(expected):
                raise OnnxMismatchError(
                    f"{path}: outputs {names}, but the model gives {len(expected)} outputs"
                )
            for name, e, g in zip(names, expected, got, strict=True):
                if tuple(g.shape) != tuple(e.shape):
                    raise OnnxMismatchError(
                        f"{path}: output {name} has shape {tuple(g.shape)} for batch {b}, "
                        f"PyTorch gives {tuple(e.shape)}"
                    )
                diff = float((torch.from_numpy(g) - e.float().cpu()).abs().max())
                if diff > worst:
                    worst, where = diff, f"{name} at batch {b}"
    if worst > atol:
        raise OnnxMismatchError(
            f"{path}: ONNX Runtime differs from PyTorch by {worst:.3g} > atol {atol:g} ({where})"
        )
    return worst


def export_metadata(
    model: TopDownModel,
    cfg: Config,
    metrics: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` that make an ONNX file a posereg export (:data:`EXPORT_VERSION`).

    What :func:`posereg.runtime.load_onnx_model` needs besides the weights: the run's config as
    JSON (skeleton resolved; input size, padding, flip test, score rule, the model section that
    ``posereg eval`` checks), the predictive regions' radii r_p that the head's loss and flow
    define (:func:`posereg.uncertainty.region_from_criterion` with the draws
    :class:`posereg.predict.Predictor` uses, so the regions are the PyTorch path's, at the
    reliability, report and drawing levels), the sigma
    calibration and the checkpoint's metrics.

    Arguments:
        model: the trained model (its criterion gives the radii).
        cfg: the config it was trained with.
        metrics: the checkpoint's evaluation metrics (``sigma_calibration`` among them).
        calibration: the checkpoint's per-keypoint sigma calibration
            (``state["sigma_calibration"]``, :meth:`posereg.uncertainty.SigmaCalibration.to_state`);
            None when it holds none (the ONNX model then reports c = 1, as the checkpoint does).
    """
    metrics = dict(metrics or {})
    levels = tuple(sorted({*RELIABILITY_LEVELS, *REPORT_LEVELS, DRAW_LEVEL}))
    region = region_from_criterion(model.criterion, levels, num_samples=FAST_NUM_SAMPLES)
    skeleton = data_skeleton(cfg).to_dict()
    saved = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, skeleton=skeleton))
    return {
        METADATA_KEY: str(EXPORT_VERSION),
        "config": json.dumps(to_dict(saved)),
        "region": "" if region is None else json.dumps(dataclasses.asdict(region)),
        "metrics": json.dumps(metrics, default=str),
        "sigma_calibration_fit": "" if calibration is None else json.dumps(calibration),
        "precision": "float32",
    }


def calibration_crops(cfg: Config, num_images: int) -> np.ndarray:
    """``num_images`` training crops (N, 3, H, W) float32 for INT8 calibration.

    The crops are the training set's (``data.train_ann``, ``data.train_images``) made by the
    dataset code that training and evaluation use, without augmentation (as evaluation crops
    are), spread evenly over the set. Unreadable images are left out.

    Raises:
        ValueError: the training data is missing (naming the key and file), or no crop of it
            is usable (no labelled person, every picked image unreadable).
    """
    d = cfg.data
    for key, value, ok in (
        ("data.train_ann", d.train_ann, Path(d.train_ann).is_file()),
        ("data.train_images", d.train_images, Path(d.train_images).is_dir()),
    ):
        if not ok:
            raise ValueError(
                f"--int8 calibrates on training crops, but {key} of the checkpoint's config, "
                f"{value}, is not there (relative paths are read from the current folder: run the "
                "export where the training data is, or make it first: posereg data synth for a "
                "synthetic set)"
            )
    common: dict[str, Any] = dict(
        input_size=tuple(d.input_size),
        codec=codec_for(cfg),
        transform=dataclasses.replace(d.transform, augment=False),
        on_bad_image="skip",
    )
    if d.format == "mpii":
        dataset = TopDownDataset.from_mpii(d.train_ann, d.train_images, **common)
    else:
        if d.depth:
            common["depth_range"] = d.depth_range_mm
        dataset = TopDownDataset.from_coco(
            d.train_ann, d.train_images, skeleton=data_skeleton(cfg),
            keypoints_field=d.keypoints_field, **common,
        )  # fmt: skip
    if len(dataset) == 0:
        raise ValueError(
            f"{d.train_ann}: no usable person crops to calibrate --int8 on (no labelled person "
            "with an image)"
        )
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(num_images, len(dataset))).round())
    crops, why = [], ""
    for i in picks.astype(int):
        sample = dataset[int(i)]
        if sample.valid:
            crops.append(sample.image.numpy())
        else:
            why = sample.error or why
    if not crops:
        raise ValueError(
            f"{d.train_ann}: no usable person crops to calibrate --int8 on: all {len(picks)} "
            f"picked images are unreadable ({why})"
        )
    return np.stack(crops).astype(np.float32)


def int8_exclusions(path: str | os.PathLike) -> list[str]:
    """The nodes ``--int8`` keeps in float32: the sigma branch and the decode.

    That is every node from the head's ``fc_sigma`` layer on (its MatMul, bias Add and sigmoid),
    and the decode after the head (the scores' ``1 - mean_d sigma``, Eq. 9): sigma is a
    probability-scale quantity in (0, 1) whose small values set the regions and the scores, and
    those nodes cost nothing next to the backbone. Found by the exporter's module scopes
    (``/model/head/fc_sigma/...``); nodes outside ``/model/`` (the decode) are kept too. The
    names are the TorchScript-based exporter's (``export_onnx(dynamo=False)``, what ``posereg
    export`` uses); the dynamo exporter names nodes otherwise, and nothing would be kept.
    """
    onnx = _require("onnx")
    graph = onnx.load(str(path)).graph
    return [
        n.name
        for n in graph.node
        if "/head/fc_sigma" in n.name
        or n.name.startswith("/model/head/Sigmoid")
        or (n.name.startswith("/") and not n.name.startswith("/model/"))
    ]


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Crops:
    """Crops (N, 3, H, W), one batch of 1 at a time: an ONNX Runtime ``CalibrationDataReader``
    (any class with ``get_next`` is one, by its ``__subclasshook__``)."""

    def __init__(self, crops: np.ndarray) -> None:
        self.crops = crops
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.crops):
            return None
        self.index += 1
        return {INPUT_NAMES[0]: self.crops[self.index - 1 : self.index]}

    def rewind(self) -> None:
        self.index = 0


def quantize_int8(
    float_path: str | os.PathLike,
    path: str | os.PathLike,
    crops: np.ndarray,
    exclude: list[str] | None = None,
) -> Path:
    """ONNX Runtime static quantisation (QDQ) of an exported float32 model.

    Activations uint8 and weights int8 per channel (U8S8, what ONNX Runtime's x86 kernels run
    fastest), MinMax calibration on ``crops``. The file keeps the float model's
    ``metadata_props``, with ``precision: int8`` and the calibration size added.

    Arguments:
        float_path: the float32 export (:func:`export_onnx`, opset >= :data:`INT8_MIN_OPSET`).
        path: the INT8 file to write.
        crops: (N, 3, H, W) calibration crops (:func:`calibration_crops`).
        exclude: names of nodes kept in float32; default :func:`int8_exclusions`.

    Raises:
        ValueError: an opset below :data:`INT8_MIN_OPSET` (per-channel weights need it).
    """
    onnx = _require("onnx")
    quantization = _require("onnxruntime.quantization")
    from onnxruntime.quantization import QuantFormat, QuantType

    proto = onnx.load(str(float_path))
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < INT8_MIN_OPSET:
        raise ValueError(
            f"--int8 needs opset >= {INT8_MIN_OPSET} (per-channel int8 weights: QuantizeLinear "
            f"with an axis), got opset {opset}"
        )
    exclude = int8_exclusions(float_path) if exclude is None else exclude
    path = Path(path)
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory() as work, _quiet_root_logger():
        # (ONNX Runtime logs advice to pre-process the model, on the root logger: shape inference
        # and fusions, which the exporter's graph already has: static shapes, BN folded)
        quantization.quantize_static(
            str(float_path), str(Path(work) / "int8.onnx"), _Crops(crops),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
        )  # fmt: skip
        quantized = onnx.load(str(Path(work) / "int8.onnx"))
        props = {p.key: p.value for p in proto.metadata_props}
        props.update(precision="int8", calibration_images=str(len(crops)))
        del quantized.metadata_props[:]
        onnx.helper.set_model_props(quantized, props)
        onnx.save(quantized, str(tmp))
    return path


def compare_int8(
    float_path: str | os.PathLike, int8_path: str | os.PathLike, crops: np.ndarray
) -> dict[str, float]:
    """INT8 vs float32 on ``crops``: mean and max |keypoint difference| and mean |sigma
    difference|, in crop-normalized units (x / W, y / H)."""
    ort = _require("onnxruntime")
    out = []
    for p in (float_path, int8_path):
        session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()][:3]
        out.append(session.run(names, {INPUT_NAMES[0]: crops}))
    keypoints = np.abs(out[0][0] - out[1][0])
    result = {"keypoints_mean": float(keypoints.mean()), "keypoints_max": float(keypoints.max())}
    if len(out[0]) == 3 and out[0][2].shape == out[0][0].shape:
        result["sigma_mean"] = float(np.abs(out[0][2] - out[1][2]).mean())
    return result


def _export_people(
    family: Any, checkpoint: str | os.PathLike, path: Path, check: bool, opset: int, int8: bool
) -> tuple[Path, float | None]:
    """:func:`export_checkpoint` of a detector-free family: the family's people export
    (:func:`posereg.export_multiperson.export_people`, metadata ``family``) and the parity check
    on the sample photos (the largest box or keypoint difference, px)."""
    if int8:
        raise ValueError(f"--int8: {family.title} exports are float32 only")
    from posereg.export_multiperson import check_people_onnx
    from posereg.samples import SAMPLES_DIR

    model, cfg, _ = family.model_from_checkpoint(checkpoint)
    family.export_onnx(model, cfg, path, opset)
    if not check:
        return path, None
    from posereg.data.image_io import read_image
    from posereg.families.multiperson import images_to_tensors

    photos = sorted((SAMPLES_DIR / "coco").glob("*.jpg"))[:2]
    images = images_to_tensors([read_image(p) for p in photos])
    parity = check_people_onnx(family.people_module(model, cfg), path, images)
    return path, max(parity.boxes, parity.keypoints)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike | None = None,
    format: str = "onnx",
    check: bool = True,
    overwrite: bool = False,
    opset: int = 17,
    int8: bool = False,
    calibration_images: int | None = None,
) -> tuple[Path, float | None]:
    """``posereg export``: the inference model of a posereg checkpoint to ONNX.

    The input size is the one the checkpoint was trained at (``data.input_size``). ``out``
    defaults to the checkpoint's path with the suffix ``.onnx`` (``.int8.onnx`` with ``int8``).
    The file carries :func:`export_metadata`, so that ``posereg predict``/``serve``/``eval`` run
    it through ONNX Runtime.

    With ``int8``: the float32 export is quantised (:func:`quantize_int8`) on
    ``calibration_images`` training crops (default :data:`CALIBRATION_IMAGES`), and the check
    compares INT8 with float32 on them (mean |keypoint difference|, crop-normalized) instead.

    Returns:
        The written file and, with ``check``, onnxruntime's max abs difference to PyTorch (with
        ``int8``: the mean |keypoint difference| of INT8 to float32 on the calibration crops).

    Raises:
        OutputExistsError: ``out`` exists and not ``overwrite`` (checked before any work).
        ValueError: ``calibration_images`` without ``int8`` or below 1, an opset below
            :data:`INT8_MIN_OPSET` with ``int8``, missing or unusable training data.
        OSError: ``cannot write OUT: <why>``; no partial file is left.
    """

    if format != "onnx":
        raise ValueError(f"unknown export format {format!r}; valid: onnx")
    if calibration_images is not None and not int8:
        raise ValueError("--calibration-images needs --int8 (it sets how many crops calibrate it)")
    if calibration_images is not None and calibration_images < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {calibration_images}")
    if int8 and opset < INT8_MIN_OPSET:
        raise ValueError(
            f"--int8 needs --opset >= {INT8_MIN_OPSET}, got --opset {opset}: its per-channel int8 "
            "weights need DequantizeLinear with an axis (below opset 13 ONNX Runtime writes a "
            "model that it cannot load)"
        )
    if is_onnx(checkpoint):  # its default output would be itself
        read_torch_file(checkpoint, CHECKPOINT_WHAT)  # "not a posereg checkpoint: it is ONNX"
    suffix = ".int8.onnx" if int8 else ".onnx"
    path = Path(out) if out is not None else Path(checkpoint).with_suffix(suffix)
    if not overwrite:
        refuse_existing(path)
    people = detector_free_family(checkpoint)
    if people is not None:  # whole images in, people out: posereg.export_multiperson
        return _export_people(people, checkpoint, path, check, opset, int8)
    model, cfg, state = model_from_checkpoint(checkpoint)
    metadata = export_metadata(model, cfg, state.get("metrics"), state.get("sigma_calibration"))
    size = tuple(cfg.data.input_size)
    if not int8:
        export_onnx(model, path, size, opset=opset, metadata=metadata)  # type: ignore[arg-type]
        return path, (check_onnx(model, path) if check else None)
    crops = calibration_crops(cfg, calibration_images or CALIBRATION_IMAGES)
    with tempfile.TemporaryDirectory() as work:
        float_path = Path(work) / "float32.onnx"
        export_onnx(model, float_path, size, opset=opset, metadata=metadata)  # type: ignore[arg-type]
        if check:
            check_onnx(model, float_path)
        quantize_int8(float_path, path, crops)
        diff = compare_int8(float_path, path, crops)["keypoints_mean"] if check else None
    return path, diff
