"""The ``posereg`` console script, run as a real subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

POSEREG = [str(Path(sys.executable).parent / "posereg")]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*POSEREG, *args], capture_output=True, text=True, timeout=timeout)


def test_version_and_help():
    from posereg import __version__

    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"posereg {__version__}"
    out = _run("--help")
    assert out.returncode == 0 and "demo" in out.stdout


def test_unknown_command_fails_with_usage():
    out = _run("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.mark.slow
def test_demo_learns_sigma_that_follows_the_noise_scale():
    out = _run("demo", "--steps", "600")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if re.match(r"^\s+\d+\s+0\.\d+", line)]
    assert len(rows) == 4
    scale = [float(r[1]) for r in rows]
    sigma = [float(r[2]) for r in rows]
    assert scale == sorted(scale)
    assert sigma == sorted(sigma) and sigma[-1] > 3 * sigma[0]  # noise scale grows 8x
    m = re.search(r"RLE ([0-9.]+), L2 ([0-9.]+)", out.stdout)
    assert m and float(m.group(1)) < float(m.group(2))


def test_a_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "nope.pt"
    out = _run("info", str(missing))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"posereg info: error: checkpoint not found: {missing}"
    for argv in (["--debug", "info", str(missing)], ["info", str(missing), "--debug"]):
        out = _run(*argv)
        assert out.returncode == 1 and "Traceback (most recent call last)" in out.stderr
        assert out.stderr.strip().endswith(f"CheckpointError: checkpoint not found: {missing}")


def test_train_without_a_config_is_one_line():
    out = _run("train")
    assert out.returncode == 2
    assert out.stderr.strip() == "posereg train: error: give a CONFIG file, or --resume RUN_DIR"
