"""An exported model through ONNX Runtime gives the PyTorch path's answers (issue 18 §2, §3, §5):
every head's ``predict`` with the flip test, the Predictor, ``posereg predict``, ``posereg serve``
and ``posereg eval`` on a tiny trained checkpoint; ``posereg export --int8`` stays within a
stated distance of float32; and the bad inputs are one clear line each."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _real_data import real, tiny_checkpoint
from posereg.checkpoint import save_checkpoint
from posereg.config import Config, to_dict
from posereg.data.dataset import TopDownDataset, collate
from posereg.models import HEADS
from posereg.models.build import build_model, codec_for
from posereg.predict import Predictor, result_entries
from posereg.uncertainty import SigmaCalibration

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from posereg.export import (  # noqa: E402
    calibration_crops,
    export_checkpoint,
    export_metadata,
    export_onnx,
)
from posereg.runtime import OnnxPoseModel, load_onnx_model  # noqa: E402

POSEREG = str(Path(sys.executable).parent / "posereg")
COCO = real("coco")
PHOTO = real("coco", "000000000785.jpg")
BOXES = [[30.5, 20.0, 200.0, 380.25], [300.0, 50.0, 150.0, 300.0]]
#: INT8 vs float32 on the training crops of the tiny fitted model: mean |keypoint difference| in
#: crop pixels (64x48 crops; measured 0.08 with ONNX Runtime 1.32) and the AP bound on its 12
#: people (measured: the same AP, 0.1195, for both).
INT8_KEYPOINT_PX = 0.5
INT8_AP_DROP = 0.05


def _posereg(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [POSEREG, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def _one_error_line(out: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and errors[0] == lines[-1], out.stderr[-2000:]
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def _tiny_cfg(input_size: tuple[int, int] = (64, 48), **model: object) -> Config:
    cfg = Config()
    return dataclasses.replace(
        cfg,
        name="tiny",
        data=dataclasses.replace(
            cfg.data, input_size=list(input_size), train_ann=str(COCO / "test_coco.json"),
            train_images=str(COCO), val_ann=str(COCO / "test_coco.json"), val_images=str(COCO),
            workers=0,
        ),
        model=dataclasses.replace(cfg.model, **{"backbone": "resnet18", "width": 0.25, **model}),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny RLE model fitted for 40 steps to the 14 people of the real COCO fixtures (so that
    its keypoints, sigma and AP depend on the image), its checkpoint, float32 export and
    config."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("onnx_runtime")
    cfg = _tiny_cfg()
    model = build_model(cfg)
    dataset = TopDownDataset.from_coco(
        cfg.data.train_ann, cfg.data.train_images, input_size=(64, 48), codec=codec_for(cfg),
        transform=dataclasses.replace(cfg.data.transform, augment=False),
    )  # fmt: skip
    batch = collate([dataset[i] for i in range(len(dataset))])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = model.loss(model(batch.image), batch.target, batch.target_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = {"model": model.state_dict(), "config": to_dict(cfg)}
    state["metrics"] = {"AP": 0.5, "sigma_calibration": 1.5}
    scales = np.linspace(0.5, 2.0, 17 * 2).reshape(17, 2)  # per keypoint and axis, all distinct
    state["sigma_calibration"] = SigmaCalibration(scales).to_state()
    checkpoint = save_checkpoint(state, folder / "tiny.pt")
    onnx_path, diff = export_checkpoint(checkpoint)
    assert diff is not None and diff < 1e-4
    config = folder / "tiny.yaml"
    config.write_text(json.dumps(to_dict(cfg)))  # JSON is YAML
    return {"pt": checkpoint, "onnx": onnx_path, "config": config, "folder": folder}


# --------------------------------------------------------------------------- one inference path
@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_predicts_through_onnx_runtime_as_in_pytorch(tmp_path, name):
    """OnnxPoseModel.predict (flip test: the mirrored crop, the head's flip_back, the one
    averaging and decode) equals the PyTorch model's, and the flip test changes the answer."""
    options = {} if name == "regression" else {"deconv_channels": 16}
    cfg = _tiny_cfg((64, 64), head=name, head_options=options, width=0.125)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # outputs that vary with the image (no argmax ties)
        for p in model.head.parameters():
            p.normal_(0, 0.3)
    path = export_onnx(
        model, tmp_path / f"{name}.onnx", (64, 64), metadata=export_metadata(model, cfg)
    )
    runtime, _, _ = load_onnx_model(path)
    assert isinstance(runtime, OnnxPoseModel)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    flip_index = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    with torch.no_grad():
        for flip in (False, True):
            expected = model.predict(images, flip, flip_index)
            got = runtime.predict(images, flip, flip_index)
            for field in ("keypoints", "scores", "sigma"):
                e, g = getattr(expected, field), getattr(got, field)
                assert (e is None) == (g is None), field
                if e is not None:
                    np.testing.assert_allclose(g.numpy(), e.numpy(), atol=2e-5, rtol=0)
        plain = model.predict(images)
    assert (got.keypoints - plain.keypoints).abs().max() > 1e-3  # the flip test has teeth


