"""What a user sees of a training run (issue 20, section 6): rank 0 alone reports, curves of a
short run, Ctrl-C messages, resuming a finished run, the run files' permissions, docs' names."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from posereg.checkpoint import load_checkpoint
from test_engine import BIN, REPO, _posereg, _tiny_config


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


# --------------------------------------------------------------------------- curves.png
def _line_pixels_per_panel(png: Path) -> list[int]:
    """Pixels of matplotlib's first line colour (C0, #1f77b4) in each third of curves.png."""
    img = cv2.imread(str(png))  # (H, W, 3) BGR
    close = np.abs(img.astype(int) - np.array([180, 119, 31])).max(axis=2) < 40  # (H, W)
    thirds = np.array_split(np.arange(img.shape[1]), 3)
    return [int(close[:, cols].sum()) for cols in thirds]


def test_curves_of_a_one_step_run_draw_every_panel(tmp_path):
    from posereg.engine.report import plot_curves

    (tmp_path / "train_log.csv").write_text(
        "step,epoch,loss,lr,images_per_s,mean_sigma\n1,0,0.75,0.001,20.0,\n"
    )
    (tmp_path / "val_log.csv").write_text(
        "epoch,step,AP,AP_clean,PCK,error,MPJPE,PA-MPJPE\n1,1,0.25,,0.5,0.6,,\n"
    )
    png = plot_curves(tmp_path)
    assert png == tmp_path / "curves.png"
    loss, lr, val = _line_pixels_per_panel(png)
    # a marker of markersize 4 at 80 dpi covers ~10 px; nothing else in a panel is C0
    assert min(loss, lr, val) >= 5, (loss, lr, val)


# --------------------------------------------------------------------------- docs
@pytest.mark.slow
def test_docs_name_only_files_that_predict_writes(tmp_path):
    import dataclasses

    import torch

    from posereg.checkpoint import save_checkpoint
    from posereg.config import Config, to_dict
    from posereg.models import create_pose_model

    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, input_size=[64, 48]),
        model=dataclasses.replace(cfg.model, backbone="resnet18", width=0.25),
    )
    torch.manual_seed(0)
    model = create_pose_model("resnet18", num_keypoints=17, width=0.25)
    ckpt = save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg)}, tmp_path / "m.pt")
    out_dir = tmp_path / "predict"
    image = REPO / "src/posereg/samples/coco/000000000785.jpg"
    out = _posereg("predict", str(image), "--checkpoint", str(ckpt), "--out", str(out_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    written = {p.name.replace(image.stem, "<stem>") for p in out_dir.iterdir()}
    assert "predictions.json" in written, written

    named: list[tuple[str, str]] = []  # (doc, file named inside a predict --out folder)
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        for folder in set(re.findall(r"posereg predict [^\n]*--out (\S+)", text)):
            named += [(doc.name, n) for n in re.findall(re.escape(folder) + r"/([\w.<>-]+)", text)]
    assert named, "no doc names a file of a `posereg predict --out` folder"
    wrong = [(doc, n) for doc, n in named if n not in written]
    assert not wrong, f"{wrong}; predict writes {sorted(written)}"


# --------------------------------------------------------------------------- Ctrl-C
def _as_a_terminal_job() -> None:
    """In the child before exec: Ctrl-C as a terminal's foreground job has it (SIG_DFL, so that
    Python installs its KeyboardInterrupt handler). A SIG_IGN left in the test process by an
    earlier test would be inherited, and the child would rightly ignore Ctrl-C (as a shell's
    background job does)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_train(*args: str) -> subprocess.Popen:
    """``posereg train ARGS`` in its own process group (as a terminal's foreground job)."""
    return subprocess.Popen(
        [str(BIN / "posereg"), "train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
        preexec_fn=_as_a_terminal_job,
    )  # fmt: skip


def _ctrl_c_while_reading(fifo: Path, proc: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C to ``proc``'s process group while it waits to read the named pipe ``fifo``."""
    fd = os.open(fifo, os.O_WRONLY)  # returns once the process opened the pipe to read it
    try:
        time.sleep(0.2)  # it now waits in read()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        os.close(fd)
        if proc.poll() is None:  # it ignored the Ctrl-C: leave no process behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("reading", ["config", "annotations"])
def test_ctrl_c_before_the_first_step_says_nothing_was_saved(tmp_path, reading):
    # reading the config: before train() (Python's own KeyboardInterrupt); the annotations:
    # in train(), with its Ctrl-C handler set but training not started
    config = _tiny_config(tmp_path, "early")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    if reading == "config":
        config = fifo
    else:
        cfg = yaml.safe_load(config.read_text())
        cfg["data"]["train_ann"] = str(fifo)
        config.write_text(yaml.safe_dump(cfg))
    code, err = _ctrl_c_while_reading(fifo, _start_train(str(config)))
    assert code == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "posereg train: interrupted before the first step; nothing saved"
    ), err[-3000:]
    assert "Traceback" not in err
    assert not list((tmp_path / "runs").glob("*/*.pt"))


@pytest.mark.slow
def test_one_ctrl_c_to_the_process_group_stops_after_the_step_once(tmp_path):
    # a DataLoader worker process is in the group too and inherits the handler
    config = _tiny_config(
        tmp_path, "stop", train={"epochs": 50, "batch_size": 1}, data={"workers": 1}
    )
    proc = _start_train(str(config))
    log = tmp_path / "runs" / "stop" / "train_log.csv"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) > 2):  # 2 steps logged
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.count("stopping after this step") == 1, err[-3000:]
    assert "posereg train: interrupted at step" in err and "Traceback" not in err
    state = load_checkpoint(tmp_path / "runs" / "stop" / "last.pt")
    assert 2 <= state["step"] < 50 * 12


# --------------------------------------------------------------------------- a finished run
UMASK = 0o027  # not the usual 022: the files must follow the umask, not a fixed mode


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run of 2 epochs of 2 steps, trained under umask 027."""
    tmp_path = tmp_path_factory.mktemp("finished")
    config = _tiny_config(tmp_path, "two", train={"epochs": 2, "batch_size": 6})
    out = subprocess.run(
        [str(BIN / "posereg"), "train", str(config)], capture_output=True, text=True,
        timeout=600, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, umask=UMASK,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp_path / "runs" / "two"


@pytest.mark.slow
def test_every_file_of_a_run_has_the_mode_the_umask_gives(finished_run):
    modes = {
        p.relative_to(finished_run).as_posix(): oct(p.stat().st_mode & 0o777)
        for p in finished_run.rglob("*")
        if p.is_file()
    }
    assert {"best.pt", "last.pt", "config.yaml", "metrics.json", "curves.png"} <= modes.keys()
    assert set(modes.values()) == {oct(0o666 & ~UMASK)}, modes


@pytest.mark.slow
def test_resume_with_fewer_epochs_than_done_says_what_to_set(finished_run):
    run = finished_run
    out = _posereg("train", "--resume", str(run), "--set", "train.epochs=1")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip() == (
        f"posereg train: run {run} already finished at epoch 2 (train.epochs=1); to train "
        f"further, set train.epochs above 2: posereg train --resume {run} --set train.epochs=M"
    )
    assert load_checkpoint(run / "last.pt")["epoch"] == 2  # nothing trained
