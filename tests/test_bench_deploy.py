"""benchmarks/bench_deploy.py end to end on a tiny model (ResNet-18 x0.25 at 64x48), a light
detector on a real photo and a real `posereg serve` subprocess: what it times is what posereg
runs, its counts are the models', and its report and JSON hold every measurement."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import posereg.export
from _real_data import real
from posereg.bench.cost import gflops
from posereg.models import create_pose_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_deploy  # noqa: E402

TINY = ("resnet18",)
SIZE = (64, 48)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    return bench_deploy.prepare_models(TINY, tmp_path_factory.mktemp("onnx"), SIZE, width=0.25)


def test_models_are_counted_and_exported_as_posereg_builds_them(models):
    (m,) = models
    torch.manual_seed(0)
    model = create_pose_model("resnet18", input_size=SIZE, width=0.25).eval()
    params = sum(p.numel() for n, p in model.named_parameters() if "criterion" not in n)
    crops = torch.randn(3, 3, *SIZE)
    assert m.params_m == pytest.approx(params / 1e6, rel=1e-12)
    assert m.gflops == pytest.approx(gflops(model, crops[:1]), rel=1e-9) and m.gflops > 0
    # the ONNX graph that is timed computes what the eager model does
    session = bench_deploy.ort_session(m.onnx, 1)
    names = ["keypoints", "scores", "sigma"]
    keypoints, scores, sigma = session.run(names, {"images": crops.numpy()})
    with torch.no_grad():
        expected = m.model.predict(crops)
    np.testing.assert_allclose(keypoints, expected.keypoints.numpy(), atol=1e-4)
    np.testing.assert_allclose(sigma, expected.sigma.numpy(), atol=1e-4)
    # INT8 is timed once posereg exports it (posereg export --int8); until then a reason
    if hasattr(posereg.export, "quantize_int8"):
        assert m.int8 is not None and m.int8_reason is None
        int8 = bench_deploy.ort_session(m.int8, 1).run(names, {"images": crops.numpy()})
        assert [a.shape for a in int8] == [keypoints.shape, scores.shape, sigma.shape]
        # every convolution runs in INT8 (QLinearConv) once ONNX Runtime optimises the graph:
        # trained_like_norms keeps the folded conv biases distinct, so each is quantised
        options = onnxruntime.SessionOptions()
        options.optimized_model_filepath = str(m.int8.with_suffix(".optimized.onnx"))
        onnxruntime.InferenceSession(str(m.int8), options, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
        assert ops.count("QLinearConv") == 20 and "Conv" not in ops  # ResNet-18: 20 convs
    else:
        assert m.int8 is None and "INT8" in m.int8_reason


def test_latency_throughput_and_detector_rows(models):
    rows = bench_deploy.crop_latency(models, [1, 2], rounds=2, iters=1)
    (row,) = rows
    for backend in ("eager", "ort"):
        for t in (1, 2):
            assert 0 < row["ms"][backend][t] < 5000
    assert all((row["ms"]["int8"][t] is None) == (models[0].int8 is None) for t in (1, 2))
    (tp,) = bench_deploy.throughput(models, [4], threads=1, rounds=1, iters=1)
    assert tp["batch"] == 4 and all(0 < tp["crops_per_s"][b] < 1e6 for b in ("eager", "ort"))

    image_path, boxes = bench_deploy.photo()
    assert image_path == real("coco", "000000197388.jpg") and len(boxes) == 5
    image = cv2.imread(str(image_path))
    (det,) = bench_deploy.detector_latency(
        ["ssdlite320_mobilenet_v3_large"], image, [1], rounds=1, iters=1
    )
    assert det["box_ap"] == 21.3 and round(det["params_m"] * 1e6) == 3440060  # torchvision's
    assert det["weights"] in ("coco", "random") and 0 < det["ms"][1] < 60_000

    results = {
        "machine": bench_deploy.machine(), "threads": [1, 2], "rounds": 2, "iters": 1,
        "input_size": list(SIZE), "photo": image_path.name, "crops": rows, "throughput": [tp],
        "detectors": [det], "skipped": {"serve": "no --serve MODEL or --serve-*backbones given"},
        "load_avg_after": [0.0, 0.0, 0.0],
    }  # fmt: skip
    text = bench_deploy.markdown(results)
    assert f"load average (1, 5, 15 min) before {results['machine']['load_avg']}" in text
    line = next(x for x in text.splitlines() if x.startswith("| resnet18 | 0.71 |"))
    assert line.count("|") == 10 and f"{row['ms']['ort'][2]:.1f}" in line
    assert "| ssdlite320_mobilenet_v3_large | 3.4 | 21.3 |" in text
    assert "serve: skipped (no --serve MODEL or --serve-*backbones given)" in text


def test_serve_is_load_tested_as_a_real_subprocess(tmp_path):
    # the INT8 export of a random checkpoint (random_checkpoint writes that .pt on the way);
    # one server, the .pt path of posereg serve is tests/test_serve.py's
    int8 = bench_deploy.random_int8_onnx("resnet18", tmp_path, SIZE, 0.25)
    assert (tmp_path / "random_resnet18.pt").is_file() and int8.name.endswith(".int8.onnx")
    image_path, boxes = bench_deploy.photo()
    rows = bench_deploy.serve_rps([int8], image_path, boxes[:2], clients=2, requests=2, rounds=1)
    assert [r["model"] for r in rows] == [str(int8)]
    for row in rows:
        assert row["requests"] == 4 and row["boxes"] == 2 and len(row["rounds"]) == 1
        assert 0 < row["requests_per_s"] and math.isfinite(row["p90_ms"])
        assert row["p50_ms"] <= row["p90_ms"]


def test_main_writes_the_json_it_prints(tmp_path, capsys):
    out = tmp_path / "deploy.json"
    code = bench_deploy.main(["--backbones", "resnet18", "--width", "0.25", "--input-size", "64",
                              "48", "--threads", "1", "--rounds", "1", "--iters", "1", "--skip",
                              "throughput", "detectors", "--json", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    results = json.loads(out.read_text())
    (row,) = results["crops"]
    assert f"| resnet18 | {row['params_m']:.2f} | {row['gflops']:.2f} | " in text
    assert results["skipped"] == {"serve": "no --serve MODEL or --serve-*backbones given"}
    assert results["machine"]["onnxruntime"] == onnxruntime.__version__
    assert bench_deploy.main(["--serve", str(tmp_path / "missing.pt")]) == 2
