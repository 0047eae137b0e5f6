"""Image decoding: BGR uint8 from any input mode, JPEG decoded only at the resolution the crop needs.

Colour order: every pixel array in posereg is (h, w, 3) uint8 **BGR**, OpenCV's order (what
``cv2.imread`` returns, and what ``cv2.imwrite`` and :mod:`posereg.viz` expect);
:func:`posereg.data.dataset.image_to_tensor` is the one place that turns BGR into the RGB,
mean/std-normalised input of top-down models; ``MultiPersonDataset`` (:mod:`posereg.data.multiperson`)
gives detection models RGB in [0, 1] instead, as torchvision's detection models normalise
themselves.

Decoders (measured on the COCO fixtures, one thread; docs/data.md has the numbers):

- JPEG: ``simplejpeg`` (libjpeg-turbo) when installed. At full size its output is bit-identical to
  OpenCV's; it was measured a little faster than OpenCV and much faster than Pillow, and it
  reports corrupt or truncated data (libjpeg warnings) instead of returning a grey image.
- JPEG without simplejpeg: OpenCV ``imdecode`` (faster than Pillow here), with its 1/2, 1/4, 1/8
  reduced decoders.
- Every other format (PNG, BMP, TIFF, WebP ...): OpenCV ``IMREAD_UNCHANGED``, then an explicit
  conversion: grey replicated to 3 channels, alpha dropped (not composited), 16 bit rounded to 8.

EXIF orientation: datasets ignore it. COCO-format keypoint labels and the json's width/height
refer to the stored raster, as OpenCV reads it with ``IMREAD_IGNORE_ORIENTATION``. Prediction on
photos applies it (``read_image(path, exif_orientation=True)``): a phone photo stored sideways
with an orientation tag is predicted upright, in the pixel coordinates of the upright image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from posereg.config import JPEG_DECODERS
from posereg.data.badinput import BadInputError
from posereg.data.image_header import check_pixels

try:  # optional accelerated JPEG decoder (a runtime dependency; OpenCV is the fallback)
    import simplejpeg
except ImportError:  # pragma: no cover - exercised when simplejpeg is not installed
    simplejpeg = None

__all__ = [
    "DecodedImage",
    "JPEG_DECODERS",
    "default_jpeg_decoder",
    "read_bytes",
    "is_jpeg",
    "decode_bgr",
    "check_image_size",
    "read_image",
    "read_exif_orientation",
    "apply_orientation",
    "max_reduction",
]


_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_EOI_SEARCH_BYTES = 4096  # a JPEG may carry a few bytes after its end marker
_CV2_REDUCED = {
    1: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}
# libjpeg warnings that do not mean lost pixels (seen on a few COCO train images).
_BENIGN_JPEG_WARNINGS = ("extraneous bytes before marker",)


def default_jpeg_decoder() -> str:
    """``"simplejpeg"`` when it is installed, else ``"opencv"``."""
    return "simplejpeg" if simplejpeg is not None else "opencv"


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image.

    Attributes:
        pixels: (h, w, 3) uint8 BGR.
        reduction: full-resolution pixels per decoded pixel (1, 2, 4 or 8);
            :func:`posereg.data.transforms.reduction_matrix` maps decoded pixels to full ones.
        full_size: (height, width) of the full-resolution image.
    """

    pixels: np.ndarray
    reduction: float
    full_size: tuple[int, int]


