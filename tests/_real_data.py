"""Where the real fixtures live: ../shared/data/real next to the repository (as in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
BADINPUT = REPO / "tests" / "badinput"


def real(*parts: str) -> Path:
    """A path under the real fixtures; fails (not skips) when they are missing."""
    path = REAL.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real fixture {path} not found: shared/ must sit next to the repository")
    return path
