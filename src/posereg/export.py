"""ONNX export of a top-down model's inference path: backbone + head + decode, no flow (Sec. 3.3).

The exported graph is ``model.predict`` (without the flip test): it maps ``images`` (B, 3, H, W)
to ``keypoints`` (B, K, D), ``scores`` (B, K) and, for heads that predict one, ``sigma``
(B, K, D), with a dynamic batch axis. Keypoints are in normalized crop coordinates
(x / W - 0.5, y / H - 0.5); images must be preprocessed as in training. Needs the optional extra
``posereg[export]`` (onnx, onnxruntime).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from posereg.models.build import model_from_checkpoint
from posereg.models.pose import TopDownModel
from posereg.outputs import atomic_path, os_error, refuse_existing

__all__ = ["InferenceModel", "OnnxMismatchError", "check_onnx", "export_onnx"]

INPUT_NAMES = ["images"]
OUTPUT_NAMES = ["keypoints", "scores", "sigma"]  # sigma only for heads that predict one


class OnnxMismatchError(RuntimeError):
    """The ONNX model's outputs differ from PyTorch's by more than the tolerance."""


class InferenceModel(nn.Module):
    """What is exported: ``model.predict`` as plain tensors ``(keypoints, scores[, sigma])``.

    Shares the model (no copy); the flow in the head's criterion is never called, so it is not
    in the graph.

    Arguments:
        model: the trained top-down model.
    """

    def __init__(self, model: TopDownModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """images (B, 3, H, W) -> keypoints (B, K, D), scores (B, K)[, sigma (B, K, D)]."""
        decoded = self.model.predict(images)
        if decoded.sigma is None:
            return decoded.keypoints, decoded.scores
        return decoded.keypoints, decoded.scores, decoded.sigma


def output_names(model: TopDownModel, input_size: tuple[int, int]) -> list[str]:
    """The exported outputs of ``model``: keypoints, scores, and sigma when its head has one."""
    with torch.no_grad(), _eval_mode(model):
        decoded = model.predict(torch.zeros(1, 3, *input_size, device=_device(model)))
    return OUTPUT_NAMES[: 2 if decoded.sigma is None else 3]


def _require(module: str) -> Any:
    try:
        return __import__(module)
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


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike | None = None,
    format: str = "onnx",
    check: bool = True,
    overwrite: bool = False,
) -> tuple[Path, float | None]:
    """``posereg export``: the inference model of a posereg checkpoint to ONNX.

    The input size is the one the checkpoint was trained at (``data.input_size``). ``out``
    defaults to the checkpoint's path with the suffix ``.onnx``.

    Returns:
        The written file and, with ``check``, onnxruntime's max abs difference to PyTorch.

    Raises:
        OutputExistsError: ``out`` exists and not ``overwrite`` (checked before any work).
        OSError: ``cannot write OUT: <why>``; no partial file is left.
    """

    if format != "onnx":
        raise ValueError(f"unknown export format {format!r}; valid: onnx")
    path = Path(out) if out is not None else Path(checkpoint).with_suffix(".onnx")
    if not overwrite:
        refuse_existing(path)
    model, cfg, _ = model_from_checkpoint(checkpoint)
    export_onnx(model, path, tuple(cfg.data.input_size))
    return path, (check_onnx(model, path) if check else None)
