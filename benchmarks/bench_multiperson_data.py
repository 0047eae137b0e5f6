"""Benchmark the multi-person data: the synthetic ``multi`` preset and MultiPersonDataset.

Usage:
    python benchmarks/bench_multiperson_data.py [--num-images 500] [--seed 1] [--out DIR]

Generates a ``multi`` split in one process (``--out``, default a temporary folder), reports
generation speed and the people per image, then reads every image of it through
:class:`posereg.data.multiperson.MultiPersonDataset` in one process, without and with the
augmentation (flip + 30-degree affine + colour jitter), and reports images/s and how many people
the box sanitizer dropped. docs/multiperson.md has the numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from posereg.config import MultiPersonTransformConfig
from posereg.data.multiperson import MultiPersonDataset
from posereg.synth.generate import SynthConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_multiperson_"))
    n = args.num_images

    t0 = time.perf_counter()
    ann = generate(
        out, "val", n, seed=args.seed, config=SynthConfig.preset("multi"), num_workers=0,
        progress=False, preset="multi",
    )  # fmt: skip
    gen_s = time.perf_counter() - t0
    data = json.loads(ann.read_text())
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=n + 1)[1:]
    unlabelled = sum(a["num_keypoints"] == 0 for a in data["annotations"])
    print(f"generate {n} multi images: {gen_s:.1f} s ({n / gen_s:.0f} images/s, one process)")
    print(
        f"annotated people per image: histogram {np.bincount(per_image).tolist()}, "
        f"mean {per_image.mean():.2f}; {unlabelled} of {len(data['annotations'])} people "
        "without a labelled keypoint"
    )
    arms = {
        "no augmentation": MultiPersonTransformConfig(),
        "flip + affine (rotation 30) + jitter 0.2": MultiPersonTransformConfig(
            augment=True, rotation_deg=30.0, color_jitter=0.2
        ),
    }
    for name, transform in arms.items():
        ds = MultiPersonDataset.from_coco(ann, out / "images" / "val", transform=transform)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        dt = time.perf_counter() - t0
        print(f"{name}: {len(ds) / dt:.0f} images/s (one process); dropped {dict(ds.dropped)}")


if __name__ == "__main__":
    main()
