"""What a user sees of a training run (issue 20, section 6): rank 0 alone reports, curves of a
short run, Ctrl-C messages, resuming a finished run, the run files' permissions, docs' names."""

from __future__ import annotations

import os
import subprocess

import pytest

from test_engine import BIN, REPO, _tiny_config


# --------------------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_torchrun_rank_0_alone_prints_the_data_report_and_summary(tmp_path):
    config = _tiny_config(tmp_path, "ddp", train={"epochs": 1, "max_steps": 2})
    out = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29563",
         "-m", "posereg.cli", "train", str(config)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    # the sample annotations skip 2 records: reported once for train and once for val
    assert out.stderr.count("instances kept from 14 records, 2 skipped") == 2, out.stderr
    assert out.stdout.count("run directory:") == 1, out.stdout
    assert out.stdout.count("error / sqrt(area)") == 1, out.stdout
    # the one summary is rank 0's: it has the mean-pose baseline, which only rank 0 computes
    assert "error ratio model / baseline" in out.stdout
