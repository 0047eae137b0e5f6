"""Load test of ``posereg serve`` on loopback: C concurrent clients x N requests each.

    python benchmarks/bench_serve.py [--checkpoint CK] [--clients 8] [--requests 50]
        [--image PHOTO] [--boxes 1] [--threads 1] [--max-rss-growth-mb 50]

Issue 12, section 4. Starts ``posereg serve`` as a subprocess on a free 127.0.0.1 port (nothing
else is ever contacted), waits for ``/health``, sends one warm-up request, reads the server's
resident memory (VmRSS), then runs ``--clients`` threads that each send ``--requests``
multipart ``POST /v1/predict`` requests of the same photo on one keep-alive connection, and
reads the memory again. Reported (Markdown): requests, errors (any status but 200 or a
connection failure), throughput, p50/p90/p99/max latency, and RSS before and after. Exits 1
when there is an error or the RSS grew by more than ``--max-rss-growth-mb``.

Without ``--checkpoint`` it makes the tiny model the tests use (a random quarter-width ResNet-18
at 64x48 with the RLE head), which measures the server more than the model. The loop is
bounded: clients x requests requests, each with a 60 s socket timeout.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

POSEREG = str(Path(sys.executable).parent / "posereg")


def _tiny_checkpoint(folder: Path) -> Path:
    import torch

    from posereg.checkpoint import save_checkpoint
    from posereg.config import Config, to_dict
    from posereg.models import create_pose_model

    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        name="tiny",
        data=dataclasses.replace(cfg.data, input_size=[64, 48]),
        model=dataclasses.replace(cfg.model, backbone="resnet18", width=0.25),
    )
    torch.manual_seed(0)
    model = create_pose_model("resnet18", num_keypoints=17, width=0.25)
    return save_checkpoint(
        {"model": model.state_dict(), "config": to_dict(cfg)}, folder / "tiny.pt"
    )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _multipart(image: bytes, boxes: list | None) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + image
    ]
    if boxes is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="boxes"\r\n\r\n'
            f"{json.dumps(boxes)}".encode()
        )
    body = b"\r\n".join(parts) + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="default: a tiny random model made here")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--image", help="default: posereg's COCO sample 000000000785.jpg")
    parser.add_argument("--boxes", type=int, default=1, help="person boxes per request (0: none)")
    parser.add_argument("--threads", type=int, default=1, help="the server's OMP_NUM_THREADS")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    args = parser.parse_args()

    from posereg.samples import sample_path

    image = Path(args.image or sample_path("coco", "000000000785.jpg")).read_bytes()
    boxes = [[30.0 + 10 * i, 20.0, 200.0, 380.0] for i in range(args.boxes)] or None
    body, headers = _multipart(image, boxes)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or str(_tiny_checkpoint(Path(tmp)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        server = subprocess.Popen(
            [POSEREG, "serve", "--checkpoint", checkpoint, "--port", str(port), "--device",
             "cpu", "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            return _run(args, server, port, body, headers)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _run(args, server: subprocess.Popen, port: int, body: bytes, headers: dict) -> int:
    def post(conn: http.client.HTTPConnection) -> int:
        conn.request("POST", "/v1/predict", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"posereg serve exited: {server.stderr.read()}")  # type: ignore[union-attr]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("posereg serve did not start in 120 s") from None
            time.sleep(0.2)
    warm = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    assert post(warm) == 200, "the warm-up request failed"
    warm.close()
    rss_before = _rss_mb(server.pid)

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(args.requests):
            start = time.perf_counter()
            try:
                status = post(conn)
            except OSError as e:
                status, conn = -1, http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                with lock:
                    errors.append(repr(e))
            with lock:
                latencies.append(time.perf_counter() - start)
                if status not in (200, -1):
                    errors.append(f"status {status}")
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    rss_after = _rss_mb(server.pid)

    ms = sorted(1000 * v for v in latencies)
    q = statistics.quantiles(ms, n=100)
    growth = rss_after - rss_before
    print(f"posereg serve, {args.clients} clients x {args.requests} requests, "
          f"{len(body) / 1024:.0f} KiB upload, {args.boxes} box(es), server threads {args.threads}")  # fmt: skip
    print()
    print("| requests | errors | throughput (req/s) | p50 ms | p90 ms | p99 ms | max ms | RSS before MB | RSS after MB |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(ms)} | {len(errors)} | {len(ms) / elapsed:.1f} | {q[49]:.1f} | {q[89]:.1f} | "
          f"{q[98]:.1f} | {ms[-1]:.1f} | {rss_before:.0f} | {rss_after:.0f} |")  # fmt: skip
    if errors:
        print(f"errors: {errors[:5]}", file=sys.stderr)
    if growth > args.max_rss_growth_mb:
        print(f"RSS grew by {growth:.0f} MB (> {args.max_rss_growth_mb:g})", file=sys.stderr)
    return 1 if errors or growth > args.max_rss_growth_mb else 0


if __name__ == "__main__":
    sys.exit(main())
