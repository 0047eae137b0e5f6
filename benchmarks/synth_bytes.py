"""Write small synthetic sets through every generator entry point, to compare two code versions byte for byte.

Usage (a refactoring of posereg.synth must leave every byte unchanged):
    PYTHONPATH=OLD/src python benchmarks/synth_bytes.py /tmp/old
    PYTHONPATH=NEW/src python benchmarks/synth_bytes.py /tmp/new --compare /tmp/old

It writes, each with explicit noise scales (so that a changed default does not count): the
three presets (one as PNG), the MPII-16 keypoint set with Human3.6M cameras, a 3D-only npz, a
re-rendered image's part-id buffer, two ``posereg data synth`` command lines (``--set``,
``--noise``, ``--noise off``) and a ``data.synth`` set made the way training makes it, settings
records included. ``--compare`` lists the files whose SHA-256 differ (exit 1 if any).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np


def write_sets(out: Path) -> None:
    from posereg.cli import main
    from posereg.config import SynthDataConfig
    from posereg.engine.synthdata import ensure_synthetic_dataset
    from posereg.synth import SynthConfig, generate, generate_3d, render_index

    cases = {
        "medium": SynthConfig.preset("medium", image_size=(128, 128), noise={"scale": 1.0}),
        "easy": SynthConfig.preset("easy", image_size=(128, 96), noise={"scale": 0.5}),
        "hard_png": SynthConfig.preset(
            "hard", image_size=(96, 128), image_format="png", noise={"scale": 1.5}
        ),
        "mpii_h36m": SynthConfig.preset(
            "medium", keypoint_set="mpii16", camera="h36m", noise={"scale": 1.0}
        ),
    }
    for name, cfg in cases.items():
        generate(out / name, "train", 20, seed=7, config=cfg, num_workers=0, progress=False)
    cfg3d = SynthConfig.preset("medium", keypoint_set="h36m17", noise={"scale": 1.0})
    generate_3d(out / "p3d", "train", 3000, seed=2, config=cfg3d)
    scene = render_index(5, seed=7, split="train", config=cases["medium"])
    np.save(out / "render_index_ids.npy", scene.part_ids)
    np.save(out / "render_index_img.npy", scene.image)
    common = ["--workers", "0", "--quiet"]
    assert main(["data", "synth", "--out", str(out / "cli"), "--num-images", "6", "--seed", "4",
                 "--people-per-image", "2..3", "--image-size", "96", "80", "--preset", "hard",
                 "--noise", "scale=1", "outlier_prob=0.1", "--set", "occluder_prob=0.6",
                 "pose_classes=standing,walking", "camera_file=none", *common]) == 0  # fmt: skip
    assert main(["data", "synth", "--out", str(out / "cli_off"), "--num-images", "4",
                 "--people-per-image", "2", "--noise", "off", *common]) == 0  # fmt: skip
    ensure_synthetic_dataset(
        SynthDataConfig(
            root=str(out / "train_path"),
            preset="easy",
            num_train=8,
            num_val=4,
            seed=3,
            workers=0,
            options={"image_size": [64, 64], "noise": {"scale": 0.5, "outlier_prob": 0.0}},
        )  # fmt: skip
    )


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write the sets to")
    p.add_argument("--compare", type=Path, help="a folder written by another code version")
    args = p.parse_args()
    write_sets(args.out)
    mine = digests(args.out)
    if args.compare is None:
        print(f"{len(mine)} files in {args.out}")
        return 0
    theirs = digests(args.compare)
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    for k in differ:
        print(f"differs: {k}")
    print(f"{len(mine)} files, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
