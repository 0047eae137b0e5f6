"""Deployment speed (issue 18 section 4): per-crop latency, throughput, detectors, serve.

    python benchmarks/bench_deploy.py [--backbones NAME ...] [--threads 1 2] [--batches 8 32]
        [--rounds 5] [--iters 10] [--detectors NAME ...] [--serve MODEL ...] [--clients 8]
        [--requests 20] [--serve-rounds 3] [--skip crops throughput detectors serve]
        [--json runs/bench_deploy.json]

Four measurements, each printed as a Markdown table and all written to ``--json``:

* Per-crop latency at 256x192, batch 1, with 1 and 2 threads: PyTorch eager
  (``TopDownModel.predict``: backbone, regression head and decode, no flip test) vs ONNX
  Runtime float32 (the graph ``posereg.export.export_onnx`` writes, the same computation) vs
  ONNX Runtime INT8, for ResNet-18/50 and every light backbone of
  ``posereg.models.backbones.LIGHT_BACKBONES``, full width, random weights (latency does not
  depend on them), with parameters (without the training-only flow) and forward GFLOPs
  (2 per multiply-add; ``posereg.bench.cost.gflops``).
* Throughput in crops per second at batch 8 and 32 (what video and serve run), same backends, at
  the largest ``--threads``.
* Person detectors (``posereg.detect``) per image on a real photo (COCO 000000197388.jpg, 640 x
  392), their COCO weights when torchvision's cache has them, else random weights (the same
  computation; the table says which).
* ``posereg serve``'s requests per second for each ``--serve`` model (a .pt checkpoint, or an
  .onnx export where posereg serves those): a real server subprocess on a loopback port, 8
  concurrent keep-alive clients posting that photo with its 5 annotated person boxes.

Timing: every variant of a table runs once per round (``posereg.bench.cost.interleaved_times``:
one warm-up call each, then ``--rounds`` rounds of ``--iters`` calls), so load on the machine
hits them alike; the median over rounds is reported. Serve runs its models alternately, one
load test each per round, median requests/s. The machine's load average
(``os.getloadavg``) before and after is printed with the tables: numbers taken at a load above
the number of cores are provisional.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posereg.bench.cost import gflops, interleaved_times, medians
from posereg.detect import DETECTORS, DetectorName, PersonDetector, detector_weights_path
from posereg.export import export_onnx
from posereg.models import backbones as backbone_module
from posereg.models import create_pose_model
from posereg.samples import sample_path

POSEREG = str(Path(sys.executable).parent / "posereg")
PHOTO = "000000197388.jpg"  # 5 annotated people in posereg's COCO samples
BACKENDS = ("eager", "ort", "int8")


def default_backbones() -> list[str]:
    """ResNet-18/50 and every light backbone posereg has (``LIGHT_BACKBONES``, when present)."""
    light = getattr(backbone_module, "LIGHT_BACKBONES", ())
    return ["resnet18", "resnet50", *(name for name in light if name not in ("resnet18",))]


def machine() -> dict[str, Any]:
    """The machine and the load it is under (1, 5 and 15 minute load averages)."""
    import onnxruntime as ort

    return {
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }


# --------------------------------------------------------------------------- models
@dataclasses.dataclass
class DeployModel:
    """One backbone's regression model, exported.

    Attributes:
        backbone: its name in ``posereg.models.backbones.BACKBONES``.
        input_size: (H, W) of its crops.
        model: the PyTorch model, eval mode.
        params_m: parameters of the deployed model (no training criterion), millions.
        gflops: forward GFLOPs of one crop.
        onnx: the float32 ONNX export.
        int8: the INT8 ONNX export, or None (``int8_reason`` says why).
    """

    backbone: str
    input_size: tuple[int, int]
    model: nn.Module
    params_m: float
    gflops: float
    onnx: Path
    int8: Path | None
    int8_reason: str | None


def trained_like_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm of ``model`` the non-trivial statistics of a trained one (scale in
    [0.5, 1.5], shift and mean ~ N(0, 0.1), variance in [0.5, 1.5]), in place.

    A freshly built model's norms (scale 1, shift 0, mean 0, variance 1) fold into all-zero conv
    biases; the ONNX exporter shares one such initializer between convolutions, ONNX Runtime's
    quantiser then leaves that shared bias float, and most convolutions stay float between
    Dequantize/Quantize pairs: a half-width ResNet-18 measured 4 of 20 fused convolutions and
    INT8 1.6x *slower* than float32, against 20 of 20 and 2.2x faster with these statistics.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.normal_(0.0, 0.1, generator=g)
    return model


def int8_export(model: nn.Module, onnx_path: Path, out: Path) -> tuple[Path | None, str | None]:
    """posereg's INT8 export of ``model`` (``posereg.export.quantize_int8``, what ``posereg
    export --int8`` runs) at ``out``: (path, None), or (None, the reason it is not measured).

    It calibrates on 8 random crops: the quantised graph, and so its latency, is the same
    whatever the calibration; its accuracy is measured elsewhere (docs/deploy.md)."""
    from posereg import export

    quantize = getattr(export, "quantize_int8", None)
    if quantize is None:
        return None, "no INT8 export in posereg yet (posereg export --int8, issue 18 section 3)"
    h, w = _onnx_input_size(onnx_path)
    crops = np.random.default_rng(0).standard_normal((8, 3, h, w)).astype(np.float32)
    return quantize(onnx_path, out, crops), None


def _onnx_input_size(path: Path) -> tuple[int, int]:
    import onnx

    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    return shape.dim[2].dim_value, shape.dim[3].dim_value


def prepare_models(
    backbones: Sequence[str],
    folder: Path,
    input_size: tuple[int, int] = (256, 192),
    width: float = 1.0,
) -> list[DeployModel]:
    """Build, count and export the regression model of each backbone (random weights, seed 0,
    :func:`trained_like_norms`)."""
    h, w = input_size
    crop = torch.randn(1, 3, h, w)
    models = []
    for name in backbones:
        torch.manual_seed(0)
        options = {"width": width} if width != 1.0 else {}
        model = trained_like_norms(create_pose_model(name, input_size=(h, w), **options).eval())
        params = sum(p.numel() for n, p in model.named_parameters() if "criterion" not in n)
        onnx = export_onnx(model, folder / f"{name}.onnx", (h, w))
        int8, reason = int8_export(model, onnx, folder / f"{name}_int8.onnx")
        models.append(
            DeployModel(name, (h, w), model, params / 1e6, gflops(model, crop), onnx, int8, reason)
        )
    return models


def ort_session(path: Path, threads: int):  # -> onnxruntime.InferenceSession
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (one inter-op), whose idle
    threads sleep instead of spinning, so that they do not take the cores of the variant timed
    after it (the default, spinning, can make a single call a little faster)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: not the export's unused-initializer notes
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _runners(
    models: Sequence[DeployModel], batch: int, threads: Sequence[int]
) -> dict[tuple[str, str, int], Callable[[], object]]:
    """(backbone, backend, threads) -> a call on one batch of ``batch`` crops."""
    runners: dict[tuple[str, str, int], Callable[[], object]] = {}
    for m in models:
        h, w = m.input_size
        images = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1))
        feed = images.numpy()
        for t in threads:

            def eager(model: nn.Module = m.model, x: torch.Tensor = images, t: int = t) -> object:
                torch.set_num_threads(t)
                with torch.no_grad():
                    return model.predict(x)

            runners[(m.backbone, "eager", t)] = eager
            for backend, path in (("ort", m.onnx), ("int8", m.int8)):
                if path is not None:
                    session = ort_session(path, t)
                    inputs = {session.get_inputs()[0].name: feed}
                    runners[(m.backbone, backend, t)] = partial(session.run, None, inputs)
    return runners


def crop_latency(
    models: Sequence[DeployModel], threads: Sequence[int], rounds: int, iters: int
) -> list[dict[str, Any]]:
    """Median ms per crop at batch 1, every backbone x backend x thread count interleaved.

    Returns:
        one row per backbone: ``{"backbone", "params_m", "gflops", "ms": {backend: {threads:
        ms or None}}, "int8_reason"}``.
    """
    med = medians(interleaved_times(_runners(models, 1, threads), rounds, iters))
    torch.set_num_threads(max(threads))
    return [
        {
            "backbone": m.backbone,
            "params_m": m.params_m,
            "gflops": m.gflops,
            "ms": {b: {t: _ms(med.get((m.backbone, b, t))) for t in threads} for b in BACKENDS},
            "int8_reason": m.int8_reason,
        }  # fmt: skip
        for m in models
    ]


def throughput(
    models: Sequence[DeployModel], batches: Sequence[int], threads: int, rounds: int, iters: int
) -> list[dict[str, Any]]:
    """Crops per second at each batch size (``threads`` threads), variants interleaved.

    Returns:
        one row per backbone x batch: ``{"backbone", "batch", "threads", "crops_per_s":
        {backend: crops/s or None}}``.
    """
    rows = []
    for batch in batches:
        med = medians(interleaved_times(_runners(models, batch, [threads]), rounds, iters))
        for m in models:
            rows.append({
                "backbone": m.backbone, "batch": batch, "threads": threads,
                "crops_per_s": {
                    b: None if (s := med.get((m.backbone, b, threads))) is None else batch / s
                    for b in BACKENDS
                },
            })  # fmt: skip
    torch.set_num_threads(threads)
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


# --------------------------------------------------------------------------- detectors
def photo() -> tuple[Path, list[list[float]]]:
    """The benchmark photo and its annotated person boxes (x, y, w, h), from posereg's samples."""
    annotations = json.loads(Path(sample_path("coco", "test_coco.json")).read_text())
    (image_id,) = [i["id"] for i in annotations["images"] if i["file_name"] == PHOTO]
    boxes = [
        a["bbox"]
        for a in annotations["annotations"]
        if a["image_id"] == image_id and a["num_keypoints"] > 0
    ]
    return Path(sample_path("coco", PHOTO)), boxes


