"""Where the real fixtures live: the samples posereg carries (src/posereg/samples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from posereg.samples import SAMPLES_DIR

REPO = Path(__file__).resolve().parents[1]
REAL = SAMPLES_DIR
BADINPUT = REPO / "tests" / "badinput"


def real(*parts: str) -> Path:
    """A path under the real fixtures; fails (not skips) when they are missing."""
    path = REAL.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real fixture {path} not found in the samples posereg carries")
    return path
