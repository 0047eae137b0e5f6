"""The Keypoint R-CNN family through the commands: ``posereg train`` a tiny config on a generated
``multi`` set, ``eval`` (COCO AP on whole images, reproducible), ``predict`` on a real photo,
``export`` and the .onnx back through ``predict``, ``serve`` and video; and the bad inputs of a
detector-free family, each one clear line."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from _real_data import real, tiny_checkpoint, tiny_multi_config
from posereg.checkpoint import load_checkpoint, save_checkpoint
from posereg.cli import main
from posereg.metrics.coco import evaluate_coco

PHOTO = real("coco", "000000000785.jpg")
POSEREG = [sys.executable, "-c", "import sys; from posereg.cli import main; sys.exit(main())"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: a small Keypoint R-CNN (configs/synth_kprcnn_rle.yaml's architecture, narrower); score
#: threshold 0 so that the barely trained model answers with people on any image
TINY = {
    "model": {
        "head": "rle",
        "backbone": "resnet18_fpn_w0.5",
        "options": {
            "min_size": 128,
            "max_size": 128,
            "fpn_channels": 16,
            "keypoint_layers": [16],
            "box_representation": 32,
            "box_detections_per_img": 5,
        },
    },  # fmt: skip
    "train": {"steps": 3, "batch_size": 2, "threads": 1, "log_every": 1},
    "optim": {"warmup_steps": 1},
    "eval": {"score_threshold": 0.0, "batch_size": 2},
}


def _posereg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*POSEREG, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=ENV
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A generated ``multi`` set (4 train, 2 val images), its config, and the run that
    ``posereg train`` made of it."""
    root = tmp_path_factory.mktemp("kprcnn")
    tiny_multi_config(root, "keypoint_rcnn", TINY)
    out = _posereg("train", str(root / "tiny.yaml"), cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"root": root, "config": root / "tiny.yaml", "run": root / "runs" / "tiny"}