def read_bytes(path: str | Path, record: str = "") -> bytes:
    """Read a file whole; BadInputError naming the file and record if it is missing or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadInputError(path, record, "image file not found") from None
    except OSError as e:
        raise BadInputError(path, record, f"cannot read image file ({e.strerror})") from None
    if not data:
        raise BadInputError(path, record, "image file is empty (0 bytes)")
    return data


def is_jpeg(data: bytes) -> bool:
    """True if the bytes start with a JPEG start-of-image marker."""
    return data[:3] == _JPEG_SOI


def max_reduction(scale: np.ndarray, output_size: tuple[int, int]) -> float:
    """How far a crop allows the source to be reduced: source pixels per crop pixel (>= 1).

    Arguments:
        scale: crop size (2,) = (w, h) in full-resolution image pixels.
        output_size: (H, W) of the crop.
    """
    out_h, out_w = output_size
    return max(1.0, min(float(scale[0]) / out_w, float(scale[1]) / out_h))


def _to_bgr8(image: np.ndarray, path: str | Path, record: str) -> np.ndarray:
    """Any decoded mode -> (h, w, 3) uint8 BGR: grey replicated, alpha dropped, 16 bit rounded."""
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1.0 / 257.0)  # 65535 -> 255, rounded
    elif image.dtype != np.uint8:
        raise BadInputError(
            path, record, f"unsupported pixel type {image.dtype}; convert the image to 8 or 16 bit"
        )
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels in (1, 2):  # grey, grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[..., 0]), cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return image
    if channels == 4:  # BGRA: alpha is dropped, not composited
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise BadInputError(path, record, f"unsupported number of channels {channels}")


def _decode_jpeg_simplejpeg(
    data: bytes, path: str | Path, record: str, reduction: float
) -> DecodedImage | None:
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
        raise BadInputError(path, record, f"cannot decode JPEG header ({e})") from None
    if colorspace not in ("YCbCr", "Gray", "RGB"):
        return None  # CMYK / YCCK: let OpenCV convert
    # Decode at n/8 scale with n in {8, 4, 2, 1}: libjpeg-turbo has SIMD inverse DCTs for these
    # only, and measured 5/8..7/8 scales decode slower than full size (docs/data.md).
    factor = 1
    while factor < 8 and factor * 2 <= reduction:
        factor *= 2
    n = 8 // factor
    min_h, min_w = math.ceil(height * n / 8), math.ceil(width * n / 8)
    try:
        pixels = simplejpeg.decode_jpeg(data, "BGR", min_height=min_h, min_width=min_w, strict=True)
    except ValueError as e:
        if not any(w in str(e) for w in _BENIGN_JPEG_WARNINGS):
            raise BadInputError(path, record, f"corrupt or truncated JPEG ({e})") from None
        pixels = simplejpeg.decode_jpeg(
            data, "BGR", min_height=min_h, min_width=min_w, strict=False
        )
    got_h, got_w = pixels.shape[:2]
    for m in range(1, 9):  # the scale libjpeg-turbo actually used
        if math.ceil(height * m / 8) == got_h and math.ceil(width * m / 8) == got_w:
            return DecodedImage(pixels, 8.0 / m, (height, width))
    raise BadInputError(path, record, f"JPEG decoded to an unexpected size {got_h}x{got_w}")


def _decode_jpeg_opencv(
    data: bytes, path: str | Path, record: str, reduction: float
) -> DecodedImage:
    if data.rfind(_JPEG_EOI, max(0, len(data) - _EOI_SEARCH_BYTES)) < 0:
        raise BadInputError(
            path, record, f"truncated JPEG: no end-of-image marker ({len(data)} bytes)"
        )
    factor = 1
    while factor < 8 and factor * 2 <= reduction:
        factor *= 2
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _CV2_REDUCED[factor])
    if pixels is None or pixels.size == 0:
        raise BadInputError(path, record, "cannot decode JPEG (corrupt data)")
    h, w = pixels.shape[:2]
    # OpenCV does not report the full size; h * factor is exact up to the last partial block.
    return DecodedImage(pixels, float(factor), (h * factor, w * factor))


def decode_bgr(
    data: bytes,
    path: str | Path = "<bytes>",
    record: str = "",
    reduction: float = 1.0,
    jpeg_decoder: str | None = None,
    max_pixels: int | None = None,
) -> DecodedImage:
    """Decode image bytes to (h, w, 3) uint8 BGR, reducing JPEGs as far as ``reduction`` allows.

    Arguments:
        data: the encoded file.
        path, record: named in errors.
        reduction: largest acceptable full-resolution pixels per decoded pixel (1 = full size).
            JPEGs are decoded in the DCT domain at 1/2, 1/4 or 1/8 size when it allows; other
            formats are always decoded at full size.
        jpeg_decoder: ``"simplejpeg"`` or ``"opencv"``; default :func:`default_jpeg_decoder`.
        max_pixels: refuse an image with more pixels (full resolution) than this, checked from
            its header before anything is decoded (:mod:`posereg.data.image_header`); then the
            header must be one Pillow reads. None: no limit (trusted files, datasets).

    Raises:
        BadInputError: undecodable bytes, a corrupt or truncated JPEG, an unsupported pixel type.
        ImageTooLargeError: more than ``max_pixels`` pixels.
    """
    decoder = jpeg_decoder or default_jpeg_decoder()
    if decoder not in JPEG_DECODERS:
        raise ValueError(f"unknown jpeg_decoder {decoder!r}; valid: {', '.join(JPEG_DECODERS)}")
    if max_pixels is not None:
        check_pixels(data, max_pixels, path)
    if is_jpeg(data):
        decoded = None
        if decoder == "simplejpeg" and simplejpeg is not None:
            decoded = _decode_jpeg_simplejpeg(data, path, record, reduction)
        if decoded is None:
            decoded = _decode_jpeg_opencv(data, path, record, reduction)
        return decoded
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise BadInputError(path, record, f"cannot decode image ({e.err})") from None
    if image is None or image.size == 0:
        raise BadInputError(path, record, "cannot decode image (corrupt or unsupported format)")
    pixels = _to_bgr8(image, path, record)
    return DecodedImage(pixels, 1.0, (pixels.shape[0], pixels.shape[1]))


def check_image_size(
    decoded: DecodedImage, height: int, width: int, path: str | Path, record: str = ""
) -> None:
    """BadInputError when a decoded image is not the size the annotation file gives it.

    Arguments:
        decoded: the decoded image (possibly reduced: OpenCV's reduced decoders give the full
            size only up to rounding, so the reduced pixels are compared then).
        height, width: the size in the annotation file; 0 when unknown (nothing is checked).
        path, record: named in the error.
    """
    if height <= 0 or width <= 0 or decoded.full_size == (height, width):
        return
    r = decoded.reduction
    if decoded.pixels.shape[:2] != (math.ceil(height / r), math.ceil(width / r)):
        raise BadInputError(
            path,
            record,
            f"image is {decoded.full_size[0]}x{decoded.full_size[1]} (h x w) but the "
            f"annotation file says {height}x{width}; the labels would not line up",
        )


def read_exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1..8) of a JPEG's APP1 segment; 1 (as stored) when absent.

    Reads only the markers before the scan data; malformed EXIF counts as absent (a photo with a
    broken tag is still a photo).
    """
    if not is_jpeg(data):
        return 1
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return 1
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no EXIF before the pixels
            return 1
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            return _tiff_orientation(segment[6:])
        pos += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of IFD0 of a TIFF header (the body of an EXIF segment); 1 when absent."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1

    def u(offset: int, size: int) -> int:
        return int.from_bytes(tiff[offset : offset + size], order)  # type: ignore[arg-type]

    ifd = u(4, 4)
    if ifd + 2 > len(tiff):
        return 1
    for n in range(u(ifd, 2)):
        entry = ifd + 2 + 12 * n
        if entry + 12 > len(tiff):
            break
        if u(entry, 2) == 0x0112 and u(entry + 2, 2) == 3:  # ORIENTATION, type SHORT
            value = u(entry + 8, 2)
            return value if 1 <= value <= 8 else 1
    return 1


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored raster (h, w, C) upright by its EXIF orientation (1..8), as viewers show it.

    The eight cases of the EXIF standard (same result as Pillow's ``ImageOps.exif_transpose``):
    1 as stored, 2 mirrored, 3 rotated 180, 4 flipped upside down, 5 transposed, 6 rotated 90
    clockwise, 7 transversed, 8 rotated 90 counter-clockwise.
    """
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.rot90(a, 1)[::-1],
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    if orientation not in ops:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    return np.ascontiguousarray(ops[orientation](pixels))


def read_image(path: str | Path, record: str = "", exif_orientation: bool = False) -> np.ndarray:
    """Read an image file as (h, w, 3) uint8 **BGR** (OpenCV's order) at full resolution.

    Arguments:
        path: the image file (any format :func:`decode_bgr` reads).
        record: named in errors.
        exif_orientation: turn the pixels upright by the JPEG's EXIF orientation tag (for
            photos to predict on); False keeps the stored raster (what dataset labels refer to).

    Raises:
        BadInputError: a missing, empty, corrupt or truncated file, or one that is not an image.
    """
    data = read_bytes(path, record)
    pixels = decode_bgr(data, path, record).pixels
    if exif_orientation:
        pixels = apply_orientation(pixels, read_exif_orientation(data))
    return pixels
