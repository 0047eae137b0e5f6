"""Throughput of the top-down data pipeline: decode + crop + augment + encode at 256x192.

Measures, on one process with one thread (cv2 and torch), the training pipeline
(``TopDownDataset`` with the official COCO augmentation and regression targets) on the COCO
fixtures (640x480-class JPEGs, repeated) and on a synthetic set, then the DataLoader rate with
2 workers, and the JPEG decoders alone (OpenCV, Pillow, simplejpeg).

    python benchmarks/bench_data.py                       # COCO fixtures + a stand-in synthetic set
    python benchmarks/bench_data.py --synthetic DIR       # DIR holds a COCO json and its images

Without ``--synthetic`` the script writes a stand-in synthetic set (256x256 JPEGs, blurred
texture with people-like boxes and 17 keypoints) to a temporary directory and says so.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from posereg.data import TopDownDataset, TransformConfig, collate
from posereg.data.image_io import decode_bgr, simplejpeg
from posereg.samples import SAMPLES_DIR

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COCO = SAMPLES_DIR / "coco"


def make_standin_synthetic(root: Path, num_images: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Write a stand-in synthetic COCO set: 256x256 JPEGs, 1-2 people-like boxes each."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        canvas = cv2.GaussianBlur(cv2.resize(noise, (256, 256)), (0, 0), 3)
        for _ in range(int(rng.integers(1, 3))):
            w, h = int(rng.integers(50, 110)), int(rng.integers(120, 230))
            x, y = int(rng.integers(0, 256 - w)), int(rng.integers(0, 256 - h))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.ellipse(canvas, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, color, -1)
            kx = rng.uniform(x, x + w, 17)
            ky = np.sort(rng.uniform(y, y + h, 17))
            kpts = np.stack([kx, ky, np.full(17, 2.0)], 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [x, y, w, h],
                    "area": float(w * h),
                    "num_keypoints": 17,
                    "keypoints": kpts.ravel().tolist(),
                    "keypoints_clean": kpts.ravel().tolist(),
                }
            )
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(root / "images" / name), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": i + 1, "file_name": name, "height": 256, "width": 256})
    ann = root / "standin.json"
    cats = [{"id": 1, "name": "person", "keypoints": [f"k{j}" for j in range(17)]}]
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return ann, root / "images"


def find_synthetic(root: Path) -> tuple[Path, Path]:
    """The COCO json in DIR (the one with annotations) and the image root that holds its files."""
    for ann in sorted(root.rglob("*.json")):
        try:
            data = json.loads(ann.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("annotations") and data.get("images"):
            first = data["images"][0]["file_name"]
            split = ann.stem.removeprefix("person_keypoints_")  # posereg.synth: images/<split>/
            candidates = (
                ann.parent,
                ann.parent / "images",
                root,
                root / "images",
                root / "images" / split,
            )
            for image_root in candidates:
                if (image_root / first).is_file():
                    return ann, image_root
    raise SystemExit(f"no COCO json with images found under {root}")


def single_thread_rate(dataset: TopDownDataset, num_items: int) -> tuple[float, float]:
    """(wall-clock rate, CPU-time rate) in items/s; the CPU-time rate is what a dedicated core
    gives, unaffected by other processes on a shared machine."""
    for i in range(min(len(dataset), 8)):  # warm the page cache and the code paths
        dataset[i]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(num_items):
        dataset[i % len(dataset)]
    return num_items / (time.perf_counter() - wall), num_items / (time.process_time() - cpu)


def loader_rate(dataset: TopDownDataset, num_items: int, workers: int, batch_size: int) -> float:
    indices = [i % len(dataset) for i in range(num_items)]
    loader = DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
    )
    it = iter(loader)
    first = next(it)  # worker start-up is not throughput
    start, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch)
    del first
    return n / (time.perf_counter() - start)


def decoder_rates(files: list[Path], num: int) -> dict[str, float]:
    """Full-size decode rate per decoder, in images per CPU second (best of 3, interleaved)."""
    datas = [f.read_bytes() for f in files]
    candidates = {
        "opencv imdecode": lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR),
        "pillow": lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")),
        "posereg decode_bgr(opencv)": lambda d: decode_bgr(d, jpeg_decoder="opencv"),
    }
    if simplejpeg is not None:
        candidates["simplejpeg"] = lambda d: simplejpeg.decode_jpeg(d, "BGR")
        candidates["posereg decode_bgr(simplejpeg)"] = lambda d: decode_bgr(
            d, jpeg_decoder="simplejpeg"
        )
    out: dict[str, float] = {}
    for _ in range(3):  # interleave to spread the noise of a shared machine
        for name, fn in candidates.items():
            fn(datas[0])
            start = time.process_time()
            for i in range(num):
                fn(datas[i % len(datas)])
            out[name] = max(out.get(name, 0.0), num / (time.process_time() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, default=DEFAULT_COCO, help="COCO fixture directory")
    parser.add_argument("--synthetic", type=Path, default=None, help="synthetic set directory")
    parser.add_argument("--items", type=int, default=1500, help="items per single-thread run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--loader-items", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--color-jitter", type=float, default=0.2)
    args = parser.parse_args()

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    train = TransformConfig(augment=True, color_jitter=args.color_jitter)

    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic is None:
            synth_ann, synth_root = make_standin_synthetic(Path(tmp))
            synth_label = "stand-in synthetic set (generated here: 64 x 256x256 JPEGs)"
        else:
            synth_ann, synth_root = find_synthetic(args.synthetic)
            synth_label = f"synthetic set {synth_ann}"
        sets = {
            "COCO fixtures": (args.coco / "test_coco.json", args.coco),
            synth_label: (synth_ann, synth_root),
        }
        print(
            f"one process, one thread, {args.items} items x best of {args.repeats}, 256x192, "
            f"augment on (flip, scale, rotation, half-body, colour jitter {args.color_jitter}), "
            "regression targets"
        )
        for label, (ann, root) in sets.items():
            for fast in (True, False):
                cfg = TransformConfig(**{**train.__dict__, "fast_decode": fast})
                ds = TopDownDataset.from_coco(ann, root, transform=cfg)
                runs = [single_thread_rate(ds, args.items) for _ in range(args.repeats)]
                wall, cpu = max(r[0] for r in runs), max(r[1] for r in runs)
                mode = "reduced" if fast else "full"
                print(
                    f"  {label} [{mode} decode]: {cpu:.0f} images/CPU-s ({wall:.0f} images/s wall)"
                )
        for label, (ann, root) in sets.items():
            ds = TopDownDataset.from_coco(ann, root, transform=train)
            rate = loader_rate(ds, args.loader_items, args.workers, args.batch_size)
            print(
                f"  DataLoader {args.workers} workers, batch {args.batch_size}, {label}: {rate:.0f} images/s"
            )
        files = sorted(args.coco.glob("*.jpg"))
        print("JPEG decode alone, full size, COCO fixtures (images per CPU second, best of 3):")
        for name, rate in decoder_rates(files, 400).items():
            print(f"  {name}: {rate:.0f} images/s")


if __name__ == "__main__":
    main()