def test_predictor_runs_the_onnx_export_as_the_checkpoint(trained):
    pt = Predictor.from_checkpoint(trained["pt"], device="cpu")
    ort = Predictor.from_checkpoint(trained["onnx"], device="cpu")
    assert Predictor.from_checkpoint(trained["onnx"], backend="onnxruntime").flip_test
    assert (ort.name, ort.input_size, ort.padding, ort.flip_test, ort.score_rule) == (
        pt.name, pt.input_size, pt.padding, pt.flip_test, pt.score_rule,
    )  # fmt: skip
    assert ort.skeleton == pt.skeleton and ort.sigma_scale == pt.sigma_scale == 1.5
    # the flow's radii, computed at export with the Predictor's draws (at more levels)
    assert pt.region is not None and ort.region.family == pt.region.family
    assert [ort.region.radius(p) for p in pt.region.levels] == list(pt.region.radii)
    a, b = pt(PHOTO, BOXES), ort(PHOTO, BOXES)
    np.testing.assert_allclose(b.keypoints, a.keypoints, atol=1e-3, rtol=0)  # pixels
    np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-4)
    np.testing.assert_allclose(b.region, a.region, rtol=1e-4)
    # the checkpoint's per-keypoint calibration travels in the export's metadata
    assert ort.calibration.fitted and pt.calibration.fitted
    np.testing.assert_array_equal(ort.calibration.scale, pt.calibration.scale)
    np.testing.assert_allclose(b.sigma_calibrated, a.sigma_calibrated, rtol=1e-4)
    np.testing.assert_allclose(b.confidence, a.confidence, atol=1e-5, rtol=0)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-5, rtol=0)
    assert np.abs(a.keypoints[0] - a.keypoints[1]).max() > 1.0  # answers differ per box


def test_posereg_predict_writes_the_same_json_from_the_onnx_export(trained, tmp_path):
    out = _posereg("predict", PHOTO, "--checkpoint", trained["onnx"], "--out", tmp_path,
                   "--no-draw", "--device", "cpu")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (got,) = json.loads((tmp_path / "predictions.json").read_text())
    result = Predictor.from_checkpoint(trained["pt"], device="cpu")(PHOTO)
    (expected,) = result_entries(result, got["image_id"])
    for key in ("keypoints", "sigma", "region"):  # written rounded to 3 decimals
        np.testing.assert_allclose(got[key], expected[key], atol=2e-3, rtol=0)
    assert got["region_p"] == expected["region_p"] and abs(got["score"] - expected["score"]) < 1e-5


def test_posereg_serve_answers_from_the_onnx_export(trained):
    from test_serve import _post_image, _start, _stop, _wait_ready

    server = _start(trained["onnx"])
    try:
        _wait_ready(server)
        status, answer = _post_image(server, PHOTO.read_bytes(), BOXES)
    finally:
        _stop(server)
    assert status == 200, answer
    expected = Predictor.from_checkpoint(trained["pt"], device="cpu")(PHOTO, BOXES)
    assert answer["model"] == "tiny" and answer["sigma_calibration"] == 1.5
    for i, person in enumerate(answer["people"]):
        xy = [[k["x"], k["y"]] for k in person["keypoints"]]
        np.testing.assert_allclose(xy, expected.keypoints[i], atol=1e-3, rtol=0)
        region = [k["region"] for k in person["keypoints"]]
        np.testing.assert_allclose(region, expected.region[i], rtol=1e-4)


def _eval_numbers(stdout: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"^(AP\w*|error|PCK): ([-\d.naN]+)$", stdout, re.M)}


