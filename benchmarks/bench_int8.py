"""INT8 vs float32 in ONNX Runtime (issue 18 §3): accuracy on the synthetic validation set, what
the float32 nodes ``--int8`` keeps buy, and batch-1 latency at 256x192 on one thread.

Arms, each evaluated by the bench's own evaluation (:func:`posereg.bench.evaluation.evaluate_run`,
flip test as in the run's config) on the run's synthetic validation set:

- ``pytorch``: the checkpoint itself (the reference of the ``<= 1e-4 AP`` parity);
- ``float32``: ``posereg export`` (ONNX Runtime, float32);
- ``int8``: ``posereg export --int8``: QDQ, U8S8 per channel, the sigma head and the decode kept
  float32 (:func:`posereg.export.int8_exclusions`);
- ``int8_all``: the same quantisation with nothing kept float32.

Beside the metrics: |keypoint| and |sigma| differences to float32 on the calibration crops (the
training crops ``--int8`` calibrates on), in crop pixels, and the batch-1 latency of the same
architecture exported at 256x192 (the checkpoint's weights; a regression head pools globally, so
they run at any input size), float32 vs INT8, ONNX Runtime with 1 intra-op thread, median of
``--repeats`` runs (and PyTorch eager for reference).

Run from the folder the run's data paths are relative to (the main job: the repository root,
after ``posereg train configs/synth_rle.yaml``)::

    OMP_NUM_THREADS=1 python benchmarks/bench_int8.py --checkpoint runs/synth_rle/best.pt \\
        --out runs/bench_int8

It writes ``OUT/results.json`` and prints a markdown table (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from posereg.bench.evaluation import evaluate_run
from posereg.export import (
    calibration_crops,
    export_checkpoint,
    export_onnx,
    int8_exclusions,
    quantize_int8,
)
from posereg.models.build import model_from_checkpoint


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _outputs(path: Path, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """keypoints, sigma (N, K, 2) of an export on crops, without the flip test."""
    keypoints, _, sigma = _session(path, 1).run(["keypoints", "scores", "sigma"], {"images": crops})
    return keypoints, sigma


def _latency_ms(runs: dict, repeats: int, rounds: int = 10) -> dict[str, float]:
    """Median ms of each callable in ``runs``, interleaved: ``rounds`` rounds of ``repeats /
    rounds`` calls of each in turn, so that a shared machine's changing load falls on every arm
    alike (it moves single runs by 2-5x here)."""
    for run in runs.values():
        for _ in range(10):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(max(1, repeats // rounds)):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--out", default="runs/bench_int8", type=Path)
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--latency-size", type=int, nargs=2, default=[256, 192], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the latency (keeps OUT/results.json's arms)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    _, cfg, _ = model_from_checkpoint(args.checkpoint)
    if args.latency_only:  # keeps the arms of an earlier run, when there is one
        earlier = out / "results.json"
        results = json.loads(earlier.read_text()) if earlier.is_file() else {"arms": {}}
        results["checkpoint"] = str(args.checkpoint)
    else:
        results = _accuracy(args, cfg)
    _latency(args, cfg, results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _table(results)


def _accuracy(args: argparse.Namespace, cfg) -> dict:
    out = args.out
    float_path, _ = export_checkpoint(args.checkpoint, out / "float32.onnx", overwrite=True)
    crops = calibration_crops(cfg, args.calibration_images)
    exclude = int8_exclusions(float_path)
    paths = {
        "pytorch": args.checkpoint,
        "float32": float_path,
        "int8": quantize_int8(float_path, out / "int8.onnx", crops, exclude),
        "int8_all": quantize_int8(float_path, out / "int8_all.onnx", crops, exclude=[]),
    }
    results: dict = {
        "checkpoint": str(args.checkpoint),
        "calibration_images": len(crops),
        "kept_float32": exclude,
        "arms": {},
    }
    h, w = cfg.data.input_size
    ref_kp, ref_sigma = _outputs(float_path, crops)
    for arm, path in paths.items():
        metrics = evaluate_run(out, out / f"{arm}.npz", checkpoint=Path(path)).to_json()
        row = {"metrics": metrics}
        if arm.startswith("int8"):
            kp, sigma = _outputs(Path(path), crops)
            pixels = np.abs(kp - ref_kp) * np.array([w, h])  # crop pixels
            row["vs_float32_on_calibration_crops"] = {
                "keypoint_mean_px": float(pixels.mean()),
                "keypoint_p99_px": float(np.quantile(pixels, 0.99)),
                "sigma_mean_abs_rel": float(np.mean(np.abs(sigma - ref_sigma) / ref_sigma)),
            }
        results["arms"][arm] = row
        print(arm, json.dumps(row), flush=True)
    return results


def _latency(args: argparse.Namespace, cfg, results: dict) -> None:
    out = args.out
    # latency: the same architecture and weights at --latency-size, batch 1, one thread
    size = tuple(args.latency_size)
    big = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, input_size=list(size)))
    model, big, _ = model_from_checkpoint(args.checkpoint, big)
    model.eval()
    big_float = export_onnx(model, out / "latency_float32.onnx", size)  # type: ignore[arg-type]
    big_int8 = quantize_int8(
        big_float, out / "latency_int8.onnx", calibration_crops(big, 64), int8_exclusions(big_float)
    )
    crop = calibration_crops(big, 1)
    sessions = {
        arm: _session(path, 1) for arm, path in (("float32", big_float), ("int8", big_int8))
    }
    x = torch.from_numpy(crop)
    runs = {f"onnxruntime_{arm}_ms": (lambda s=s: s.run(["keypoints"], {"images": crop}))
            for arm, s in sessions.items()}  # fmt: skip
    with torch.no_grad():
        runs["pytorch_eager_float32_ms"] = lambda: model.predict(x)
        latency = _latency_ms(runs, args.repeats)
    latency["int8_speedup"] = latency["onnxruntime_float32_ms"] / latency["onnxruntime_int8_ms"]
    results["latency"] = {
        "input_size": list(size), "batch": 1, "threads": 1, **latency,
        # a shared machine's load skews times (ratios less): say how loaded it was
        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
    }  # fmt: skip
    print("latency", json.dumps(results["latency"]), flush=True)


def _table(results: dict) -> None:
    print("\n| arm | AP (clean) | error / sqrt(area) | keypoint AUROC | 90% coverage |"
          " mean |kp - fp32| px | sigma rel. diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for arm, row in results["arms"].items():
        m, d = row["metrics"], row.get("vs_float32_on_calibration_crops", {})
        cov = (m["coverage"] or {}).get("0.9")
        print(
            f"| {arm} | {m['ap_clean']:.4f} | {m['err_sqrt_area']:.4f} | "
            f"{m['kpt_auroc_miss']:.4f} | {cov if cov is None else f'{cov:.4f}'} | "
            f"{d.get('keypoint_mean_px', 0.0):.3f} | {d.get('sigma_mean_abs_rel', 0.0):.4f} |"
        )
    lat = results["latency"]
    size = lat["input_size"]
    print(
        f"\nbatch 1, {size[0]}x{size[1]}, 1 thread: ONNX Runtime float32 "
        f"{lat['onnxruntime_float32_ms']:.2f} ms, INT8 {lat['onnxruntime_int8_ms']:.2f} ms "
        f"({lat['int8_speedup']:.2f}x), PyTorch eager {lat['pytorch_eager_float32_ms']:.2f} ms "
        f"(load average {lat['load_average_1min']:.1f} on {lat['cpu_count']} cores)"
    )


if __name__ == "__main__":
    main()
