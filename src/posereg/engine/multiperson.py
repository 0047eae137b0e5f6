"""Training and evaluation of the multi-person families (:mod:`posereg.families.multiperson`).

A plain loop over the family's loss terms: AdamW (or SGD), a linear warm-up then a cosine to 0
(or steps at ``optim.milestones``), the gradient norm clipped, a fixed number of steps (or
epochs); the run folder is the 2D engine's (:func:`posereg.engine.rundir.new_run_dir`:
``config.yaml``, ``train_log.csv``, ``metrics.json``, ``best.pt`` by the validation AP,
``last.pt``), checkpoints written atomically with ``task``.

Evaluation is COCO keypoint AP with pycocotools on whole images, without ground-truth boxes:
the model finds the people of each validation image (at its stored size; the model resizes as
it was built to), and :func:`posereg.metrics.evaluate_coco` scores every prediction against the
labels (``keypoints``) and, for the synthetic sets, their clean truth (``keypoints_clean``).
Each evaluation of a model with sigma also fits the per-keypoint calibration of sigma
(:func:`fit_people_calibration`), saved in the checkpoint it picks, as the top-down runs do.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from posereg.config import MultiPersonTransformConfig, save_yaml, validate
from posereg.data.multiperson import MultiPersonDataset, build_multiperson_loader, collate_fn
from posereg.engine.rundir import clean_partial_writes, new_run_dir
from posereg.losses import NonFiniteLossError
from posereg.metrics.coco import evaluate_coco, load_coco_gt, make_coco_predictions, match_by_box
from posereg.result import PoseResult
from posereg.uncertainty import SigmaCalibration

if TYPE_CHECKING:
    from posereg.families.multiperson import MultiPersonFamily

__all__ = [
    "build_people_data",
    "predict_people",
    "coco_entries",
    "evaluate_people",
    "fit_people_calibration",
    "lr_factor",
    "train_people",
    "run_people_evaluation",
    "summarize",
]

#: metrics.json / ``posereg eval`` names of COCOeval's numbers
_STATS = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")
_FIELDS = ("ap", "ap50", "ap75", "ap_m", "ap_l", "ar", "ar50", "ar75", "ar_m", "ar_l")


def build_people_data(cfg: Any, split: str) -> MultiPersonDataset:
    """The ``split`` set of a multi-person config: train augmented by ``data.transform``; val at
    the stored image size (predictions are then in the annotation's pixels). A missing synthetic
    set (``data.synth``) is made for the train split first."""
    d = cfg.data
    if split == "train":
        if d.synth is not None:
            from posereg.engine.synthdata import ensure_synthetic_dataset

            ensure_synthetic_dataset(d.synth)
        ann, root, transform = d.train_ann, d.train_images, d.transform
    else:
        ann, root, transform = d.val_ann, d.val_images, MultiPersonTransformConfig(augment=False)
    return MultiPersonDataset.from_coco(
        ann, root, transform=transform, keep_empty_images=d.keep_empty_images,
        keypoints_field=d.keypoints_field,
    )  # fmt: skip


@torch.no_grad()
def predict_people(
    family: MultiPersonFamily, model: Any, cfg: Any, dataset: MultiPersonDataset, device: Any
) -> tuple[list[int], list[PoseResult]]:
    """(image ids, PoseResults) of every image of ``dataset``, ``eval.batch_size`` at a time."""
    was_training = bool(getattr(model, "training", False))
    if isinstance(model, nn.Module):
        model.eval()
    ids: list[int] = []
    results: list[PoseResult] = []
    try:
        n = cfg.eval.batch_size
        for start in range(0, len(dataset), n):
            images, targets = collate_fn(
                [dataset[i] for i in range(start, min(start + n, len(dataset)))]
            )
            results += family.infer(model, cfg, [image.to(device) for image in images])
            ids += [int(t["image_id"]) for t in targets]
    finally:
        if was_training:
            model.train()
    return ids, results


def coco_entries(ids: list[int], results: list[PoseResult]) -> list[dict]:
    """COCO results entries of every person (unrounded: ``decimals=None``)."""
    entries: list[dict] = []
    for image_id, r in zip(ids, results, strict=True):
        if len(r.keypoints):
            entries += make_coco_predictions(
                np.full(len(r.keypoints), image_id), r.keypoints, r.confidence,
                scores=r.scores, boxes=r.boxes, sigma=r.sigma, decimals=None,
            )  # fmt: skip
    return entries


def summarize(cfg: Any, ids: list[int], entries: list[dict]) -> dict[str, float]:
    """COCOeval against the labels and (``eval.use_clean``, every annotation with
    ``keypoints_clean``) the clean truth; AP etc. 0 when the model found nobody."""
    gt = load_coco_gt(cfg.data.val_ann)
    anns = gt.dataset.get("annotations") or []
    truths = ["labels"]
    if cfg.eval.use_clean and anns and all("keypoints_clean" in a for a in anns):
        truths.append("clean")
    out: dict[str, float] = {"num_images": float(len(ids)), "num_people": float(len(entries))}
    for truth in truths:
        prefix = "" if truth == "labels" else "clean_"
        if not entries:
            out.update({prefix + s: 0.0 for s in _STATS})
            continue
        r = evaluate_coco(gt, entries, use_clean=truth == "clean", image_ids=ids)
        out.update({prefix + s: float(getattr(r, f)) for s, f in zip(_STATS, _FIELDS, strict=True)})
    return out


def primary(metrics: dict[str, float]) -> tuple[str, float]:
    """The metric that picks ``best.pt``: the clean AP where there is one, else the AP."""
    key = "clean_AP" if "clean_AP" in metrics else "AP"
    return key, metrics[key]


def fit_people_calibration(
    dataset: MultiPersonDataset, results: list[PoseResult]
) -> SigmaCalibration | None:
    """The per-keypoint, per-axis scales c_k of ``PoseResult.sigma_calibrated`` fitted on the
    validation people the model found (:meth:`posereg.uncertainty.SigmaCalibration.fit`, the
    top-down runs' Laplace MLE).

    A true person with a labelled keypoint is found when a prediction's box matches its box
    (:func:`posereg.metrics.coco.match_by_box`, IoU >= 0.5: whether a person counts does not
    depend on its keypoints); the residuals are against the clean truth where the set has one
    for every person (the synthetic sets), else the labels.

    Arguments:
        dataset: the validation set, untransformed (its table's pixels are the results').
        results: one :class:`PoseResult` per image of ``dataset``, in its order.

    Returns:
        The fit, or None when the model predicts no sigma or found nobody.
    """
    t = dataset.table
    clean = t.keypoints_clean is not None and not np.isnan(t.keypoints_clean).any()
    truth_all = t.keypoints_clean if clean else t.keypoints  # (P, K, 3)
    residual, sigma, labelled = [], [], []
    for index, result in enumerate(results):
        rows = dataset.people(index)
        if len(rows) == 0 or len(result.scores) == 0:  # (an image without people has no sigma)
            continue
        if result.sigma is None:
            return None
        truth = truth_all[rows]  # (M, K, 3)
        pairs = match_by_box(result.boxes, result.scores, t.boxes[rows], (truth[..., 2] > 0).any(1))
        if pairs:
            p, m = (list(x) for x in zip(*pairs, strict=True))
            residual.append(truth[m, :, :2] - result.keypoints[p])
            sigma.append(result.sigma[p])
            labelled.append(truth[m, :, 2] > 0)
    if not residual:
        return None
    return SigmaCalibration.fit(
        np.concatenate(residual), np.concatenate(sigma), np.concatenate(labelled),
        per_axis=True, truth="clean" if clean else "labels",
    )  # fmt: skip


@dataclass
class PeopleEvaluation:
    """One evaluation: the metrics (:func:`summarize`) and the sigma calibration fitted on the
    same predictions (:func:`fit_people_calibration`; None without sigma)."""

    metrics: dict[str, float]
    calibration: SigmaCalibration | None


def _evaluate(
    family: MultiPersonFamily, model: Any, cfg: Any, device: Any = None, out: str | None = None
) -> PeopleEvaluation:
    if device is None:
        params = getattr(model, "parameters", None)
        device = next(params()).device if params else torch.device("cpu")
    dataset = build_people_data(cfg, "val")
    ids, results = predict_people(family, model, cfg, dataset, device)
    entries = coco_entries(ids, results)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(entries))
    return PeopleEvaluation(summarize(cfg, ids, entries), fit_people_calibration(dataset, results))


def evaluate_people(
    family: MultiPersonFamily, model: Any, cfg: Any, device: Any = None, out: str | None = None
) -> dict[str, float]:
    """COCO keypoint AP of ``model`` on ``cfg``'s validation images (module docstring); with
    ``out``, the predictions are written there (a COCO results json)."""
    return _evaluate(family, model, cfg, device, out).metrics


def lr_factor(step: int, total: int, cfg: Any, steps_per_unit: int) -> float:
    """The learning rate's factor at ``step`` (0-based) of ``total``: a linear warm-up over
    ``optim.warmup_steps``, then the schedule (``milestones`` in epochs or steps:
    ``steps_per_unit`` steps each)."""
    o = cfg.optim
    warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
    if o.schedule == "cosine":
        progress = max(0, step - o.warmup_steps) / max(1, total - o.warmup_steps)
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if o.schedule == "multistep":
        passed = sum(step >= m * steps_per_unit for m in o.milestones)
        return warm * o.gamma**passed
    return warm


def _format(metrics: dict[str, float]) -> str:
    shown = [k for k in ("AP", "AP50", "clean_AP", "clean_AP50") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in shown)


def train_people(
    family: MultiPersonFamily, cfg: Any, device: str | None = None, exist_ok: bool = False
) -> str:
    """``posereg train`` of a multi-person config into ``out_dir/name``; the summary to print.

    Raises:
        NonFiniteLossError: a non-finite loss (the step and each loss term named).
    """
    validate(cfg)
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = family.build_model(cfg).to(dev).train()  # a bad model option fails before the folder
    if cfg.data.synth is not None:
        from posereg.engine.synthdata import ensure_synthetic_dataset

        ensure_synthetic_dataset(cfg.data.synth)  # makes a missing synthetic set
    loader = build_multiperson_loader(cfg.data, "train", t.batch_size, shuffle=True)
    build_people_data(cfg, "val")  # a bad val set fails before the run folder is made
    steps_per_epoch = max(1, len(loader))
    total = t.steps if t.steps is not None else t.epochs * steps_per_epoch
    per_unit = 1 if t.steps is not None else steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    if o.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
    else:
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg, per_unit))
    run_dir, lock, note = new_run_dir(cfg.out_dir, cfg.name, exist_ok)
    try:
        if note:
            print(f"posereg: {note}", flush=True)
        clean_partial_writes(run_dir)
        cfg = replace(cfg, name=run_dir.relative_to(cfg.out_dir).as_posix())
        save_yaml(cfg, run_dir / "config.yaml")
        print(
            f"posereg train: {family.title}, {len(loader.dataset)} train images, {total} steps "
            f"of {t.batch_size} -> {run_dir}",
            flush=True,
        )
        log_path = run_dir / "train_log.csv"
        columns: list[str] | None = None
        best_value, best_metrics, metrics = -math.inf, {}, {}
        step, t0, recent = 0, time.perf_counter(), []

        def save(name: str, ev: PeopleEvaluation) -> None:
            from posereg.checkpoint import save_checkpoint

            epoch = step / steps_per_epoch
            fit = {} if ev.calibration is None else {"sigma_calibration": ev.calibration.to_state()}
            state = family.save_state(model, cfg, step=step, epoch=epoch, metrics=ev.metrics, **fit)
            save_checkpoint(state, run_dir / name)

        def evaluate_now() -> PeopleEvaluation:
            nonlocal best_value, best_metrics, metrics
            ev = _evaluate(family, model, cfg, dev)
            metrics = ev.metrics
            key, value = primary(metrics)
            print(f"step {step}/{total}: val {_format(metrics)}", flush=True)
            if value > best_value:
                best_value, best_metrics = value, metrics
                save("best.pt", ev)
            return ev

        while step < total:
            for images, targets in loader:
                if step >= total:
                    break
                terms = family.loss_terms(
                    model,
                    [image.to(dev) for image in images],
                    [{k: v.to(dev) if torch.is_tensor(v) else v for k, v in x.items()}
                     for x in targets],
                )  # fmt: skip
                loss = sum(terms.values())
                if not torch.isfinite(loss):
                    detail = ", ".join(f"{k} {float(v):.4g}" for k, v in terms.items())
                    raise NonFiniteLossError(
                        f"non-finite loss at step {step + 1} ({detail}); lower optim.lr"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if o.grad_clip:
                    nn.utils.clip_grad_norm_(params, o.grad_clip)
                opt.step()
                sched.step()
                step += 1
                recent.append(float(loss.detach()))
                row = {"step": step, "epoch": round(step / steps_per_epoch, 4),
                       "lr": opt.param_groups[0]["lr"], "loss": float(loss.detach()),
                       **{k: float(v.detach()) for k, v in terms.items()}}  # fmt: skip
                with log_path.open("a", newline="") as f:
                    writer = csv.writer(f)
                    if columns is None:
                        columns = list(row)
                        writer.writerow(columns)
                    writer.writerow([row.get(c, "") for c in columns])
                if step % t.log_every == 0 or step == total:
                    print(
                        f"step {step}/{total}: loss {sum(recent) / len(recent):.4f} "
                        f"({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
                    recent = []
                if t.eval_every and step % t.eval_every == 0 and step < total:
                    evaluate_now()
        seconds = time.perf_counter() - t0
        save("last.pt", evaluate_now())
        key, _ = primary(metrics)
        (run_dir / "metrics.json").write_text(
            json.dumps(
                {"val": metrics, "best": best_metrics, "primary": key, "steps": step,
                 "train_seconds": seconds},
                indent=1,
            )
        )  # fmt: skip
        return (
            f"run: {run_dir}\nval {_format(metrics)} (best {key} {best_value:.4f}; "
            f"{step} steps, training {seconds:.0f} s)"
        )
    finally:
        lock.release()


def run_people_evaluation(
    family: MultiPersonFamily,
    cfg: Any,
    checkpoint: str | Path,
    device: str | None = None,
    out: str | None = None,
) -> str:
    """``posereg eval`` of a multi-person config: the checkpoint (or its ONNX export) on the
    config's validation images; the lines to print."""
    model, _, _ = family.model_from_checkpoint(checkpoint)
    dev = torch.device(device or "cpu")
    if isinstance(model, nn.Module):
        model = model.to(dev)
    metrics = evaluate_people(family, model, cfg, dev, out)
    lines = [f"{k}: {v:.4f}" for k, v in metrics.items() if not k.startswith("num_")]
    lines.append(
        f"{int(metrics['num_people'])} people predicted in {int(metrics['num_images'])} images"
    )
    key, value = primary(metrics)
    lines.append(f"primary: {key} {value:.4f}")
    return "\n".join(lines)