def test_train_writes_a_run_with_its_family_and_eval_reproduces_its_ap(run):
    folder = run["run"]
    for name in ("config.yaml", "best.pt", "last.pt", "metrics.json", "train_log.csv"):
        assert (folder / name).is_file(), name
    state = load_checkpoint(folder / "last.pt")
    assert state["task"] == "keypoint_rcnn" and state["step"] == 3
    log = (folder / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,lr,loss,") and "loss_keypoint" in log[0]
    assert len(log) == 4  # header + 3 steps
    metrics = json.loads((folder / "metrics.json").read_text())["val"]
    assert metrics["num_images"] == 2 and metrics["num_people"] > 0
    assert {"AP", "AP50", "clean_AP"} <= set(metrics)  # labels and the synthetic clean truth

    preds = run["root"] / "eval_preds.json"
    out = _posereg(
        "eval", str(run["config"]), "--checkpoint", str(folder / "last.pt"), "--out", str(preds),
        cwd=run["root"],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    printed = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert printed["AP"] == f"{metrics['AP']:.4f}"  # the checkpoint evaluates as training did
    assert printed["clean_AP"] == f"{metrics['clean_AP']:.4f}"
    # the AP is pycocotools' on whole images: the written predictions, evaluated again
    entries = json.loads(preds.read_text())
    assert len(entries) == metrics["num_people"]
    ann = json.loads(Path(yaml.safe_load(run["config"].read_text())["data"]["val_ann"]).read_text())
    again = evaluate_coco(ann, entries, image_ids=[im["id"] for im in ann["images"]])
    assert f"{again.ap:.4f}" == printed["AP"]


def test_predict_a_photo_export_and_the_onnx_gives_the_same_people(run):
    root, best = run["root"], run["run"] / "best.pt"
    out = _posereg("predict", str(PHOTO), "--checkpoint", str(best), "--out", "pt", cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    people = json.loads((root / "pt/predictions.json").read_text())
    h, w = cv2.imread(str(PHOTO)).shape[:2]
    assert 0 < len(people) <= 5  # box_detections_per_img
    for p in people:
        x, y, bw, bh = p["bbox"]
        assert bw > 0 and bh > 0 and -1 <= x and x + bw <= w + 1 and -1 <= y and y + bh <= h + 1
        assert len(p["keypoints"]) == 51 and np.asarray(p["sigma"]).shape == (17, 2)
        # the RLE head's predictive 0.9-region: r_0.9 x sigma, the same radius for every person
        ratio = np.asarray(p["region"]) / np.asarray(p["sigma"])
        assert p["region_p"] == 0.9 and np.allclose(ratio, ratio.flat[0], rtol=1e-2)
        assert 1.0 < ratio.flat[0] < 5.0
    assert (root / "pt/000000000785_pose.png").is_file()

    out = _posereg("export", "--checkpoint", str(best), "--out", "kprcnn.onnx", cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "onnxruntime vs PyTorch" in out.stdout
    out = _posereg("predict", str(PHOTO), "--checkpoint", "kprcnn.onnx", "--out", "onnx", cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    exported = json.loads((root / "onnx/predictions.json").read_text())
    assert len(exported) == len(people)
    for a, b in zip(people, exported, strict=True):
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.02)
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=0.02)


def test_serve_and_video_answer_with_the_people(run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from posereg.predict import PeoplePredictor, Predictor
    from posereg.serve.app import create_app
    from posereg.video import predict_video

    best = run["run"] / "best.pt"
    predictor = Predictor.from_checkpoint(best, device="cpu")
    assert isinstance(predictor, PeoplePredictor)
    want = predictor(PHOTO)
    client = TestClient(create_app(predictor))
    files = {"image": ("photo.jpg", PHOTO.read_bytes(), "image/jpeg")}
    answer = client.post("/v1/predict", files=files)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["people"]) == len(want.keypoints) > 0
    boxes = client.post("/v1/predict", files=files, data={"boxes": "[[0, 0, 50, 50]]"})
    assert boxes.status_code == 422 and "finds the people itself" in boxes.text

    video = run["root"] / "clip.mp4"
    frame = cv2.imread(str(PHOTO))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10, frame.shape[1::-1])
    for _ in range(3):
        writer.write(frame)
    writer.release()
    summary = predict_video(
        best, video, run["root"] / "video", smooth="kalman", draw=False, device="cpu",
        progress=False,
    )  # fmt: skip
    entries = json.loads(summary.predictions.read_text())
    assert summary.num_frames == 3 and {e["frame"] for e in entries} == {0, 1, 2}
    assert summary.num_tracks >= 1 and all("track_id" in e for e in entries)


def _one_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


def test_bad_input_is_one_clear_line(run, tmp_path, capsys):
    best = run["run"] / "best.pt"
    topdown = tiny_checkpoint(tmp_path / "pose.pt")
    code = main(["eval", str(run["config"]), "--checkpoint", str(topdown)])
    line = _one_line(code, capsys.readouterr().err)
    assert line == (
        f"posereg eval: error: {topdown}: not a Keypoint R-CNN checkpoint (it holds a top-down "
        "model: person crops -> 2D keypoints, for `posereg predict`); give a checkpoint of a "
        "Keypoint R-CNN run (whole images -> people (boxes + 2D keypoints))"
    )

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 785, "bbox": [10, 10, 100, 200], "score": 1.0}]))
    out = tmp_path / "out"
    code = main(["predict", str(PHOTO), "--checkpoint", str(best), "--boxes", str(boxes),
                 "--out", str(out)])  # fmt: skip
    line = _one_line(code, capsys.readouterr().err)
    assert line == (
        f"posereg predict: error: {best}: --boxes: a Keypoint R-CNN model finds the people "
        "itself (whole images -> people (boxes + 2D keypoints)); predict without --boxes"
    )
    assert not out.exists()

    code = main(["train", str(run["config"]), "--set", "model.head_options={}"])
    line = _one_line(code, capsys.readouterr().err)
    assert "unknown config key model.head_options" in line

    # a model that finds nobody (box score threshold 1): an empty list, exit 0
    state = load_checkpoint(best)
    state["config"]["eval"]["score_threshold"] = 1.0
    nobody = save_checkpoint(state, tmp_path / "nobody.pt")
    code = main(["predict", str(PHOTO), "--checkpoint", str(nobody), "--out", str(out)])
    assert code == 0
    assert json.loads((out / "predictions.json").read_text()) == []
    assert "(0 poses)" in capsys.readouterr().out
    assert (out / "000000000785_pose.png").is_file()


def test_whole_image_ap_is_one_for_the_clean_truth_and_lower_for_noisy_people(run):
    """The evaluation of the family (no ground-truth boxes): people equal to the clean truth
    score clean AP 1; the same people moved by 8 px score less against both truths."""
    from posereg.engine.multiperson import coco_entries, summarize
    from posereg.family import family_for
    from posereg.result import PoseResult

    family = family_for("keypoint_rcnn")
    cfg = family.load_config(run["config"])
    ann = json.loads(Path(cfg.data.val_ann).read_text())
    ids = [im["id"] for im in ann["images"]]
    results = []
    for image_id in ids:
        people = [a for a in ann["annotations"] if a["image_id"] == image_id]
        kp = np.array([a["keypoints_clean"] for a in people], dtype=float).reshape(-1, 17, 3)
        boxes = np.array([a["bbox"] for a in people], dtype=float).reshape(-1, 4)
        n = len(people)
        results.append(PoseResult(kp[..., :2], None, np.ones((n, 17)), boxes, np.ones(n)))
    exact = summarize(cfg, ids, coco_entries(ids, results))
    assert exact["clean_AP"] == pytest.approx(1.0) and exact["num_people"] == len(
        ann["annotations"]
    )
    assert exact["AP"] < 1.0  # the labels are the noisy annotator's, not the clean truth
    moved = [dataclasses.replace(r, keypoints=r.keypoints + 8.0) for r in results]
    off = summarize(cfg, ids, coco_entries(ids, moved))
    assert off["clean_AP"] < exact["clean_AP"] and off["AP"] < exact["AP"]
