"""An exported posereg model run by ONNX Runtime, where a :class:`TopDownModel` is used.

:class:`OnnxPoseModel` is a :class:`posereg.models.pose.TopDownModel` whose network (backbone +
head) is an ``onnxruntime.InferenceSession``: its ``forward`` returns the head's output (the graph's
``head.*`` outputs, :mod:`posereg.export`) and everything after it is the PyTorch model's own
code, inherited: ``predict`` (the flip test: the mirrored crop, the head's ``flip_back`` and
:func:`posereg.models.heads.average_outputs`) and the head's ``decode``. So
:class:`posereg.predict.Predictor` (``posereg predict``, ``posereg serve``) and ``posereg eval``
take it where they take the PyTorch model, with the same pre- and post-processing.

The head it decodes with is built from the export's config on the meta device (no weights: decoding
and flipping use the output tensors and the input size only). What else the PyTorch path reads
from the checkpoint (config, the predictive regions' radii, the sigma calibration, metrics) is
in the file's ``metadata_props`` (:data:`EXPORT_VERSION`).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor, nn

from posereg.config import Config, ConfigError, from_saved
from posereg.errors import CheckpointError
from posereg.models.factory import pose_head_options
from posereg.models.heads import HeadOutput, create_head
from posereg.models.pose import TopDownModel
from posereg.uncertainty import PredictiveRegion

__all__ = [
    "EXPORT_VERSION",
    "FAMILY_KEY",
    "HEAD_PREFIX",
    "METADATA_KEY",
    "TOP_DOWN",
    "OnnxPoseModel",
    "is_onnx",
    "load_onnx_model",
    "open_export",
]

#: ``metadata_props`` key whose value is the export format version; a file without it is not a
#: posereg export.
METADATA_KEY = "posereg_export"
#: Version 1: ``config`` (JSON, skeleton resolved), ``region`` (JSON of a PredictiveRegion, or
#: empty), ``sigma_calibration_fit`` (JSON of the checkpoint's per-keypoint
#: :class:`posereg.uncertainty.SigmaCalibration`, or empty), ``metrics`` (JSON), ``precision``
#: (float32 / int8), ``head_output`` (the head's output class) and the graph outputs
#: ``head.FIELD``.
EXPORT_VERSION = 1
#: ``metadata_props`` key naming the model family of an export: absent (files written before it)
#: or :data:`TOP_DOWN` for :mod:`posereg.export`'s crop models, which :func:`load_onnx_model`
#: loads; ``keypoint_rcnn`` for a multi-person export with the people decoded in the graph
#: (:mod:`posereg.export_multiperson`, which loads those).
FAMILY_KEY = "family"
TOP_DOWN = "top_down"
#: Prefix of the graph outputs that are the head's output fields (``head.mu``, ``head.sigma``).
HEAD_PREFIX = "head."
_OUTPUT_TYPES = {t.__name__: t for t in get_args(HeadOutput)}


def is_onnx(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an ONNX file (``.onnx``) rather than a posereg checkpoint."""
    return Path(path).suffix.lower() == ".onnx"


class OnnxPoseModel(TopDownModel):
    """A posereg ONNX export as a TopDownModel: ONNX Runtime runs backbone + head.

    Arguments:
        session: an ``onnxruntime.InferenceSession`` of a posereg export.
        head: the model's head, built without weights (meta device): its ``decode`` and
            ``flip_back`` are the PyTorch model's.
        output_type: the head's output class (``RegressionOutput``, ...).
        region: the predictive regions' radii from the export's metadata (None without a
            density); :class:`posereg.predict.Predictor` uses them instead of the flow.

    The model lives where ONNX Runtime runs it (CPU): ``to()`` changes nothing, and outputs come
    back on the device of the input images.
    """

    def __init__(
        self,
        session: Any,
        head: nn.Module,
        output_type: type,
        region: PredictiveRegion | None = None,
    ) -> None:
        super().__init__(nn.Identity(), head)
        self.session = session
        self.output_type = output_type
        self.predictive_region = region
        self.output_names = [
            o.name for o in session.get_outputs() if o.name.startswith(HEAD_PREFIX)
        ]

    @property
    def criterion(self) -> nn.Module | None:
        """None: the flow is not exported (its radii are in ``predictive_region``)."""
        return None

    def to(self, *args: Any, **kwargs: Any) -> OnnxPoseModel:  # type: ignore[override]
        """ONNX Runtime's CPU session does not move; returns the model itself."""
        return self

    def forward(self, images: Tensor) -> HeadOutput:
        """images (B, 3, H, W) -> the head's output (e.g. RegressionOutput mu, sigma (B, K, D))."""
        x = images.detach().float().cpu().numpy()
        outputs = self.session.run(self.output_names, {"images": np.ascontiguousarray(x)})
        fields = {
            name[len(HEAD_PREFIX) :]: torch.from_numpy(value).to(images.device)
            for name, value in zip(self.output_names, outputs, strict=True)
        }
        return self.output_type(**fields)


