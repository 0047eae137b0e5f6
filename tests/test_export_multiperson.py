"""ONNX export of Keypoint R-CNN with the people decoded in the graph, and its ONNX Runtime runner
(posereg.export_multiperson)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from _keypoint_rcnn_scenes import SMALL, scene
from posereg.errors import CheckpointError
from posereg.export import OnnxMismatchError
from posereg.export_multiperson import (
    KEYPOINT_RCNN,
    KeypointRCNNPeople,
    check_people_onnx,
    export_keypoint_rcnn,
    load_people_onnx,
)
from posereg.models.keypoint_rcnn import build_keypoint_rcnn, to_pose_results
from posereg.runtime import load_onnx_model

# A random model (seed 0) finds 0.5-0.8 scored "people" in any image: with the box threshold at
# 0.7 it finds some in the two scenes (different counts) and none in the flat grey image.
THRESHOLD = dict(box_score_thresh=0.7)


def images() -> list[torch.Tensor]:
    """The export traces a 128x128 image. These: the same size (resize ratio 1), a 112x160
    one (resized to 90x128 inside the graph: ratio 1.25, another aspect) and a flat one."""
    return [scene(0, 2)[0], scene(1, 3, size=160)[0][:, :112], torch.full((3, 96, 80), 0.5)]


@pytest.fixture(scope="module", params=["rle", "heatmap"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = build_keypoint_rcnn(request.param, **SMALL, **THRESHOLD).eval()
    path = tmp_path_factory.mktemp(request.param) / "people.onnx"
    config = {"head": request.param, **SMALL, **THRESHOLD}
    export_keypoint_rcnn(model, path, config=config)
    return request.param, model, path, config


def test_onnx_runtime_finds_the_same_people_as_pytorch(exported):
    head, model, path, _ = exported
    people = KeypointRCNNPeople(model)
    counts = []
    with torch.no_grad():
        for image in images():
            counts.append(len(people(image)[0]))
    assert counts[0] > 0 and counts[1] > 0 and counts[0] != counts[1] and counts[2] == 0, counts
    parity = check_people_onnx(people, path, images(), atol=1e-3, sigma_rtol=1e-4)
    assert parity.people == sum(counts)
    assert parity.boxes < 1e-3 and parity.keypoints < 1e-3 and parity.scores < 1e-3
    assert parity.keypoint_scores < 1e-3
    if head == "rle":
        assert parity.sigma is not None and parity.sigma < 1e-4
    else:
        assert parity.sigma is None


def test_the_runner_gives_the_pytorch_pose_results(exported):
    head, model, path, _ = exported
    runner = load_people_onnx(path)
    assert runner.family == KEYPOINT_RCNN
    got = runner.predict(images())
    rule = "official" if head == "rle" else "box"
    with torch.no_grad():
        # one image per call, as the graph (a batch pads its images to one size)
        expected = to_pose_results([model([image])[0] for image in images()], rule)
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected, strict=True):
        assert len(g.keypoints) == len(e.keypoints)
        order = [
            int(np.abs(e.boxes[i] - g.boxes).max(axis=1).argmin()) for i in range(len(e.boxes))
        ]
        assert sorted(order) == list(range(len(order)))
        g = g.select(np.array(order, dtype=int))
        np.testing.assert_allclose(g.boxes, e.boxes, atol=1e-3)  # x, y, w, h
        np.testing.assert_allclose(g.keypoints, e.keypoints, atol=1e-3)
        np.testing.assert_allclose(g.confidence, e.confidence, atol=1e-4)
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-4)
        if head == "rle":
            np.testing.assert_allclose(g.sigma, e.sigma, rtol=1e-4)
        else:
            assert g.sigma is None and e.sigma is None


def test_the_export_carries_its_metadata_and_dynamic_axes(exported):
    head, model, path, config = exported
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    outputs = ["boxes", "scores", "keypoints", "keypoint_scores"] + (
        ["sigma"] if head == "rle" else []
    )
    assert meta["posereg_export"] == "1" and meta["family"] == "keypoint_rcnn"
    assert meta["precision"] == "float32" and meta["head"] == head
    assert meta["outputs"] == ",".join(outputs) and meta["num_keypoints"] == "17"
    assert json.loads(meta["config"]) == json.loads(json.dumps(config))
    assert meta["score_rule"] == ("official" if head == "rle" else "box")
    assert float(meta["box_score_thresh"]) == 0.7 and meta["min_size"] == "128"
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == 17
    (image,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.name == "image" and dims == [3, "height", "width"]
    assert [o.name for o in proto.graph.output] == outputs
    for o in proto.graph.output:
        assert o.type.tensor_type.shape.dim[0].dim_param == "people", o.name


def test_a_mismatching_model_is_reported(exported):
    _, _, path, _ = exported
    torch.manual_seed(1)  # another model than the one exported
    other = build_keypoint_rcnn("rle", **SMALL, box_score_thresh=0.0).eval()
    with pytest.raises(OnnxMismatchError, match=r"people\.onnx: image 0 \(128x128\): "):
        check_people_onnx(KeypointRCNNPeople(other), path, images()[:1])


def _plain_onnx(path, metadata=None):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, None, None])
    y = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [3, None, None])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["boxes"])], "g", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    if metadata:
        helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))
    return path


def test_wrong_files_get_one_clear_message(exported, tmp_path):
    _, _, path, _ = exported
    foreign = _plain_onnx(tmp_path / "foreign.onnx")
    with pytest.raises(
        CheckpointError, match=r"foreign\.onnx: not a posereg export .*posereg export"
    ):
        load_people_onnx(foreign)
    top_down = _plain_onnx(tmp_path / "top_down.onnx", {"posereg_export": "1"})
    with pytest.raises(
        CheckpointError, match=r"top_down\.onnx: a top-down export .*load_onnx_model"
    ):
        load_people_onnx(top_down)
    newer = _plain_onnx(tmp_path / "newer.onnx", {"posereg_export": "2", "family": "keypoint_rcnn"})
    with pytest.raises(CheckpointError, match=r"newer\.onnx: posereg export format 2"):
        load_people_onnx(newer)
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*missing\.onnx"):
        load_people_onnx(tmp_path / "missing.onnx")
    # the top-down loader (posereg predict/serve/eval of an .onnx) names the loader to use
    with pytest.raises(
        CheckpointError, match=r"people\.onnx: a multi-person export \(family keypoint_rcnn"
    ):
        load_onnx_model(path)


def test_opsets_below_11_are_refused(tmp_path):
    model = build_keypoint_rcnn("rle", **SMALL)
    with pytest.raises(ValueError, match="needs opset >= 11, got opset 10"):
        export_keypoint_rcnn(model, tmp_path / "m.onnx", opset=10)
    assert not (tmp_path / "m.onnx").exists()
