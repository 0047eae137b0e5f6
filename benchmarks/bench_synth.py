"""Benchmark posereg.synth: images/s per core, 3D-only poses/s, and the measured label noise.

Usage:
    python benchmarks/bench_synth.py [--num-images 1000] [--preset medium] [--workers 0]
        [--poses 200000] [--out /tmp/bench_synth] [--json results.json]

Speed is measured in one process (``--workers 0``: one core) unless told otherwise, best of
``--repeats`` runs (the machines are shared, so the best run is the least disturbed one); the
time includes sampling, rendering, labelling, JPEG encoding and writing files, and the json
(not the background bank, built once per worker and reported apart). Besides wall-clock rates
it reports rates per CPU second of this process, which other jobs on a shared machine do not
distort. The noise statistics are computed on the rendered dataset (rendered silhouette
areas), over labelled keypoints that are neither gross errors nor swapped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from posereg.skeletons import get_skeleton
from posereg.synth.generate import SynthConfig, _bank, generate, sample_poses


def image_speed(
    out: Path, num_images: int, config: SynthConfig, workers: int, repeats: int
) -> dict:
    t0 = time.perf_counter()
    _bank(config, 0)  # the background bank, built once per worker (cached here for seed 0)
    bank_s = time.perf_counter() - t0
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        path = generate(
            out, "bench", num_images, seed=0, config=config, num_workers=workers, progress=False
        )
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    result = {
        "images": num_images,
        "workers": workers,
        "seconds_best": round(best, 3),
        "images_per_s": round(num_images / best, 1),
        "images_per_s_per_core": round(num_images / best / max(workers, 1), 1),
        "bank_build_s": round(bank_s, 3),
        "json": str(path),
    }
    if workers == 0:
        # CPU time of this process: the per-core rate without the other jobs on a shared
        # machine (OpenCV and numpy run single-threaded here).
        result["cpu_seconds_best"] = round(best_cpu, 3)
        result["images_per_cpu_s"] = round(num_images / best_cpu, 1)
    return result


def pose_speed(num_poses: int, config: SynthConfig, repeats: int) -> dict:
    sample_poses(1000, 0, config)  # warm up
    best, best_cpu = float("inf"), float("inf")
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        sample_poses(num_poses, r, config)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {
        "poses": num_poses,
        "seconds_best": round(best, 3),
        "poses_per_s": round(num_poses / best),
        "poses_per_cpu_s": round(num_poses / best_cpu),
    }


def noise_stats(path: Path) -> dict:
    data = json.loads(path.read_text())
    cfg = SynthConfig.from_dict(data["info"]["config"])
    skel = get_skeleton(cfg.keypoint_set)
    k = skel.oks_k
    resid: dict[int, list[list[np.ndarray]]] = {1: [[] for _ in k], 2: [[] for _ in k]}
    labelled = outliers = pairs = swaps = 0
    for a in data["annotations"]:
        kp = np.array(a["keypoints"]).reshape(-1, 3)
        clean = np.array(a["keypoints_clean"]).reshape(-1, 3)
        skip = set(a["noise"]["outlier"]) | {i for p in a["noise"]["swap"] for i in p}
        labelled += int((kp[:, 2] > 0).sum())
        outliers += len(a["noise"]["outlier"])
        swaps += len(a["noise"]["swap"])
        pairs += sum(1 for i, j in skel.flip_pairs if kp[i, 2] > 0 and kp[j, 2] > 0)
        s = np.sqrt(a["area"])
        for i in np.flatnonzero(kp[:, 2] > 0):
            if i not in skip:
                resid[int(kp[i, 2])][i].append((kp[i, :2] - clean[i, :2]) / s)
    per_kp = {}
    for i, name in enumerate(skel.keypoint_names):
        row = {"k_i": round(float(k[i]), 4)}
        for code, label in ((2, "visible"), (1, "occluded")):
            r = np.array(resid[code][i]).reshape(-1, 2)
            if len(r) >= 10:
                row[f"{label}_n"] = len(r)
                row[f"{label}_sd_over_s"] = round(float(r.std()), 4)
                # per-axis sd / (scale k_i): 1 (visible) and occluded_factor (occluded) by design
                row[f"{label}_ratio_to_model"] = round(float(r.std() / (cfg.noise.scale * k[i])), 3)
                # COCO's own measure, sqrt(E[d^2 / s^2]) / sigma_i (sigma_i = k_i / 2): 1 for
                # visible keypoints at the default scale
                rms = float(np.sqrt(np.mean(np.sum(r**2, axis=1))))
                row[f"{label}_rms_over_sigma"] = round(rms / (k[i] / 2), 3)
        per_kp[name] = row
    return {
        "annotations": len(data["annotations"]),
        "labelled_keypoints": labelled,
        "occluded_fraction": round(
            sum(len(x) for x in resid[1]) / max(1, sum(len(x) for v in resid.values() for x in v)),
            3,
        ),
        "outlier_rate": round(outliers / max(labelled, 1), 4),
        "outlier_rate_expected": cfg.noise.outlier_prob,
        "swap_rate_per_pair": round(swaps / max(pairs, 1), 4),
        "swap_rate_expected": cfg.noise.swap_prob,
        "noise_scale": cfg.noise.scale,
        "per_keypoint": per_kp,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--preset", default="medium")
    p.add_argument("--workers", type=int, default=0, help="0: one core, in-process")
    p.add_argument("--poses", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    config = SynthConfig.preset(args.preset)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_"))
    results = {"preset": args.preset, "image_size": list(config.image_size)}
    results["images"] = image_speed(
        out / "images", args.num_images, config, args.workers, args.repeats
    )
    results["poses_3d"] = pose_speed(args.poses, config, args.repeats)
    results["noise"] = noise_stats(Path(results["images"]["json"]))
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
