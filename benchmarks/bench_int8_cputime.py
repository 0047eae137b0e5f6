"""Float32 vs INT8 batch-1 latency in ONNX Runtime by process CPU time, interleaved: the check of
benchmarks/bench_int8.py's wall-clock latency on a loaded machine (issue 18 §3's >= 1.5x goal).

bench_int8.py times float32, then INT8, by the wall clock; on a shared 2-core machine a burst of
other work lands on one of them and moves the ratio by several times. Here the two exports that
bench_int8.py wrote (``OUT/latency_float32.onnx``, ``OUT/latency_int8.onnx``, 256x192) run
alternately, one ONNX Runtime intra-op thread, ``--rounds`` rounds of ``--iters`` calls with the
order rotated each round (:func:`posereg.bench.cost.interleaved_times`), timed by the process's
CPU time (what the crop costs on an idle core; the load does not inflate it); medians over rounds.

    OMP_NUM_THREADS=1 python benchmarks/bench_int8_cputime.py OUT [OUT ...] [--rounds 15]
        [--iters 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from posereg.bench.cost import interleaved_times, medians


def _runner(path: Path, crop: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(["keypoints"], {"images": crop})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outs", nargs="+", type=Path, help="bench_int8.py --out folders")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    load = os.getloadavg()
    runners = {}
    for out in args.outs:
        for arm in ("float32", "int8"):
            path = out / f"latency_{arm}.onnx"
            if not path.is_file():
                raise SystemExit(f"{path}: missing; run benchmarks/bench_int8.py --out {out} first")
            crop = np.random.default_rng(0).standard_normal((1, 3, 256, 192), dtype=np.float32)
            runners[(out.name, arm)] = _runner(path, crop)
    ms = {
        k: 1000 * v
        for k, v in medians(
            interleaved_times(runners, args.rounds, args.iters, True, time.process_time)
        ).items()
    }
    rows = {}
    print("| model | ORT float32 ms (CPU time) | ORT INT8 ms (CPU time) | INT8 speed-up |")
    print("|---|---:|---:|---:|")
    for out in args.outs:
        f32, i8 = ms[(out.name, "float32")], ms[(out.name, "int8")]
        rows[out.name] = {"float32_ms": f32, "int8_ms": i8, "int8_speedup": f32 / i8}
        print(f"| {out.name} | {f32:.2f} | {i8:.2f} | {f32 / i8:.2f}x |")
    result = {
        "rows": rows,
        "rounds": args.rounds,
        "iters": args.iters,
        "clock": "process_time",
        "threads": 1,
        "loadavg_start": [round(x, 2) for x in load],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"load average (1, 5, 15 min): {result['loadavg_start']} -> {result['loadavg_end']}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