def _session(path: Path, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModuleNotFoundError(
            f"{path}: running an ONNX model needs onnxruntime: pip install 'posereg[export]'"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not an ONNX model ONNX Runtime can load ({why})") from None


def open_export(path: str | os.PathLike, threads: int | None = None) -> tuple[Any, dict[str, str]]:
    """The ONNX Runtime session and the ``metadata_props`` of a posereg export, any family.

    Arguments:
        path: an ``.onnx`` file written by ``posereg export``.
        threads: ONNX Runtime's intra-op threads (default ``torch.get_num_threads()``).

    Raises:
        CheckpointError: no such file, not an ONNX model, or no posereg metadata (an ONNX file
            that ``posereg export`` did not write) or metadata of another version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    session = _session(path, threads)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    version = meta.get(METADATA_KEY)
    if version is None:
        raise CheckpointError(
            f"{path}: not a posereg export (its metadata_props have no {METADATA_KEY!r}); "
            "export a posereg checkpoint with: posereg export --checkpoint CKPT.pt"
        )
    if version != str(EXPORT_VERSION):
        raise CheckpointError(
            f"{path}: posereg export format {version}, this posereg reads format "
            f"{EXPORT_VERSION}; export the checkpoint again"
        )
    return session, meta


def load_onnx_model(
    path: str | os.PathLike, cfg: Config | None = None, threads: int | None = None
) -> tuple[OnnxPoseModel, Config, dict[str, Any]]:
    """The model of a posereg ONNX export, as :func:`posereg.models.build.model_from_checkpoint`
    returns a checkpoint's.

    Arguments:
        path: an ``.onnx`` file written by ``posereg export``.
        cfg: an evaluation config; its model section and skeleton are replaced by the export's,
            and its input size must be the export's. Default: the export's own config.
        threads: ONNX Runtime's intra-op threads (default ``torch.get_num_threads()``).

    Returns:
        (model, the config, ``{"metrics": ..., "metadata": ...}`` like a checkpoint dict).

    Raises:
        CheckpointError: no such file, not an ONNX model, or no posereg metadata (an ONNX file
            that ``posereg export`` did not write) or metadata of another version
            (:func:`open_export`), or a multi-person export (another ``family``).
        ConfigError: ``cfg``'s ``data.input_size`` is not the export's.
    """
    path = Path(path)
    session, meta = open_export(path, threads)
    family = meta.get(FAMILY_KEY, TOP_DOWN)
    if family != TOP_DOWN:
        raise CheckpointError(
            f"{path}: a multi-person export (family {family}: whole images in, people out), not "
            "a top-down model; run it with posereg.export_multiperson.load_people_onnx"
        )
    saved = from_saved(Config, json.loads(meta["config"]))
    if cfg is None:
        cfg = saved
    else:
        if tuple(cfg.data.input_size) != tuple(saved.data.input_size):
            raise ConfigError(
                f"data.input_size is {list(cfg.data.input_size)}, but {path} was exported at "
                f"{list(saved.data.input_size)}; set data.input_size to that"
            )
        cfg = replace(cfg, model=saved.model, data=replace(cfg.data, skeleton=saved.data.skeleton))
    m = saved.model
    num_keypoints = len(saved.data.skeleton["keypoint_names"])  # type: ignore[index]
    options = pose_head_options(dict(m.head_options), m.loss, dict(m.loss_options), 2, m.norm_mu)
    with torch.device("meta"):
        head = create_head(m.head, 1, num_keypoints, tuple(saved.data.input_size), **options)
    region = PredictiveRegion(**json.loads(meta["region"])) if meta.get("region") else None
    if region is not None:  # JSON lists back to the dataclass's tuples
        region = replace(region, levels=tuple(region.levels), radii=tuple(region.radii))
    model = OnnxPoseModel(session, head, _OUTPUT_TYPES[meta["head_output"]], region)
    metrics = json.loads(meta.get("metrics") or "{}")
    state: dict[str, Any] = {"metrics": metrics, "metadata": meta}
    if meta.get("sigma_calibration_fit"):  # the checkpoint's per-keypoint c_k (SigmaCalibration)
        state["sigma_calibration"] = json.loads(meta["sigma_calibration_fit"])
    return model, cfg, state
