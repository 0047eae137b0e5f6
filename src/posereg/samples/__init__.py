"""Small real samples of COCO, MPII and Human3.6M carried with posereg (see README.md here).

They make the tests and the main job's prediction step work on a machine that has only the
repository; the synthetic generator takes its Human3.6M cameras and background photos from here.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLES_DIR", "sample_path"]

SAMPLES_DIR = Path(__file__).resolve().parent


def sample_path(*parts: str) -> Path:
    """Path of a carried sample, e.g. ``sample_path("coco", "test_coco.json")``.

    Raises:
        FileNotFoundError: naming the path, when no such sample is carried.

    Example:
        >>> sample_path("coco", "test_coco.json").name
        'test_coco.json'
    """
    path = SAMPLES_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"no sample {path} (posereg carries coco/, mpii/ and h36m/)")
    return path
