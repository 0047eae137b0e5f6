"""Output files and folders: nothing replaced unasked, no half-written file, a fresh folder per run.

Three rules every command that writes follows:

- a file the user names as the output is not replaced unless asked (:func:`refuse_existing`,
  ``--overwrite``);
- a file is written to a temporary file in its own folder, synced and renamed over the target
  (:func:`atomic_path`), so a full disk, a read-only folder or a kill leaves either the previous
  file or none, never half of one;
- a default output folder that already holds results is not reused: ``base``, ``base-2``,
  ``base-3``, ... (:func:`numbered`, :func:`next_free_dir`), as training names its runs
  (:func:`posereg.engine.rundir.new_run_dir`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "OutputExistsError",
    "atomic_path",
    "numbered",
    "os_error",
    "next_free_dir",
    "new_file_mode",
    "refuse_existing",
    "write_atomic",
]

#: How many numbered folders :func:`next_free_dir` tries before giving up.
MAX_NUMBERED = 10_000


class OutputExistsError(FileExistsError):
    """The output file exists and replacing it was not asked for."""


def refuse_existing(path: str | os.PathLike, flag: str = "--overwrite") -> Path:
    """``path``, unless something is there already.

    Raises:
        OutputExistsError: ``path`` exists; the message names it and the ``flag`` that allows
            replacing it.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise OutputExistsError(f"{path} exists; give {flag} to replace it")
    return path


def os_error(e: OSError, what: str) -> OSError:
    """``WHAT: <why>``, an OSError with the errno of ``e`` and without its ``[Errno N]`` prefix
    (``what`` says what failed, on which path: ``cannot write PATH``)."""
    err = OSError(f"{what}: {e.strerror or e}")
    err.errno = e.errno
    return err


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask; 0o644 with the usual 022).

    Files written atomically through ``tempfile.mkstemp`` (checkpoints, predictions, exports) are
    0600 until given this mode, so that every file a command writes has the same permissions.
    """
    umask = os.umask(0)  # reading the umask means setting it: set it straight back
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to; renamed to ``path`` when the block ends.

    The temporary file (``.NAME.XXXX.tmp``) gets the mode a plain ``open`` would give. On leaving
    the block it is synced to disk and renamed over ``path`` in one step; if the block raises, or
    the sync or rename fails, it is deleted and ``path`` is left as it was.

    Raises:
        OSError: ``cannot write PATH: <why>`` (the folder is missing or read-only, the disk is
            full, the file is too large, ...), with the original errno; other exceptions of the
            block pass through unchanged.

    Example:
        >>> with atomic_path("model.onnx") as tmp:  # doctest: +SKIP
        ...     torch.onnx.export(model, x, str(tmp))
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise os_error(e, f"cannot write {path}") from None
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, new_file_mode())  # mkstemp makes 0600; give the mode open() would
        finally:
            os.close(fd)
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise os_error(e, f"cannot write {path}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path`; returns ``path``.

    Raises:
        OSError: ``cannot write PATH: <why>``; no partial file is left.
    """
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()
    return path


def numbered(base: str | os.PathLike) -> Iterator[Path]:
    """``base``, ``base-2``, ``base-3``, ... (at most :data:`MAX_NUMBERED` names)."""
    base = Path(base)
    yield base
    for i in range(2, MAX_NUMBERED + 1):
        yield base.with_name(f"{base.name}-{i}")


def next_free_dir(base: str | os.PathLike) -> Path:
    """The first of ``base``, ``base-2``, ``base-3``, ... that is missing or an empty folder.

    Nothing is created: the caller makes the folder it writes to.

    Raises:
        FileExistsError: all :data:`MAX_NUMBERED` names are taken.
    """
    for path in numbered(base):
        if not path.exists() and not path.is_symlink():
            return path
        if path.is_dir() and not any(path.iterdir()):
            return path
    raise FileExistsError(f"no free folder name for {base}: {base}-{MAX_NUMBERED} is taken too")
