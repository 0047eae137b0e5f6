"""The training loop, top to bottom: data, model, optimizer, resume, epochs, checkpoints, report.

``train(cfg)`` runs on one process or, under torchrun, on each rank of a data-parallel job.
Everything a run produces goes into its run folder, ``cfg.out_dir / cfg.name`` (``name-2``, ...
when that holds an earlier run; see :mod:`posereg.engine.rundir`): ``config.yaml`` (resolved),
``last.pt`` and ``best.pt``, ``train_log.csv``, ``val_log.csv``, ``tb/`` (TensorBoard),
and the report (``metrics.json``, ``curves.png``, ``val_predictions.png``).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from posereg.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from posereg.config import (
    Config,
    ConfigError,
    apply_overrides,
    from_saved,
    save_yaml,
    to_dict,
    validate,
)
from posereg.data.dataset import SkippedImages, TopDownDataset, collate
from posereg.engine import distributed as D
from posereg.engine.builders import build_datasets, build_optimizer
from posereg.engine.evaluate import EvalResult, evaluate, primary_metric, primary_score
from posereg.engine.rundir import RunLock, clean_partial_writes, new_run_dir
from posereg.errors import RunFinished
from posereg.losses import NonFiniteLossError
from posereg.models.build import build_model, data_skeleton

__all__ = [
    "train",
    "TrainResult",
    "NonFiniteLossError",
    "RunFinished",
    "TrainingInterrupted",
    "step_loss",
    "RESUME_KEYS",
]

logger = logging.getLogger("posereg.train")

#: Test hook: when set to N, the process sends itself SIGKILL right after optimizer step N.
FAULT_KILL_ENV = "POSEREG_FAULT_KILL_AT_STEP"


#: The config keys ``--resume`` may change: a run is trained longer, never made another run.
RESUME_KEYS = ("train.epochs", "train.max_steps")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training; the message says what was saved and how to go on."""


@dataclass
class TrainResult:
    """What a finished run returns (the same numbers are in ``metrics.json``)."""

    run_dir: Path
    steps: int
    epochs: int
    metrics: dict[str, Any] = field(default_factory=dict)
    bad_steps: int = 0
    images_per_second: float = 0.0
    wall_time_s: float = 0.0
    skipped_unreadable: int = 0  # training items whose image was unreadable (on_bad_image=skip)


