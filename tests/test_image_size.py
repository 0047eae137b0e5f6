"""The size read from an image's header equals the size of the decoded image, for every encoding
posereg decodes; a pixel limit is enforced from the header without decoding."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from _real_data import real
from posereg.data.badinput import BadInputError
from posereg.data.image_header import ImageTooLargeError, check_pixels, image_size
from posereg.data.image_io import decode_bgr


def _pil(mode: str, fmt: str, size: tuple[int, int] = (37, 23), **save) -> bytes:
    """A ``size`` = (w, h) image in Pillow ``mode`` encoded as ``fmt``."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    image = rgb.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def _cv2(ext: str, dtype=np.uint8, channels: int = 3, size=(41, 19), params=()) -> bytes:
    """A (w, h) = ``size`` image encoded by OpenCV."""
    rng = np.random.default_rng(1)
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    image = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


ENCODINGS = {
    "png rgb": lambda: _pil("RGB", "PNG"),
    "png grey": lambda: _pil("L", "PNG"),
    "png 1 bit": lambda: _pil("1", "PNG"),
    "png palette": lambda: _pil("P", "PNG"),
    "png rgba": lambda: _pil("RGBA", "PNG"),
    "png interlaced": lambda: _cv2(".png", params=(cv2.IMWRITE_PNG_STRATEGY, 0)),
    "png 16 bit": lambda: _cv2(".png", np.uint16),
    "png 16 bit grey": lambda: _cv2(".png", np.uint16, 1),
    "jpeg baseline": lambda: _pil("RGB", "JPEG", quality=90),
    "jpeg progressive": lambda: _pil("RGB", "JPEG", progressive=True),
    "jpeg grey": lambda: _pil("L", "JPEG"),
    "jpeg cmyk": lambda: _pil("CMYK", "JPEG"),
    "jpeg 4:4:4 odd size": lambda: _pil("RGB", "JPEG", size=(1001, 3), subsampling=0),
    "jpeg opencv": lambda: _cv2(".jpg"),
    "jpeg real photo": lambda: real("coco", "000000000785.jpg").read_bytes(),
    "webp lossy": lambda: _pil("RGB", "WEBP", quality=80),
    "webp lossless": lambda: _pil("RGB", "WEBP", lossless=True),
    "webp alpha": lambda: _pil("RGBA", "WEBP"),
    "bmp 24 bit": lambda: _pil("RGB", "BMP"),
    "bmp 8 bit palette": lambda: _pil("P", "BMP"),
    "bmp opencv": lambda: _cv2(".bmp"),
    "tiff raw": lambda: _pil("RGB", "TIFF"),
    "tiff lzw": lambda: _pil("RGB", "TIFF", compression="tiff_lzw"),
    "tiff deflate": lambda: _pil("RGB", "TIFF", compression="tiff_adobe_deflate"),
    "tiff grey": lambda: _pil("L", "TIFF"),
    "tiff 16 bit opencv": lambda: _cv2(".tiff", np.uint16),
    "gif": lambda: _pil("P", "GIF"),
    "ppm": lambda: _pil("RGB", "PPM"),
    "pgm": lambda: _pil("L", "PPM"),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_header_size_equals_decoded_size(encoding):
    data = ENCODINGS[encoding]()
    decoded = decode_bgr(data)
    assert image_size(data) == decoded.pixels.shape[:2] == decoded.full_size


def test_not_an_image_is_a_bad_input_error():
    for data in (b"this is a README, not a photo" * 10, b"", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(BadInputError, match="cannot decode image"):
            image_size(data, "upload.png")


def _huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height black pixels, made row by row (small in memory)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_the_pixel_limit_is_checked_from_the_header_without_decoding():
    data = _huge_png(20000, 20000)
    assert len(data) < 1_000_000  # a small upload ...
    assert image_size(data) == (20000, 20000)  # ... of 400 MP
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError) as info:
            decode_bgr(data, "upload.png", max_pixels=64_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # the header was read; 400 MB of pixels were never allocated
    assert str(info.value) == (
        "upload.png: image of 20000x20000 px (400.0 MP) is over the limit of 64 MP"
    )
    assert info.value.size == (20000, 20000) and info.value.max_pixels == 64_000_000
    # at the limit is allowed; one pixel over is not
    small = _pil("RGB", "PNG", size=(40, 25))
    check_pixels(small, 1000)
    with pytest.raises(ImageTooLargeError, match=r"image of 40x25 px \(0.0 MP\)"):
        check_pixels(small, 999)
    assert decode_bgr(small, max_pixels=1000).pixels.shape == (25, 40, 3)