def detector_latency(
    names: Sequence[DetectorName],
    image: np.ndarray,
    threads: Sequence[int],
    rounds: int,
    iters: int,
) -> list[dict[str, Any]]:
    """Median ms per image of each detector (its COCO weights if cached, else random ones).

    Returns:
        one row per detector: ``{"detector", "params_m", "box_ap", "weights": "coco" |
        "random", "ms": {threads: ms}}``.
    """
    from torchvision.models import detection

    from posereg.detect import detector_spec

    runners: dict[tuple[str, int], Callable[[], object]] = {}
    info = {}
    for name in names:
        cached = detector_weights_path(name).is_file()
        detector = PersonDetector(name) if cached else PersonDetector.untrained(name)
        spec = detector_spec(name)
        meta = getattr(detection, spec.weights).DEFAULT.meta
        info[name] = {
            "params_m": sum(p.numel() for p in detector.model.parameters()) / 1e6,
            "box_ap": meta["_metrics"]["COCO-val2017"]["box_map"],
            "weights": "coco" if cached else "random",
        }
        for t in threads:

            def run(detector: PersonDetector = detector, t: int = t) -> object:
                torch.set_num_threads(t)
                return detector(image)

            runners[(name, t)] = run
    med = medians(interleaved_times(runners, rounds, iters))
    torch.set_num_threads(max(threads))
    return [
        {"detector": n, **info[n], "ms": {t: 1e3 * med[(n, t)] for t in threads}} for n in names
    ]


