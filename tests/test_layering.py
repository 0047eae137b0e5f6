"""The layering STYLE.md asks for, checked in fresh interpreters: config imports nothing of data
(nor torch), and a user error in an inference command does not pull in the training loop."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_config_imports_nothing_of_data_nor_torch():
    got = _run(
        "import sys, posereg.config; "
        "print(sorted(m for m in sys.modules if m.startswith(('posereg.', 'torch'))))"
    )
    assert got == "['posereg.config']"


def test_a_user_error_in_predict_does_not_import_the_training_loop(tmp_path):
    missing = tmp_path / "missing.pt"
    got = _run(
        "import sys; from posereg.cli import main; "
        f"rc = main(['predict', {str(tmp_path)!r}, '--checkpoint', {str(missing)!r}]); "
        "print(rc, 'posereg.engine.train' in sys.modules)"
    )
    assert got.splitlines()[-1] == "2 False"