def test_posereg_eval_of_the_onnx_export_reports_the_checkpoints_metrics(trained, tmp_path):
    from posereg.engine.evaluate import run_evaluation

    out = _posereg("eval", trained["config"], "--checkpoint", trained["onnx"], "--device", "cpu",
                   "--out", tmp_path / "onnx.json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = _eval_numbers(out.stdout)
    from posereg.config import load_config

    expected = run_evaluation(load_config(trained["config"]), str(trained["pt"]), "cpu")
    assert got["AP"] > 0.01  # a model that learned something: AP moves with its keypoints
    assert abs(got["AP"] - expected.coco["labels"].ap) <= 1e-4
    assert abs(got["error"] - expected.error) <= 1e-4
    entries = json.loads((tmp_path / "onnx.json").read_text())
    keypoints = np.array([e["keypoints"] for e in entries]).reshape(len(entries), -1, 3)[..., :2]
    np.testing.assert_allclose(keypoints, expected.predictions.keypoints, atol=1e-3, rtol=0)


# --------------------------------------------------------------------------- INT8
def test_int8_export_stays_near_float32(trained):
    from posereg.config import load_config
    from posereg.engine.evaluate import run_evaluation

    int8 = trained["folder"] / "tiny.int8.onnx"
    out = _posereg("export", "--checkpoint", trained["pt"], "--int8", "--calibration-images", 14)
    assert out.returncode == 0, out.stderr
    assert str(int8) in out.stdout and "INT8 vs float32" in out.stdout
    model, cfg, state = load_onnx_model(int8)
    assert state["metadata"]["precision"] == "int8"
    names = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= names
    crops = torch.from_numpy(calibration_crops(cfg, 14))
    float32, _, _ = load_onnx_model(trained["onnx"])
    with torch.no_grad():
        a, b = float32.predict(crops), model.predict(crops)
    pixels = ((a.keypoints - b.keypoints).abs() * torch.tensor([48.0, 64.0])).mean()
    assert 0 < pixels < INT8_KEYPOINT_PX  # quantised (not the float graph), and close to it
    eval_cfg = load_config(trained["config"])
    ap = [
        run_evaluation(eval_cfg, str(p), "cpu").coco["labels"].ap for p in (trained["onnx"], int8)
    ]
    assert abs(ap[0] - ap[1]) <= INT8_AP_DROP, ap


# --------------------------------------------------------------------------- bad input
def _not_a_posereg_export(path: Path) -> Path:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 48])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 64, 48])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _cli_error(capsys, *args: object) -> str:
    """``posereg ARGS`` in this process (the console script's ``main``): exit code 2 and one
    ``posereg CMD: error: ...`` line on stderr, which it returns."""
    from posereg.cli import main

    code = main([str(a) for a in args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and ": error: " in lines[0], lines
    return lines[0]


def test_an_onnx_export_given_where_a_checkpoint_is_needed_is_one_line(trained, capsys):
    """export (whose default output would be the file itself) and lift take a .pt only."""
    for args in (("export", "--checkpoint", trained["onnx"]),
                 ("lift", "--checkpoint", trained["onnx"], trained["config"])):  # fmt: skip
        line = _cli_error(capsys, *args)
        assert f"{trained['onnx']}: not a posereg checkpoint" in line, line
        assert "it is an ONNX model" in line and "exists" not in line, line


def test_an_onnx_file_that_posereg_did_not_export_is_one_line(tmp_path, trained, capsys):
    foreign = _not_a_posereg_export(tmp_path / "foreign.onnx")
    needles = (str(foreign), "not a posereg export", "posereg export --checkpoint")
    # a real process for one command; the others in this process (the same main())
    _one_error_line(
        _posereg("predict", PHOTO, "--checkpoint", foreign, "--out", tmp_path / "p"), *needles
    )
    for args in (
        ("eval", trained["config"], "--checkpoint", foreign),
        ("serve", "--checkpoint", foreign, "--port", "0"),
    ):
        line = _cli_error(capsys, *args)
        assert all(n in line for n in needles), line
    assert not (tmp_path / "p").exists()


def test_export_flag_mistakes_and_unusable_calibration_data_are_one_line(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    line = _cli_error(capsys, "export", "--checkpoint", checkpoint, "--calibration-images", 8)
    assert "--calibration-images needs --int8" in line
    # per-channel QDQ weights need QuantizeLinear with an axis (opset 13): refused up front
    line = _cli_error(capsys, "export", "--checkpoint", checkpoint, "--int8", "--opset", 11)
    assert "--int8 needs --opset >= 13" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt"]  # nothing written
    # the training images are not images: no crop to calibrate on (a real process)
    folder = tmp_path / "broken"
    folder.mkdir()
    coco = json.loads((COCO / "test_coco.json").read_text())
    for image in coco["images"]:
        (folder / image["file_name"]).write_bytes(b"not a jpeg")
    (folder / "train.json").write_text(json.dumps(coco))
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["data"].update(train_ann=str(folder / "train.json"), train_images=str(folder))
    broken = save_checkpoint(state, tmp_path / "broken.pt")
    _one_error_line(
        _posereg("export", "--checkpoint", broken, "--int8"),
        "train.json: no usable person crops to calibrate --int8 on",
    )
    assert not (tmp_path / "broken.int8.onnx").exists()
    state["config"]["data"]["train_ann"] = str(tmp_path / "missing.json")
    missing = save_checkpoint(state, tmp_path / "missing.pt")
    line = _cli_error(capsys, "export", "--checkpoint", missing, "--int8")
    assert re.search(
        r"data.train_ann of the checkpoint's config, .*missing.json, is not there", line
    )