# --------------------------------------------------------------------------- serve
def random_checkpoint(
    backbone: str, path: Path, input_size: tuple[int, int] = (256, 192), width: float = 1.0
) -> Path:
    """A posereg checkpoint of the RLE regression model of ``backbone`` with random weights
    (seed 0, :func:`trained_like_norms`): what ``posereg serve`` loads for a trained one, at
    the same cost."""
    from posereg.checkpoint import save_checkpoint
    from posereg.config import Config, to_dict

    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        name=f"random_{backbone}",
        data=dataclasses.replace(cfg.data, input_size=list(input_size)),
        model=dataclasses.replace(cfg.model, backbone=backbone, width=width),
    )
    torch.manual_seed(0)
    model = trained_like_norms(create_pose_model(backbone, input_size=input_size, width=width))
    return save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg)}, path)


def _multipart(image: bytes, boxes: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image,
        f'--{boundary}\r\nContent-Disposition: form-data; name="boxes"\r\n\r\n'
        f"{json.dumps(boxes)}".encode(),
    ]
    body = b"\r\n".join(parts) + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Server:
    """``posereg serve --checkpoint MODEL`` as a subprocess on a free loopback port."""

    def __init__(self, model: Path, threads: int = 1) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.model = model
        self.process = subprocess.Popen(
            [POSEREG, "serve", "--checkpoint", str(model), "--port", str(self.port),
             "--device", "cpu", "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )  # fmt: skip

    def post(self, conn: http.client.HTTPConnection, body: bytes, headers: dict) -> bytes:
        conn.request("POST", "/v1/predict", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.model}: status {response.status}: {data[:200]!r}")
        return data

    def wait_ready(self, deadline_s: float = 180) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                out = self.process.stdout.read() if self.process.stdout else ""
                raise RuntimeError(f"posereg serve {self.model} exited: {out.strip()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"posereg serve {self.model} did not answer /health in {deadline_s} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def random_int8_onnx(
    backbone: str, folder: Path, input_size: tuple[int, int] = (256, 192), width: float = 1.0
) -> Path:
    """The INT8 ONNX export (with posereg's metadata, so that ``posereg serve`` runs it) of
    :func:`random_checkpoint`: ``posereg export`` to float32, then ``quantize_int8`` on 8 random
    crops (``posereg export --int8`` calibrates on training crops, which a random model has
    none of; the graph and its cost are the same)."""
    from posereg.export import export_checkpoint, quantize_int8

    checkpoint = random_checkpoint(backbone, folder / f"random_{backbone}.pt", input_size, width)
    float_path, _ = export_checkpoint(checkpoint, folder / f"random_{backbone}.onnx", check=False)
    crops = np.random.default_rng(0).standard_normal((8, 3, *input_size)).astype(np.float32)
    return quantize_int8(float_path, folder / f"random_{backbone}.int8.onnx", crops)


def load_test(
    server: Server, body: bytes, headers: dict, clients: int, requests: int
) -> dict[str, float]:
    """``clients`` threads each posting ``requests`` times on one keep-alive connection.

    Returns:
        ``{"requests", "seconds", "requests_per_s", "p50_ms", "p90_ms"}``.

    Raises:
        RuntimeError: any answer but 200 (the load test measures working requests only).
    """
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        try:
            for _ in range(requests):
                start = time.perf_counter()
                server.post(conn, body, headers)
                with lock:
                    latencies.append(time.perf_counter() - start)
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread below)
            with lock:
                errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed, first: {errors[0]!r}")
    ms = sorted(1e3 * v for v in latencies)
    return {
        "requests": len(ms), "seconds": seconds, "requests_per_s": len(ms) / seconds,
        "p50_ms": statistics.median(ms), "p90_ms": ms[min(len(ms) - 1, math.ceil(0.9 * len(ms)) - 1)],
    }  # fmt: skip


def serve_rps(
    models: Sequence[Path],
    image: Path,
    boxes: list[list[float]],
    clients: int = 8,
    requests: int = 20,
    rounds: int = 3,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Requests per second of ``posereg serve`` for each model, the models alternating round by
    round (all servers up at once, one load test at a time), median over ``rounds``.

    Every server first answers one request, which must hold one person per box.

    Returns:
        one row per model: ``{"model", "clients", "requests", "boxes", "threads",
        "requests_per_s", "p50_ms", "p90_ms", "rounds": [requests/s per round]}``.
    """
    body, headers = _multipart(image.read_bytes(), boxes)
    servers = [Server(Path(m), threads) for m in models]
    try:
        for s in servers:
            s.wait_ready()
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
            people = json.loads(s.post(conn, body, headers))["people"]
            conn.close()
            if len(people) != len(boxes):
                raise RuntimeError(f"{s.model}: {len(people)} people for {len(boxes)} boxes")
        runs: dict[Path, list[dict[str, float]]] = {s.model: [] for s in servers}
        for _ in range(rounds):
            for s in servers:
                runs[s.model].append(load_test(s, body, headers, clients, requests))
    finally:
        for s in servers:
            s.stop()
    rows = []
    for model, results in runs.items():
        rps = [r["requests_per_s"] for r in results]
        best = results[int(np.argsort(rps)[len(rps) // 2])]  # the median round's latencies
        rows.append({
            "model": str(model), "clients": clients, "requests": clients * requests,
            "boxes": len(boxes), "threads": threads, "requests_per_s": statistics.median(rps),
            "p50_ms": best["p50_ms"], "p90_ms": best["p90_ms"], "rounds": rps,
        })  # fmt: skip
    return rows


# --------------------------------------------------------------------------- report
def _cell(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(results: dict[str, Any]) -> str:
    """The Markdown tables of ``results`` (what :func:`run` returns)."""
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu_count']} CPUs ({m['cpu']}), torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']}; load average (1, 5, 15 min) before {m['load_avg']}, after "
        f"{results['load_avg_after']}.",
    ]
    if crops := results.get("crops"):
        threads = list(crops[0]["ms"]["eager"])
        h, w = results["input_size"]
        lines += ["", f"Per-crop latency, ms, {h}x{w}, batch 1 (median of {results['rounds']} rounds):", ""]  # fmt: skip
        head = [f"{b} {t}t" for t in threads for b in ("eager", "ORT fp32", "ORT INT8")]
        lines += ["| backbone | params M | GFLOPs | " + " | ".join(head) + " |"]
        lines += ["|---|---:|---:|" + "---:|" * len(head)]
        for r in crops:
            cells = [_cell(r["ms"][b][t]) for t in threads for b in BACKENDS]
            lines.append(
                f"| {r['backbone']} | {r['params_m']:.2f} | {r['gflops']:.2f} | "
                + " | ".join(cells) + " |"
            )  # fmt: skip
        reasons = {r["int8_reason"] for r in crops if r["int8_reason"]}
        lines += [f"INT8 not measured: {reason}" for reason in sorted(reasons)]
    if rows := results.get("throughput"):
        lines += ["", f"Throughput, crops/s, {rows[0]['threads']} thread(s):", ""]
        lines += ["| backbone | batch | eager | ORT fp32 | ORT INT8 |", "|---|---:|---:|---:|---:|"]
        for r in rows:
            c = r["crops_per_s"]
            lines.append(
                f"| {r['backbone']} | {r['batch']} | {_cell(c['eager'], '.0f')} | "
                f"{_cell(c['ort'], '.0f')} | {_cell(c['int8'], '.0f')} |"
            )
    if rows := results.get("detectors"):
        threads = list(rows[0]["ms"])
        lines += ["", f"Person detectors, ms per image ({results['photo']}):", ""]
        lines += ["| detector | params M | COCO box AP | weights | " + " | ".join(f"{t}t" for t in threads) + " |"]  # fmt: skip
        lines += ["|---|---:|---:|---|" + "---:|" * len(threads)]
        for r in rows:
            lines.append(
                f"| {r['detector']} | {r['params_m']:.1f} | {r['box_ap']:.1f} | {r['weights']} | "
                + " | ".join(f"{r['ms'][t]:.0f}" for t in threads) + " |"
            )  # fmt: skip
    if rows := results.get("serve"):
        r0 = rows[0]
        lines += ["", f"posereg serve, {r0['clients']} clients, {r0['boxes']} boxes per photo, "
                  f"server OMP_NUM_THREADS={r0['threads']}:", ""]  # fmt: skip
        lines += ["| model | requests | req/s | p50 ms | p90 ms |", "|---|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {Path(r['model']).name} | {r['requests']} | {r['requests_per_s']:.2f} | "
                f"{r['p50_ms']:.0f} | {r['p90_ms']:.0f} |"
            )
    for what, reason in results.get("skipped", {}).items():
        lines.append(f"{what}: skipped ({reason})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement ``args`` asks for; the dict :func:`markdown` prints and --json holds."""
    import cv2

    results: dict[str, Any] = {
        "machine": machine(), "threads": list(args.threads), "rounds": args.rounds,
        "iters": args.iters, "input_size": list(args.input_size), "skipped": {},
    }  # fmt: skip
    image_path, boxes = photo()
    results["photo"] = image_path.name
    with tempfile.TemporaryDirectory(prefix="posereg_deploy_") as tmp:
        if "crops" not in args.skip or "throughput" not in args.skip:
            models = prepare_models(args.backbones, Path(tmp), tuple(args.input_size), args.width)
            if "crops" not in args.skip:
                results["crops"] = crop_latency(models, args.threads, args.rounds, args.iters)
            if "throughput" not in args.skip:
                results["throughput"] = throughput(
                    models, args.batches, max(args.threads), args.rounds, args.throughput_iters
                )
            del models
        if "detectors" not in args.skip:
            image = cv2.imread(str(image_path))
            results["detectors"] = detector_latency(
                args.detectors, image, args.threads, args.rounds, args.detector_iters
            )
        size, serve = tuple(args.input_size), list(args.serve)
        if "serve" not in args.skip:
            for b in args.serve_backbones:
                serve.append(random_checkpoint(b, Path(tmp) / f"random_{b}.pt", size, args.width))
            for b in args.serve_int8_backbones:
                folder = Path(tmp) / "int8"
                serve.append(random_int8_onnx(b, folder, size, args.width))
        if "serve" in args.skip:
            pass
        elif not serve:
            results["skipped"]["serve"] = "no --serve MODEL or --serve-*backbones given"
        else:
            results["serve"] = serve_rps(
                serve, image_path, boxes, args.clients, args.requests, args.serve_rounds,
                args.serve_threads,
            )  # fmt: skip
    results["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=default_backbones())
    parser.add_argument("--width", type=float, default=1.0, help="ResNet width (tests: 0.25)")
    parser.add_argument("--input-size", nargs=2, type=int, default=[256, 192], metavar=("H", "W"))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10, help="calls per round, batch 1")
    parser.add_argument("--throughput-iters", type=int, default=2, help="calls per round")
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    parser.add_argument("--detector-iters", type=int, default=1, help="calls per round")
    parser.add_argument("--serve", nargs="+", type=Path, default=[], metavar="MODEL",
                        help="checkpoints (.pt) or exports (.onnx) to load-test")  # fmt: skip
    parser.add_argument("--serve-backbones", nargs="+", default=[], metavar="NAME",
                        help="also load-test random-weight checkpoints of these backbones")  # fmt: skip
    parser.add_argument("--serve-int8-backbones", nargs="+", default=[], metavar="NAME",
                        help="and INT8 ONNX exports of random-weight checkpoints of these")  # fmt: skip
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="per client and round")
    parser.add_argument("--serve-rounds", type=int, default=3)
    parser.add_argument("--serve-threads", type=int, default=1, help="the server's threads")
    parser.add_argument("--skip", nargs="+", default=[],
                        choices=["crops", "throughput", "detectors", "serve"])  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("runs/bench_deploy.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for model in args.serve:
        if not model.is_file():
            print(f"bench_deploy: error: --serve {model}: no such file", file=sys.stderr)
            return 2
    results = run(args)
    print(markdown(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
