"""Run folders: a new run never writes over an earlier one, and one process trains in a folder at a time.

A run lives in ``out_dir/name``. When that folder already holds a run (any of
:data:`RUN_FILES`), a new run goes to ``name-2``, ``name-3``, ... (as Ultralytics does) unless
``exist_ok``, which reuses the folder and deletes the earlier run's logs, report and checkpoints.

While a process trains, ``RUN/.lock`` holds its ``pid host``. The lock is created with
``O_CREAT | O_EXCL`` (atomic, also on NFS) and removed when training ends; a lock left by a
process that is gone (a SIGKILL, a crash; same host) is taken over. Partial checkpoint writes
(``.NAME.XXXX.tmp`` from :func:`posereg.checkpoint.save_checkpoint`) are deleted once the
lock is held, since no other writer can then be using them.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from posereg.errors import RunLockedError
from posereg.outputs import numbered

__all__ = [
    "RUN_FILES",
    "RunLockedError",
    "RunLock",
    "holds_run",
    "new_run_dir",
    "clean_partial_writes",
]

#: Files whose presence marks a folder as holding a run.
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "train_log.csv", "metrics.json")
#: What ``exist_ok`` deletes before a new run starts in an old run's folder.
_OLD_RUN = ("train_log.csv", "val_log.csv", "metrics.json", "curves.png", "val_predictions.png",
            "last.pt", "best.pt", "tb")  # fmt: skip


def holds_run(path: Path) -> bool:
    """Whether folder ``path`` holds (the start of) a run."""
    return any((path / f).exists() for f in RUN_FILES)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``RUN/.lock`` holding ``pid host`` while this process trains in ``RUN``.

    Raises:
        RunLockedError: (from :meth:`acquire`) a live process, or one on another host, holds it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False
        #: set by :func:`new_run_dir` when it made the folder: :meth:`release` then removes the
        #: folder if the run wrote nothing there (it failed before its first step)
        self.made_dir = False

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._check_stale()
                self.path.unlink(missing_ok=True)  # a stale lock: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            return
        raise RunLockedError(f"{self.path}: another process took this run folder at the same time")

    def _check_stale(self) -> None:
        try:
            pid_text, _, host = self.path.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return  # unreadable or half-written: treat as stale
        if host != socket.gethostname() or _alive(pid):
            where = "" if host == socket.gethostname() else f" on host {host}"
            raise RunLockedError(
                f"{self.path.parent} is in use: process {pid}{where} is training there "
                f"(lock file {self.path}). Wait for it to finish, or train under another name; "
                "if no posereg process is running there, delete the lock file"
            )

    def release(self) -> None:
        """Remove the lock; and the run folder, when this run made it and left it empty."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
            if self.made_dir:
                try:
                    self.path.parent.rmdir()  # only an empty folder: a run that never started
                except OSError:
                    pass  # the run wrote files there (or someone else did): keep it


def new_run_dir(
    out_dir: str | Path, name: str, exist_ok: bool = False
) -> tuple[Path, RunLock, str]:
    """The locked folder of a new run, and a line that says what was done (empty if nothing special).

    ``out_dir/name`` when it is free (missing, empty, or holding no run); otherwise ``name-2``,
    ``name-3``, ... (:func:`posereg.outputs.numbered`). With ``exist_ok`` the folder is reused:
    the earlier run's logs, report and checkpoints are deleted. A folder made here is removed
    again by the lock's :meth:`RunLock.release` if the run leaves it empty.

    Raises:
        RunLockedError: with ``exist_ok``, when another process trains in the folder.
        OSError: the folder cannot be created (read-only, not a directory, ...).
    """
    base = Path(out_dir) / name
    for path in numbered(base):
        if path.exists() and holds_run(path) and not exist_ok:
            continue
        made = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(path)
        try:
            lock.acquire()
        except RunLockedError:
            if exist_ok:
                raise
            continue  # a run started here a moment ago
        lock.made_dir = made
        note = ""
        if path != base:
            note = f"{base} holds an earlier run; this run is {path} (--exist-ok reuses {base})"
        elif exist_ok and holds_run(path):
            for old in _OLD_RUN:
                p = path / old
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            note = f"reusing {path} (--exist-ok): the earlier run's logs, report and checkpoints were deleted"
        return path, lock, note
    raise RuntimeError(f"no free run name for {base}")


def clean_partial_writes(run_dir: Path) -> list[Path]:
    """Delete checkpoint temp files left by a process killed while saving; returns them."""
    removed = sorted(Path(run_dir).glob(".*.tmp"))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
