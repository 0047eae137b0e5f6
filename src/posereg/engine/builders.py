"""Builders of training and evaluation: the datasets and the optimizer a config describes.

The models a config or a checkpoint describes are built by :mod:`posereg.models.build`, which
inference uses without importing the engine.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from posereg.config import Config
from posereg.data.dataset import TopDownDataset
from posereg.engine import distributed as D
from posereg.models.build import check_depth, codec_for, data_skeleton

__all__ = ["build_datasets", "build_optimizer"]


def build_datasets(
    cfg: Config, train_split: bool = True, info: D.DistInfo | None = None
) -> tuple[TopDownDataset | None, TopDownDataset]:
    """(train, val) datasets.

    With ``data.synth``, training (``train_split``) first makes the synthetic splits that are
    missing or were made with other settings: rank 0 alone, the other ranks of ``info`` wait for
    it. Without ``train_split`` (evaluation) nothing is generated: a missing validation set is a
    :class:`BadInputError` that says how to make it.
    """
    from posereg.engine.synthdata import check_synthetic_split, ensure_synthetic_dataset

    d = cfg.data
    check_depth(cfg)
    if d.synth is not None and not train_split:
        check_synthetic_split(d.synth, "val")
    elif d.synth is not None:
        info = info or D.DistInfo()
        error: Exception | None = None
        if info.is_main:
            try:
                ensure_synthetic_dataset(d.synth)
            except Exception as e:  # re-raised below, once the other ranks know
                error = e
        # the gather is the barrier the other ranks wait at; it also tells them rank 0 failed
        failed = D.all_gather_objects("" if error is None else f"{error}", info)[0]
        if error is not None:
            raise error
        if failed:
            raise RuntimeError(f"rank 0 could not make the synthetic dataset: {failed}")
    common = dict(input_size=tuple(d.input_size), on_bad_image=d.on_bad_image, codec=codec_for(cfg))
    val_transform = replace(d.transform, augment=False)
    if d.format == "mpii":
        train = (
            TopDownDataset.from_mpii(d.train_ann, d.train_images, transform=d.transform, **common)
            if train_split
            else None
        )
        val = TopDownDataset.from_mpii(d.val_ann, d.val_images, transform=val_transform, **common)
        return train, val
    skeleton = data_skeleton(cfg)
    common["keypoints_field"] = d.keypoints_field
    if d.depth:
        common["depth_range"] = d.depth_range_mm
    train = (
        TopDownDataset.from_coco(
            d.train_ann, d.train_images, skeleton=skeleton, transform=d.transform, **common
        )
        if train_split
        else None
    )
    use_dets = cfg.eval.use_detections and d.detections
    val = TopDownDataset.from_coco(
        d.val_ann,
        d.val_images,
        skeleton=skeleton,
        transform=val_transform,
        detections=d.detections if use_dets else None,
        det_score_threshold=d.det_score_threshold,
        skip_unlabelled=not use_dets,
        **common,
    )
    return train, val


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.optim`` over all of ``model``'s parameters (the flow's included)."""
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
    cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel for all tensors instead of torch's per-tensor loop on the CPU; the same
    # update up to float rounding. Measured on the main job's model (2 threads): the whole train
    # step 0.80x (benchmarks/bench_rle_overhead.py --adam fused vs default).
    return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=True)
