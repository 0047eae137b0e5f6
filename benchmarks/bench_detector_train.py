"""Benchmark: train the top-down pipeline's person detector on synthetic ``multi`` images, box AP.

Usage:
    python benchmarks/bench_detector_train.py [--num-train 500] [--num-val 100] [--steps 400]
        [--batch-size 4] [--out DIR] [--json FILE]

Generates a ``multi`` train split (seed 0) and val split (seed 1) (``--out``, default a temporary
folder), trains posereg's small person detector (``fasterrcnn_resnet18_fpn_w0.5``,
:data:`posereg.engine.detector.SMALL_DETECTOR_OPTIONS`) from scratch on the train split with the
training augmentation (flip + scale/translate affine; :class:`MultiPersonTransformConfig`) on one
CPU thread, saves it (``DIR/detector.pt``, loadable with ``posereg predict --detector
fasterrcnn_resnet18_fpn_w0.5 --detector-weights DIR/detector.pt``), and reports COCO box AP
(pycocotools, ``iouType="bbox"``) on the val split, against the boxes of the json (the visible
silhouettes' boxes). docs/multiperson.md has the numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from posereg.config import MultiPersonDataConfig, MultiPersonTransformConfig
from posereg.data.multiperson import MultiPersonDataset, build_multiperson_loader
from posereg.detect import PersonDetector
from posereg.engine.detector import DetectorTrainConfig, evaluate_detector, train_detector
from posereg.synth.generate import SynthConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=500)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_detector_"))

    t0 = time.perf_counter()
    anns = {}
    for split, n, seed in (("train", args.num_train, 0), ("val", args.num_val, 1)):
        anns[split] = generate(
            out, split, n, seed=seed, config=SynthConfig.preset("multi"), num_workers=0,
            progress=False, preset="multi",
        )  # fmt: skip
    print(
        f"generated {args.num_train} + {args.num_val} multi images: {time.perf_counter() - t0:.0f} s"
    )

    data = MultiPersonDataConfig(
        train_ann=str(anns["train"]), train_images=str(out / "images" / "train"),
        val_ann=str(anns["val"]), val_images=str(out / "images" / "val"), workers=0,
        transform=MultiPersonTransformConfig(augment=True),
    )  # fmt: skip
    torch.manual_seed(0)
    loader = build_multiperson_loader(data, "train", args.batch_size, drop_last=True)
    config = DetectorTrainConfig(steps=args.steps, lr=args.lr)
    result = train_detector(loader, config, out / "detector.pt", log=print, log_every=50)
    per_step = result.seconds / args.steps
    print(f"trained {args.steps} steps x {args.batch_size} images: {result.seconds:.0f} s "
          f"({per_step:.2f} s/step, one thread)")  # fmt: skip

    val = MultiPersonDataset.from_coco(anns["val"], out / "images" / "val")
    # the saved checkpoint, as `posereg predict --detector-weights` loads it
    detector = PersonDetector(config.name, result.checkpoint, score_threshold=0.05)
    t0 = time.perf_counter()
    boxes = evaluate_detector(detector.model, val, anns["val"])
    eval_s = time.perf_counter() - t0
    print(boxes)
    print(f"val: {len(val)} images, {eval_s / len(val) * 1000:.0f} ms/image (one thread)")
    record = {
        "command": "python benchmarks/bench_detector_train.py "
        f"--num-train {args.num_train} --num-val {args.num_val} --steps {args.steps} "
        f"--batch-size {args.batch_size} --lr {args.lr}",
        "detector": config.name,
        "options": config.options,
        "train_seconds": result.seconds,
        "first_loss": sum(result.losses[:20]) / 20,
        "last_loss": sum(result.losses[-20:]) / 20,
        "box": {k: v for k, v in vars(boxes).items() if k != "summary"},
        "ms_per_image": eval_s / len(val) * 1000,
        "checkpoint": str(result.checkpoint),
    }
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
