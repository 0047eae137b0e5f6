"""The size of an encoded image from its header, before any pixel is decoded.

A pixel limit must be checked before decoding: a 389 KB PNG of 20000 x 20000 px decodes to
1.2 GB of BGR pixels (and OpenCV's working buffers on top). Pillow's ``open`` reads only the
header of PNG, JPEG, WebP, BMP, TIFF, GIF and the other formats it knows; the pixels are read
when ``load`` is called, which this module never does. Pillow's own decompression-bomb check
(which refuses or warns at its fixed limits) is bypassed on purpose: the caller sets the limit.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from posereg.data.badinput import BadInputError

__all__ = ["ImageTooLargeError", "image_size", "check_pixels"]


class ImageTooLargeError(BadInputError):
    """An image whose header says it has more pixels than the limit allows.

    Arguments:
        file: the file (or upload) at fault.
        size: (height, width) from the header.
        max_pixels: the limit.
    """

    def __init__(self, file: str | Path, size: tuple[int, int], max_pixels: int) -> None:
        self.size, self.max_pixels = size, max_pixels
        h, w = size
        super().__init__(
            file,
            "",
            f"image of {w}x{h} px ({w * h / 1e6:.1f} MP) is over the limit of "
            f"{max_pixels / 1e6:g} MP",
        )

    def __reduce__(self):
        return (type(self), (self.file, self.size, self.max_pixels))


def image_size(data: bytes, path: str | Path = "<bytes>") -> tuple[int, int]:
    """(height, width) of an encoded image, read from its header only.

    For a JPEG with an EXIF orientation tag this is the stored raster's size (width and height
    swap when it is turned upright; the number of pixels does not change).

    Arguments:
        data: the encoded file.
        path: named in errors.

    Raises:
        BadInputError: no format Pillow knows recognises the header (not an image, or a
            format whose size cannot be read without decoding it).
    """
    from PIL import Image  # imported here: only the readers of untrusted uploads need it

    Image.init()
    prefix = data[:16]
    for factory, accept in Image.OPEN.values():  # the openers Pillow's own open() tries
        try:
            accepted = accept is None or accept(prefix)
            if not accepted or isinstance(accepted, str):  # a str: Pillow's "cannot read" note
                continue
            image = factory(io.BytesIO(data), "")  # parses the header; load() is never called
        except (SyntaxError, IndexError, TypeError, ValueError, OSError, EOFError, struct.error):
            continue
        width, height = image.size
        image.close()
        if width > 0 and height > 0:
            return height, width
    raise BadInputError(path, "", "cannot decode image (corrupt or unsupported format)")


def check_pixels(data: bytes, max_pixels: int, path: str | Path = "<bytes>") -> None:
    """Raise :class:`ImageTooLargeError` when the header of ``data`` says it has more than
    ``max_pixels`` pixels; BadInputError when the header cannot be read (see :func:`image_size`)."""
    h, w = image_size(data, path)
    if h * w > max_pixels:
        raise ImageTooLargeError(path, (h, w), max_pixels)
