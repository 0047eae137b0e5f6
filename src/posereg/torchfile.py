"""The one reader of torch files: ``torch.load(weights_only=True)`` with an error a user can act on.

Every file posereg reads with torch (its checkpoints, ``model.init_from``, pretrained backbone
weights, official RLE checkpoints for ``posereg convert``, detector weights) goes through
:func:`read_torch_file`. A file that is not a torch file is recognised before torch sees it
(empty, text, an image, a plain Python pickle, a safetensors file), so the error says what the
file *is*; one that torch cannot read says damaged, or holding objects that a weights-only load
refuses. Never torch's own advice to retry with ``weights_only=False`` (that runs the file's code).
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TorchFileError",
    "read_torch_file",
    "read_safetensors_file",
    "describe_content",
    "check_finite",
    "CHECKPOINT_WHAT",
]

#: What a posereg checkpoint is, for the errors about files that are not one.
CHECKPOINT_WHAT = "a posereg checkpoint (a .pt file written by posereg train or convert)"

# the first bytes of formats a torch file is confused with, and what to call them
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x93NUMPY", "a NumPy .npy array"),
)
# torch.save's legacy (non-zip) format: a protocol-2 pickle of this magic number first
_LEGACY_TORCH = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class TorchFileError(ValueError):
    """A file that cannot be read as a weights-only torch file; the message names it and says
    what it is instead."""


def describe_content(head: bytes, size: int) -> str | None:
    """What a file whose first bytes are ``head`` is, when it is not a torch file; None if it
    may be one (a zip archive or torch's legacy format).

    Arguments:
        head: the file's first bytes (64 are enough).
        size: the file's size in bytes.
    """
    if size == 0:
        return "it is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_TORCH):
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return f"it is {name}"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "it is a WebP image"
    if len(head) >= 10 and head[8:10] == b'{"':  # 8-byte header length, then a json header
        return "it is a safetensors file"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return "it is a plain Python pickle, not a file written by torch.save"
    text = _utf8_prefix(head)
    if text is not None and text.strip() and all(c.isprintable() or c in "\r\n\t" for c in text):
        first = text.strip().splitlines()[0][:40]
        return f"it is a text file (it starts with {first!r})"
    return f"it is not a torch file (it starts with the bytes {head[:8].hex(' ')})"


def _utf8_prefix(head: bytes) -> str | None:
    """``head`` as UTF-8 text, allowing a character cut at its end; None if it is not text."""
    for cut in range(4):
        try:
            return head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def read_torch_file(path: str | Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, or one clear error naming the file.

    Arguments:
        path: the file.
        what: what the caller expected, for the message, e.g. ``"a posereg checkpoint (a .pt
            file written by posereg train or convert)"``.
        map_location: as for :func:`torch.load`.

    Returns:
        What the file holds (tensors, containers and plain Python values only).

    Raises:
        FileNotFoundError: no such file.
        TorchFileError: ``"PATH: not WHAT: it is a JPEG image"`` (or empty, text, a plain
            pickle, damaged, objects a weights-only load refuses, ...).
    """
    path = Path(path)
    if path.is_dir():
        raise TorchFileError(f"{path}: not {what}: it is a folder")
    if not path.is_file():
        raise FileNotFoundError(2, f"not found (expected {what})", str(path))
    with path.open("rb") as f:
        head = f.read(64)
    # ONNX is a protobuf with no fixed first bytes: known by its suffix
    found = (
        "it is an ONNX model (posereg export's output: predict, serve and eval take it)"
        if path.suffix.lower() == ".onnx"
        else describe_content(head, path.stat().st_size)
    )
    if found is not None:
        raise TorchFileError(f"{path}: not {what}: {found}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:  # the disk, not the content
        raise
    except pickle.UnpicklingError as e:
        damaged = "Unsupported operand" in str(e)  # a byte that is no pickle opcode
        if damaged or not str(e).startswith("Weights only load failed"):
            raise TorchFileError(
                f"{path}: not {what}: it is a damaged or truncated torch file"
                f"{'' if damaged else f' ({str(e).strip().splitlines()[0]})'}"
            ) from None
        # torch's weights-only unpickler: a global or an opcode it does not allow; its message
        # suggests weights_only=False, which would run whatever code the file carries
        found_global = re.search(r"GLOBAL ([\w.]+)", str(e))
        hint = f" (such as {found_global.group(1)})" if found_global else ""
        raise TorchFileError(
            f"{path}: not {what}: it holds Python objects that a weights-only load refuses"
            f"{hint}; posereg loads only tensors and plain values, since anything else could run "
            "code"
        ) from None
    except Exception as e:  # zip and stream errors (truncated, damaged) have many types
        if head.startswith(b"PK\x03\x04") and not _is_torch_zip(path):
            raise TorchFileError(
                f"{path}: not {what}: it is a zip archive, not a torch file"
            ) from None
        # torch's first sentence says what failed; the rest is advice about saving
        reason = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() else ""
        reason = reason or type(e).__name__
        raise TorchFileError(
            f"{path}: not {what}: it is a damaged or truncated torch file ({reason})"
        ) from None


def read_safetensors_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or one clear error naming it.

    Raises:
        ImportError: safetensors is not installed (it comes with ``posereg[timm]``).
        TorchFileError: ``"PATH: not WHAT: it is empty (0 bytes)"`` (an image, text, ...), or
            a damaged safetensors file with the library's reason.
    """
    path = Path(path)
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError(
            f"reading {path.name} needs safetensors: pip install safetensors "
            "(installed with posereg[timm])"
        ) from None
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors' own error type (empty, damaged, not safetensors)
        with path.open("rb") as f:
            found = describe_content(f.read(64), path.stat().st_size)
        if found is None or found == "it is a safetensors file":
            found = f"it is a damaged safetensors file ({e})"
        raise TorchFileError(f"{path}: not {what}: {found}") from None


def check_finite(state_dict: Mapping[str, Any], source: str) -> None:
    """Refuse a state_dict with a NaN or inf in any floating tensor (backbone, head or flow).

    Raises:
        TorchFileError: names ``source``, the first such tensor and how many there are.
    """
    bad = [
        k
        for k, t in state_dict.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all())
    ]
    if bad:
        more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
        raise TorchFileError(
            f"{source}: non-finite weights (NaN or inf) in {bad[0]}{more}: the run that wrote "
            "it diverged; use an earlier checkpoint (best.pt) or train again"
        )


def _is_torch_zip(path: Path) -> bool:
    """Whether a zip archive has the ``data.pkl`` that torch.save writes (False if unreadable)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return True  # damaged: say so rather than "not a torch file"