def lr_factor(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimizer step ``step``: warm-up, then the schedule."""
    o = cfg.optim
    if o.warmup_steps > 0 and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "multistep":
        epoch = step // max(steps_per_epoch, 1)
        return o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        total = max(cfg.train.epochs * steps_per_epoch - o.warmup_steps, 1)
        t = min(max(step - o.warmup_steps, 0) / total, 1.0)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


class _TrainStep(nn.Module):
    """Forward + loss in one module, so DistributedDataParallel sees the flow's parameters used."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: Tensor, target: Tensor, weight: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        return step_loss(self.model, images, target, weight)


def step_loss(
    model: nn.Module, images: Tensor, target: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor | None]:
    """One training step's loss of a top-down model (the family's ``train_step_loss``).

    Arguments:
        images: (B, 3, H, W) crops; target, weight: the head's codec's targets and weights.

    Returns:
        (the loss, a scalar; the head's sigma detached for the log, or None).
    """
    out = model(images)
    # the head computes its loss in float32, also under autocast
    loss = model.loss(out, target, weight)
    sigma = getattr(out, "sigma", None)  # heads that predict one: logged
    return loss, None if sigma is None else sigma.detach()


def _autocast(cfg: Config, device: torch.device):
    if cfg.train.amp == "none":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _loader(dataset, sampler, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


class _CSVLog:
    """A CSV log with a ``step`` column; on resume, rows past the checkpoint's step are dropped
    (the resumed run writes them again)."""

    def __init__(
        self, path: Path, columns: list[str], enabled: bool, resume_step: int | None
    ) -> None:
        self.path, self.columns, self.enabled = path, columns, enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and path.exists():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r["step"] and int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([columns, *([r.get(c, "") for c in columns] for r in rows)])

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow([row.get(c, "") for c in self.columns])


# --------------------------------------------------------------------------- the loop
def train(
    cfg: Config | None,
    resume: str | Path | None = None,
    device: str | None = None,
    exist_ok: bool = False,
    overrides: Sequence[str] = (),
) -> TrainResult:
    """Train (or resume) a run; returns its final metrics.

    Arguments:
        cfg: the resolved config; None (or ignored) when ``resume`` is given: the checkpoint's
            own config is used, so a resumed run continues the same run.
        resume: a run directory (or its ``last.pt``) to continue exactly where it stopped.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default CUDA when available.
        exist_ok: a new run reuses ``out_dir/name`` even when it holds an earlier run (whose
            logs, report and checkpoints are deleted) instead of going to ``name-2``, ...
        overrides: with ``resume`` only, ``KEY=VALUE`` items for :data:`RESUME_KEYS`, to train
            a run longer (``train.epochs=300``); any other key raises ConfigError.

    Raises:
        RunFinished: ``resume`` of a run that has finished (and written its report).
        TrainingInterrupted: Ctrl-C once training started; its message says what was saved
            (a single process saves ``last.pt`` at the step reached).
        KeyboardInterrupt: Ctrl-C before the first step (nothing saved); no message.
        RunLockedError: another process trains in the run folder.
        ConfigError, CheckpointError, BadInputError, NonFiniteLossError, OSError.
    """
    t_start = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = D.setup(dev)
    if dev.type == "cuda" and info.distributed:
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    ckpt, ckpt_path, note = None, None, ""
    if resume is not None:
        ckpt_path, ckpt, cfg = _load_resume(Path(resume), overrides)
        run_dir, lock = ckpt_path.parent, RunLock(ckpt_path.parent)
        if info.is_main:
            lock.acquire()
    elif cfg is None:
        raise ValueError("train() needs a config or a run to resume")
    else:
        if overrides:
            raise ValueError("train(overrides=...) is for resume; apply_overrides(cfg, ...) first")
        validate(cfg)
        # the resolved skeleton (names, flip pairs, limbs, sigmas) goes into config.yaml and checkpoints
        cfg = replace(cfg, data=replace(cfg.data, skeleton=data_skeleton(cfg).to_dict()))
        primary_metric(cfg)  # an unknown eval.primary_metric fails now, not after an epoch
        lock = None
        if info.is_main:
            run_dir, lock, note = new_run_dir(cfg.out_dir, cfg.name, exist_ok)
        run_dir = Path(str(D.all_gather_objects(str(run_dir) if info.is_main else "", info)[0]))
        cfg = replace(cfg, name=run_dir.relative_to(cfg.out_dir).as_posix())
    try:
        if info.is_main:
            removed = clean_partial_writes(run_dir)
            for line in [note] * bool(note) + [f"removed a partial write: {p}" for p in removed]:
                print(f"posereg: {line}", flush=True)
        with _SigintStop(enabled=not info.distributed, run_dir=run_dir) as stop:
            try:
                return _fit(cfg, run_dir, ckpt, ckpt_path, dev, info, t_start, stop)
            except KeyboardInterrupt as e:  # torchrun's, or Python's own: say what was saved
                if isinstance(e, TrainingInterrupted) or not stop.message:
                    raise
                raise TrainingInterrupted(stop.message) from e
    finally:
        if lock is not None:
            lock.release()


def _load_resume(path: Path, overrides: Sequence[str]) -> tuple[Path, dict[str, Any], Config]:
    """(checkpoint path, checkpoint, config with the allowed overrides) of a run to resume."""
    if not path.exists():
        raise CheckpointError(f"no run to resume at {path}")
    ckpt_path = path / "last.pt" if path.is_dir() else path
    run = ckpt_path.parent
    if not ckpt_path.exists():
        again = (
            f"posereg train {run / 'config.yaml'} --exist-ok"
            if (run / "config.yaml").exists()
            else "posereg train CONFIG"
        )
        raise CheckpointError(
            f"no last.pt in {run}: the run stopped before its first checkpoint; start it again ({again})"
        )
    ckpt = load_checkpoint(ckpt_path)
    cfg = from_saved(Config, ckpt["config"])
    refused = [o for o in overrides if o.partition("=")[0].strip() not in RESUME_KEYS]
    if refused:
        raise ConfigError(
            f"--resume continues {run} with its own config ({run / 'config.yaml'}); --set may only "
            f"change {' and '.join(RESUME_KEYS)} (to train longer), not: {' '.join(refused)}"
        )
    cfg = apply_overrides(cfg, list(overrides))
    t, epoch, step = cfg.train, ckpt["epoch"], ckpt["step"]
    at_steps = t.max_steps is not None and step >= t.max_steps
    if (epoch >= t.epochs or at_steps) and (run / "metrics.json").exists():
        what, key, done, limit, var = (
            ("step", "train.max_steps", step, t.max_steps, "S")
            if at_steps
            else ("epoch", "train.epochs", epoch, t.epochs, "M")
        )
        raise RunFinished(
            f"run {run} already finished at {what} {done} ({key}={limit}); to train further, set "
            f"{key} above {done}: posereg train --resume {run} --set {key}={var}"
        )
    return ckpt_path, ckpt, cfg


def _fit(
    cfg: Config,
    run_dir: Path,
    ckpt: dict[str, Any] | None,
    ckpt_path: Path | None,
    dev: torch.device,
    info: D.DistInfo,
    t_start: float,
    stop: _SigintStop,
) -> TrainResult:
    """The loop of :func:`train` in a prepared, locked run folder."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)  # noqa: NPY002  (for code that uses the global state)
    train_set, val_set = build_datasets(cfg, info=info)
    assert train_set is not None
    model = build_model(cfg).to(dev)
    if cfg.model.init_from and ckpt is None:
        from posereg.models.backbones import init_from_checkpoint

        init_from_checkpoint(model.backbone, cfg.model.init_from)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    batches_per_epoch = D.EpochBatchSampler(
        len(train_set), cfg.train.batch_size, world_size=info.world_size
    ).num_batches()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(cfg, s, batches_per_epoch)
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.train.amp == "fp16" and dev.type == "cuda")
    # only now that the data, model and optimizer are built: a run that fails to start writes
    # nothing, and its lock's release removes the empty folder (posereg.engine.rundir)
    if info.is_main:
        save_yaml(cfg, run_dir / "config.yaml")

    epoch, step, step_in_epoch, best = 0, 0, 0, -math.inf
    if ckpt is not None:
        load_model_state(model, ckpt["model"], str(ckpt_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        epoch, step, step_in_epoch = ckpt["epoch"], ckpt["step"], ckpt["step_in_epoch"]
        best = ckpt["best"]
        if info.is_main:
            print(f"posereg: resuming {run_dir} at epoch {epoch + 1}, step {step}", flush=True)

    step_module: nn.Module = _TrainStep(model)
    if info.distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    resume_step = None if ckpt is None else step
    train_log = _CSVLog(
        run_dir / "train_log.csv",
        ["step", "epoch", "loss", "lr", "images_per_s", "mean_sigma"],
        info.is_main,
        resume_step,
    )
    val_log = _CSVLog(
        run_dir / "val_log.csv",
        ["epoch", "step", "AP", "AP_clean", "PCK", "error", "MPJPE", "PA-MPJPE"],
        info.is_main,
        resume_step,
    )
    tb = _tensorboard(run_dir, info.is_main, resume_step)
    kill_at = int(os.environ.get(FAULT_KILL_ENV, "0"))

    def checkpoint(name: str, metrics: dict[str, Any] | None = None) -> None:
        if info.is_main:
            # c_k of the calibrated sigma, fitted at the evaluation whose metrics it carries
            fit = None if result_eval is None or not metrics else result_eval.sigma_fit
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "epoch": epoch,
                    "step": step,
                    "step_in_epoch": step_in_epoch,
                    "best": best,
                    "metrics": metrics or {},
                    "config": to_dict(cfg),
                    **({} if fit is None else {"sigma_calibration": fit.to_state()}),
                },
                run_dir / name,
            )

    def interrupted() -> TrainingInterrupted:
        if tb is not None:
            tb.close()
        return TrainingInterrupted(
            f"interrupted at step {step}; resume with posereg train --resume {run_dir}"
        )

    bad_total, bad_run = 0, 0
    skipped = SkippedImages()
    images_seen, t_train = 0, 0.0
    metrics: dict[str, Any] = {}
    result_eval: EvalResult | None = None
    max_steps = cfg.train.max_steps
    done = max_steps is not None and step >= max_steps
    total_steps = min(cfg.train.epochs * batches_per_epoch, max_steps or math.inf)

    stop.arm()  # Ctrl-C from here on: save last.pt at the current step and stop
    D.mark_shards_started()  # a user error from here on is this rank's own (the rank-0 rule)
    while epoch < cfg.train.epochs and not done:
        train_set.set_epoch(cfg.train.seed, epoch)
        sampler = D.EpochBatchSampler(
            len(train_set), cfg.train.batch_size, seed=cfg.train.seed, epoch=epoch,
            rank=info.rank, world_size=info.world_size, start_batch=step_in_epoch,
        )  # fmt: skip
        loader = _loader(train_set, sampler, cfg.data.workers, dev)
        _set_train_mode(model, cfg.model.freeze_bn)
        progress = _Progress(
            len(sampler),
            f"epoch {epoch + 1}/{cfg.train.epochs}",
            cfg.train.progress and info.is_main,
            cfg.train.log_every,
            total_steps - step,
        )
        t0, images_this_epoch = time.perf_counter(), 0
        for batch in _batches(loader, stop):
            skipped.update(batch)  # their target weights are 0: no loss, no gradient
            images = batch.image.to(dev, non_blocking=True)
            if cfg.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            target = batch.target.to(dev, non_blocking=True)
            weight = batch.target_weight.to(dev, non_blocking=True)
            with _autocast(cfg, dev):
                loss, sigma = step_module(images, target, weight)
            optimizer.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(loss))
            if info.distributed:  # every rank must agree to skip, or DDP would hang
                flag = torch.tensor([float(finite)], device=dev)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                finite = bool(flag.item())
            if not finite:
                bad_total += 1
                bad_run += 1
                logger.warning(
                    "non-finite loss at step %d (epoch %d); skipped. image ids: %s",
                    step, epoch, batch.image_id.tolist(),
                )  # fmt: skip
                if bad_run >= cfg.train.max_bad_steps:
                    raise NonFiniteLossError(
                        f"{bad_run} consecutive non-finite losses (last at step {step}, image ids "
                        f"{batch.image_id.tolist()}); lower optim.lr, enable optim.grad_clip or check the data"
                    )
                step_in_epoch += 1
                continue
            bad_run = 0
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            step_in_epoch += 1
            images_seen += len(batch) * info.world_size
            elapsed = time.perf_counter() - t0
            images_this_epoch += len(batch) * info.world_size
            rate = images_this_epoch / max(elapsed, 1e-9)
            if step % cfg.train.log_every == 0 or step_in_epoch == 1:
                row = {
                    "step": step, "epoch": epoch, "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                    "images_per_s": rate, "mean_sigma": "" if sigma is None else float(sigma.mean()),
                }  # fmt: skip
                train_log.write(row)
                if tb is not None:
                    for k in ("loss", "lr", "images_per_s", "mean_sigma"):
                        if row[k] != "":
                            tb.add_scalar(f"train/{k}", row[k], step)
            progress.update(step, float(loss.detach()), scheduler.get_last_lr()[0], rate)
            if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
                checkpoint("last.pt")
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if max_steps is not None and step >= max_steps:
                done = True
                break
            if stop.requested:
                break
        t_train += time.perf_counter() - t0
        skipped.end_epoch(lambda x: D.all_gather_objects(x, info), log=info.is_main)
        if stop.requested and not done and step_in_epoch < batches_per_epoch:
            checkpoint("last.pt")  # mid-epoch: the sampler resumes at step_in_epoch
            raise interrupted()
        if not done:
            epoch, step_in_epoch = epoch + 1, 0
        last_epoch = epoch >= cfg.train.epochs or done
        evaluated = last_epoch or bool(cfg.train.eval_every and epoch % cfg.train.eval_every == 0)
        if evaluated:
            result_eval = evaluate(model, val_set, cfg, dev, info)
            metrics = result_eval.summary()
            val_log.write({"epoch": epoch, "step": step, **metrics})
            if tb is not None:
                for k, v in metrics.items():
                    if isinstance(v, int | float):
                        tb.add_scalar(f"val/{k}", v, step)
            score = primary_score(result_eval, cfg)  # the benchmark's primary metric
            if score > best:
                best = score
                checkpoint("best.pt", metrics)
        progress.close(step, metrics if evaluated else {})
        checkpoint("last.pt", metrics)
        if stop.requested and not last_epoch:
            raise interrupted()
    stop.disarm()  # training is over; Ctrl-C now stops the report

    if tb is not None:
        tb.close()
    rate = images_seen / max(t_train, 1e-9)
    result = TrainResult(run_dir, step, epoch, metrics, bad_total, rate)
    result.skipped_unreadable = skipped.total_items
    if info.is_main:
        if result_eval is None:
            result_eval = evaluate(model, val_set, cfg, dev, info)
            metrics = result_eval.summary()
        result.metrics = _with_baseline(metrics, train_set, val_set, cfg, result_eval)
        result.wall_time_s = time.perf_counter() - t_start
        from posereg.engine.report import write_report

        write_report(run_dir, cfg, result, result_eval, val_set, model)
    D.barrier()
    return result


def _set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _with_baseline(
    metrics: dict[str, Any],
    train_set: TopDownDataset,
    val_set: TopDownDataset,
    cfg: Config,
    model_eval: EvalResult | None = None,
) -> dict[str, Any]:
    """Add the mean-pose baseline's numbers (and the model/baseline error ratio) to ``metrics``."""
    from posereg.engine.evaluate import evaluate_predictions, mean_pose, mean_pose_predictions

    if cfg.eval.use_detections:
        return metrics
    base = evaluate_predictions(
        mean_pose_predictions(
            mean_pose(train_set), val_set, model_eval.predictions if model_eval else None
        ),
        val_set,
        cfg,
    ).summary()
    out = dict(metrics)
    for key in ("AP", "AP_clean", "PCK", "error"):
        if key in base:
            out[f"baseline_{key}"] = base[key]
    if base.get("error"):
        out["error_ratio"] = metrics["error"] / base["error"]
    return out


# --------------------------------------------------------------------------- Ctrl-C
class _SigintStop:
    """SIGINT handler while training: the first Ctrl-C asks the loop to save ``last.pt`` and stop
    after the current step; a second one (or one before the loop starts or after it ends) stops
    at once with a :class:`TrainingInterrupted` that says what was saved.

    The handler acts in the process that installed it only: DataLoader workers forked from it
    inherit it, and a Ctrl-C in a terminal signals the whole process group, workers included;
    the main process stops them.

    Single process only: under torchrun the agent signals the workers itself, and the ranks
    would have to agree on the step; a data-parallel run resumes from its last checkpoint.
    """

    def __init__(self, enabled: bool, run_dir: Path) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.armed = self.requested = False
        self.pid, self.run_dir = os.getpid(), run_dir
        self.message = ""  # before the loop: a bare KeyboardInterrupt, nothing was saved

    def arm(self) -> None:
        """The loop starts: a first Ctrl-C now stops after the current step."""
        self.armed = True
        self.message = f"interrupted; resume from the last checkpoint with posereg train --resume {self.run_dir}"

    def disarm(self) -> None:
        """The loop ended (last.pt is final): a Ctrl-C now stops the report."""
        self.armed = False
        self.message = (
            f"interrupted while writing the report; posereg train --resume {self.run_dir} writes it"
        )

    def __enter__(self) -> _SigintStop:
        if self.enabled:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self.pid:  # a forked DataLoader worker: its parent handles Ctrl-C
            return
        if not self.message:
            raise KeyboardInterrupt
        if not self.armed or self.requested:
            raise TrainingInterrupted(self.message)
        self.requested = True
        print(
            "posereg: stopping after this step (Ctrl-C again: at once)", file=sys.stderr, flush=True
        )


def _batches(loader: Iterable, stop: _SigintStop) -> Iterator:
    """The loader's batches; ends early when a Ctrl-C also stopped its worker processes."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError:  # "DataLoader worker exited unexpectedly": they got the SIGINT too
            if stop.requested:
                return
            raise
        yield batch


# --------------------------------------------------------------------------- logging helpers
def _tensorboard(run_dir: Path, enabled: bool, resume_step: int | None):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: CSV logs only
        logger.info("tensorboard is not installed; logging to CSV only")
        return None
    # on resume, events after the checkpoint's step are dropped (the resumed run writes them again)
    purge = None if resume_step is None else resume_step + 1
    return SummaryWriter(str(run_dir / "tb"), purge_step=purge)


class _Progress:
    """One epoch's progress: a tqdm bar when stderr is a terminal, and plain lines on stdout when
    stdout or stderr is a file or pipe (nohup, SLURM, ``| tee``): one every ``every`` steps and
    one at the end of the epoch.

    Arguments:
        total: batches in this epoch; desc: ``epoch E/N``; enabled: False prints nothing.
        every: steps between lines; steps_left: optimizer steps left in the run (for the ETA).
    """

    def __init__(self, total: int, desc: str, enabled: bool, every: int, steps_left: float) -> None:
        self.bar = None
        self.desc, self.every, self.steps_left = desc, every, steps_left
        self.lines = enabled and not (sys.stdout.isatty() and sys.stderr.isatty())
        self.done, self.loss_sum, self.rate, self.t0 = 0, 0.0, 0.0, time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            # disable=None: a bar on a terminal, nothing when stderr is a file
            self.bar = tqdm(
                total=total, desc=desc, unit="batch", dynamic_ncols=True, leave=False, disable=None
            )

    def update(self, step: int, loss: float, lr: float, rate: float) -> None:
        self.done, self.loss_sum, self.rate = self.done + 1, self.loss_sum + loss, rate
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}", refresh=False
            )
            self.bar.update(1)
        if self.lines and step % self.every == 0:
            per_step = (time.perf_counter() - self.t0) / self.done
            eta = _hms(max(self.steps_left - self.done, 0) * per_step)
            print(
                f"{self.desc} step {step} loss {loss:.4f} lr {lr:.2e} {rate:.0f} img/s ETA {eta}",
                flush=True,
            )

    def close(self, step: int, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.lines:
            val = "".join(
                f" {k} {metrics[k]:.4f}"
                for k in ("AP", "PCK", "error", "MPJPE", "PA-MPJPE")
                if isinstance(metrics.get(k), float)
            )
            mean = self.loss_sum / max(self.done, 1)
            print(
                f"{self.desc} done: step {step} mean loss {mean:.4f} {self.rate:.0f} img/s "
                f"{_hms(time.perf_counter() - self.t0)}{val}",
                flush=True,
            )


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
