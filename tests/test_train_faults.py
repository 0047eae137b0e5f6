"""Training faults a user meets: run folders and their lock, resume rules, Ctrl-C, a full disk,
errors as one line, and progress lines in a log file (issue 8, part 4)."""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from posereg.checkpoint import load_checkpoint, save_checkpoint
from posereg.engine.rundir import RunLock, RunLockedError, clean_partial_writes, new_run_dir
from test_engine import BIN, REPO, _model_tensors, _posereg, _tiny_config


def _steps(csv_path: Path) -> list[int]:
    with csv_path.open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith("posereg "), out.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


# --------------------------------------------------------------------------- run folders (fast)
def test_a_new_run_never_reuses_a_folder_that_holds_a_run(tmp_path):
    path, lock, note = new_run_dir(tmp_path, "r")
    assert path == tmp_path / "r" and note == "" and lock.held
    (path / "config.yaml").write_text("name: r\n")
    lock.release()
    assert not (path / ".lock").exists()

    second, lock2, note = new_run_dir(tmp_path, "r")
    assert second == tmp_path / "r-2" and "r-2" in note and "--exist-ok" in note
    # a folder another live process has just locked (no config.yaml yet) is skipped too
    third, lock3, _ = new_run_dir(tmp_path, "r")
    assert third == tmp_path / "r-3"
    with pytest.raises(RunLockedError, match=f"process {os.getpid()} is training there"):
        new_run_dir(tmp_path, "r-2", exist_ok=True)
    lock2.release(), lock3.release()

    (path / "last.pt").write_bytes(b"old")
    (path / "tb").mkdir()
    reused, lock, note = new_run_dir(tmp_path, "r", exist_ok=True)
    assert reused == path and "reusing" in note and "deleted" in note
    assert not (path / "last.pt").exists() and not (path / "tb").exists()
    lock.release()


def test_lock_refuses_a_live_process_and_takes_over_a_dead_ones(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    assert (tmp_path / ".lock").read_text().split() == [str(os.getpid()), socket.gethostname()]
    with pytest.raises(RunLockedError, match=r"is in use: process \d+ is training there"):
        RunLock(tmp_path).acquire()
    lock.release()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    taker = RunLock(tmp_path)
    taker.acquire()  # the SIGKILLed run's stale lock
    assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    taker.release()

    (tmp_path / ".lock").write_text(f"{dead.pid} another-host\n")  # cannot tell: refuse
    with pytest.raises(RunLockedError, match="on host another-host.*delete the lock file"):
        RunLock(tmp_path).acquire()


def test_partial_checkpoint_writes_are_cleaned_up(tmp_path):
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 3}, tmp_path / "last.pt")
    partial = tmp_path / ".last.pt.k2j4x.tmp"
    partial.write_bytes(b"half a checkpoint")
    assert clean_partial_writes(tmp_path) == [partial]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3


# --------------------------------------------------------------------------- one-line errors
@pytest.mark.slow
def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing_ann.json"
    cfg = _tiny_config(tmp_path, "e", data={"train_ann": str(missing), "val_ann": str(missing)})
    out = _posereg("train", str(cfg))
    _one_line_error(out, "posereg train: error:", str(missing))
    assert not (tmp_path / "runs" / "e" / "config.yaml").exists()  # the name stays free
    assert not (tmp_path / "runs" / "e" / ".lock").exists()

    out = _posereg("train", str(cfg), "--set", "train.batch_size=0")
    _one_line_error(out, "train.batch_size: 0 is out of range; allowed: >= 1")

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = _posereg("train", str(cfg), "--set", f"out_dir={blocker / 'runs'}")
    _one_line_error(out, "Not a directory", str(blocker))

    out = _posereg("eval", str(cfg), "--checkpoint", str(tmp_path / "nope.pt"))
    _one_line_error(out, "posereg eval: error: checkpoint not found", "nope.pt")


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


def _in_tmpfs(mount: Path, options: str, *args: str) -> subprocess.CompletedProcess:
    """``posereg ARGS`` with a fresh tmpfs (``options``: size=..., ro) mounted on ``mount``, in a
    private mount namespace (``unshare -rm``: no root needed where user namespaces are enabled)."""
    mount.mkdir(parents=True, exist_ok=True)
    cmd = f'mount -t tmpfs -o {options} tmpfs {mount} && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", cmd, "sh", str(BIN / "posereg"), *args],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm (user + mount namespaces)")
def test_read_only_folder_is_a_one_line_error(tmp_path):
    cfg = _tiny_config(tmp_path, "ro")
    out = _in_tmpfs(tmp_path / "ro", "ro", "train", str(cfg), "--set", f"out_dir={tmp_path / 'ro'}")
    _one_line_error(out, "Read-only file system", str(tmp_path / "ro"))


