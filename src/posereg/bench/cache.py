"""The bench's run cache: a run is keyed by its resolved config, and its folder says how far it got.

The key is the SHA-256 of the canonical JSON (sorted keys) of the resolved config, less the
fields that cannot change what is trained or measured (:data:`IGNORED_KEYS`), plus
:data:`BENCH_VERSION`; a run initialised from another run's checkpoint (``model.init_from``)
carries that run's key instead of its path. A run lives in ``OUT/runs/<arm>-<key[:12]>``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from posereg.config import Config, to_dict

__all__ = ["IGNORED_KEYS", "BENCH_VERSION", "config_key", "RunState", "run_state", "find_run"]

#: Raise when the bench's evaluation or the meaning of a cached result changes.
BENCH_VERSION = 1

#: Dotted config keys left out of the key, and why they cannot change results:
#: - ``name``, ``out_dir``: where the run is written.
#: - ``data.train_ann``, ``data.train_images``, ``data.val_ann``, ``data.val_images``,
#:   ``data.synth.root``: where the synthetic set is stored; its contents are fixed by the rest
#:   of ``data.synth`` (preset, sizes, seed, options), which stays in the key.
#: - ``data.workers``, ``data.synth.workers``: augmentation is a function of (seed, epoch, index)
#:   (TopDownDataset.set_epoch) and generation of (seed, split, index), whatever the process.
#: - ``train.log_every``, ``train.progress``, ``train.checkpoint_every``: logging and how often
#:   last.pt is written.
#: - ``eval.num_vis``: how many crops the run report draws.
#: - ``model.init_from``: replaced by the key of the run it names.
IGNORED_KEYS = (
    "name", "out_dir",
    "data.train_ann", "data.train_images", "data.val_ann", "data.val_images", "data.synth.root",
    "data.workers", "data.synth.workers",
    "train.log_every", "train.progress", "train.checkpoint_every",
    "eval.num_vis", "model.init_from",
)  # fmt: skip


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    node: Any = tree
    for k in parents:
        node = node.get(k) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def config_key(cfg: Config, init_key: str | None = None) -> str:
    """The hex SHA-256 that names a run: ``cfg`` less :data:`IGNORED_KEYS`, the key of the run
    ``model.init_from`` points to (``init_key``) and :data:`BENCH_VERSION`."""
    tree = to_dict(cfg)
    for dotted in IGNORED_KEYS:
        _drop(tree, dotted)
    material = {"config": tree, "init_from": init_key, "bench_version": BENCH_VERSION}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RunState(Enum):
    """How far a run folder got."""

    NEW = "new"  # nothing usable: train from the start
    INTERRUPTED = "interrupted"  # last.pt without a finished run: resume
    TRAINED = "trained"  # training finished (metrics.json), not yet evaluated by the bench
    DONE = "done"  # bench_result.json with this key: reuse


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    reason: str


def run_state(run_dir: Path, key: str) -> RunStatus:
    """The :class:`RunState` of ``run_dir`` for a run keyed ``key``, with why."""
    result = run_dir / "bench_result.json"
    if result.is_file():
        try:
            recorded = json.loads(result.read_text()).get("key")
        except (OSError, ValueError):
            recorded = None
        if recorded == key:
            return RunStatus(RunState.DONE, f"{result} has this key")
    if (run_dir / "metrics.json").is_file() and (
        (run_dir / "best.pt").is_file() or (run_dir / "last.pt").is_file()
    ):
        return RunStatus(RunState.TRAINED, "training finished, evaluation missing")
    if (run_dir / "last.pt").is_file():
        return RunStatus(RunState.INTERRUPTED, f"{run_dir / 'last.pt'} without metrics.json")
    return RunStatus(RunState.NEW, "no checkpoint")


def find_run(runs_dir: Path, arm: str, key: str) -> Path:
    """The run folder for ``key``: ``runs_dir/<arm>-<key12>``, or a folder of another arm with
    the same key (another profile's name for the same run), which is then shared."""
    own = runs_dir / f"{arm}-{key[:12]}"
    if own.exists():
        return own
    for other in sorted(runs_dir.glob(f"*-{key[:12]}")):
        if other.is_dir():
            return other
    return own