# --------------------------------------------------------------------------- disk full
def _no_big_files(limit: int):
    def preexec() -> None:
        # SIGXFSZ ignored: a write past the limit fails with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    # RLIMIT_FSIZE makes write(2) fail with EFBIG inside torch.save, exactly where a full disk
    # fails with ENOSPC: Python's file object raises OSError, torch wraps it in
    # "[enforce fail at inline_container.cc]", save_checkpoint maps it back by errno. Portable,
    # unprivileged, and it leaves the small files (config, logs) writable.
    cfg = _tiny_config(tmp_path, "full", train={"epochs": 1, "max_steps": 2})
    assert _posereg("train", str(cfg)).returncode == 0
    run = tmp_path / "runs" / "full"
    before = (run / "last.pt").read_bytes()
    assert len(before) > 300_000
    out = subprocess.run(
        [str(BIN / "posereg"), "train", "--resume", str(run), "--set", "train.max_steps=4"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=_no_big_files(200_000),
    )  # fmt: skip
    _one_line_error(out, "file too large while writing", str(run), "is unchanged")
    assert (run / "last.pt").read_bytes() == before
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()
    # and the run goes on once there is room
    assert _posereg("train", "--resume", str(run), "--set", "train.max_steps=4").returncode == 0
    assert load_checkpoint(run / "last.pt")["step"] == 4


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm (user + mount namespaces)")
def test_no_space_left_on_device_names_the_file(tmp_path):
    cfg = _tiny_config(tmp_path, "nospace", train={"epochs": 1, "max_steps": 1})
    disk = tmp_path / "disk"  # 1 MB: the config and logs fit, a checkpoint (~1.4 MB) does not
    out = _in_tmpfs(disk, "size=1m", "train", str(cfg), "--set", f"out_dir={disk}")
    _one_line_error(out, "no space left on device while writing", "nospace/best.pt")


# --------------------------------------------------------------------------- resume rules
@pytest.mark.slow
def test_resume_rules(tmp_path):
    cfg = _tiny_config(tmp_path, "done", train={"epochs": 1, "max_steps": 2})
    assert _posereg("train", str(cfg)).returncode == 0
    run = tmp_path / "runs" / "done"
    metrics = (run / "metrics.json").read_bytes()
    assert json.loads(metrics)["images_per_second"] > 0

    out = _posereg("train", "--resume", str(run))
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert f"run {run} already finished at step 2 (train.max_steps=2)" in out.stderr
    assert (
        f"set train.max_steps above 2: posereg train --resume {run} --set train.max_steps=S"
        in out.stderr
    )
    assert (run / "metrics.json").read_bytes() == metrics  # img/s not overwritten with 0

    out = _posereg("train", str(cfg), "--resume", str(run))
    _one_line_error(out, "give CONFIG or --resume, not both")
    out = _posereg("train", "--resume", str(run), "--set", "optim.lr=0.1", "train.max_steps=3")
    _one_line_error(out, "may only change train.epochs and train.max_steps", "not: optim.lr=0.1")

    out = _posereg("train", "--resume", str(run), "--set", "train.max_steps=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert load_checkpoint(run / "last.pt")["step"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 4
    steps = _steps(run / "train_log.csv")
    assert steps == sorted(set(steps)) and steps[-1] == 4

    # killed before its first checkpoint: a clear message, and the command it names works
    early = _tiny_config(tmp_path, "early", train={"epochs": 1, "max_steps": 2})
    killed = _posereg("train", str(early), env={"POSEREG_FAULT_KILL_AT_STEP": "1"})
    assert killed.returncode == -signal.SIGKILL
    run = tmp_path / "runs" / "early"
    out = _posereg("train", "--resume", str(run))
    _one_line_error(out, f"no last.pt in {run}", f"posereg train {run / 'config.yaml'} --exist-ok")
    again = _posereg("train", str(run / "config.yaml"), "--exist-ok")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout and load_checkpoint(run / "last.pt")["step"] == 2
    assert _steps(run / "train_log.csv") == [1, 2]  # the killed attempt's row was deleted


@pytest.mark.slow
def test_a_second_process_cannot_train_in_a_locked_run(tmp_path):
    cfg = _tiny_config(tmp_path, "busy", train={"epochs": 1, "max_steps": 1})
    assert _posereg("train", str(cfg)).returncode == 0
    run = tmp_path / "runs" / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        out = _posereg("train", "--resume", str(run), "--set", "train.max_steps=2")
        _one_line_error(out, f"{run} is in use: process {holder.pid} is training there")
        out = _posereg("train", str(cfg), "--exist-ok")
        _one_line_error(out, "is in use")
    finally:
        holder.kill()
        holder.wait()
    assert load_checkpoint(run / "last.pt")["step"] == 1  # untouched


# --------------------------------------------------------------------------- Ctrl-C, log lines
@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_resume_finishes_bit_identically(tmp_path):
    full = _posereg("train", str(_tiny_config(tmp_path, "full")))
    assert full.returncode == 0, full.stderr[-3000:]

    cfg = _tiny_config(tmp_path, "int", train={"progress": True, "log_every": 1})
    proc = subprocess.Popen(
        [str(BIN / "posereg"), "train", str(cfg)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    lines = []
    for line in proc.stdout:  # a pipe, not a terminal: plain progress lines
        lines.append(line)
        if line.startswith("epoch 1/2 step 2 "):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    run = tmp_path / "runs" / "int"
    state = load_checkpoint(run / "last.pt")
    step = state["step"]
    assert 2 <= step < 12 and state["step_in_epoch"] == step % 6
    assert (
        f"posereg train: interrupted at step {step}; resume with posereg train --resume {run}"
        in err
    )
    assert not (run / ".lock").exists()
    assert "loss" in lines[-1] and "img/s ETA" in lines[-1]

    resumed = _posereg("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        "epoch 2/2 step 12 loss" in resumed.stdout and "epoch 2/2 done: step 12" in resumed.stdout
    )
    a, b = _model_tensors(tmp_path / "runs" / "full" / "last.pt"), _model_tensors(run / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _steps(run / "train_log.csv") == list(range(1, 13))  # every step once
