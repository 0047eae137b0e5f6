"""ONNX export: parity with PyTorch over a dynamic batch for every head, and no flow in the graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posereg.models import HEADS, create_pose_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from posereg.export import OnnxMismatchError, check_onnx, export_onnx  # noqa: E402

INPUT_SIZE = (64, 48)


def _model():
    torch.manual_seed(0)
    model = create_pose_model("resnet18", num_keypoints=17, width=0.25)
    with torch.no_grad():  # outputs that vary with the image, so parity is not trivial
        model.head.fc_coord.linear.weight.normal_(0, 1.0)
        model.head.fc_sigma.linear.weight.normal_(0, 0.3)
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", INPUT_SIZE)
    return model, path


def _initializers(path):
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_parity_with_pytorch_for_batch_1_and_3(exported):
    model, path = exported
    diff = check_onnx(model, path, atol=1e-4, batch_sizes=(1, 3))
    assert diff < 1e-4


def test_graph_signature_and_metadata(exported):
    _, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*proto.graph.input, *proto.graph.output)
    }
    assert dims == {
        "images": ["batch", 3, 64, 48],
        "keypoints": ["batch", 17, 2],
        "scores": ["batch", 17],
        "sigma": ["batch", 17, 2],
        "head.mu": ["batch", 17, 2],  # the head's output, for posereg.runtime's flip test
        "head.sigma": ["batch", 17, 2],
    }
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["input_size"] == "64,48" and props["num_keypoints"] == "17"


def test_flow_is_not_exported(exported, tmp_path):
    model, path = exported
    weights = _initializers(path)
    exported_count = sum(int(np.prod(a.shape)) for a in weights.values())
    trunk = [(k, p) for k, p in model.named_parameters() if ".criterion." not in k]
    # every backbone/head weight is there (BN may be folded into the convolutions) ...
    lower = sum(p.numel() for _, p in trunk if p.dim() > 1)  # conv and linear weights
    upper = sum(p.numel() for _, p in trunk) + sum(
        b.numel() for k, b in model.backbone.named_buffers() if "num_batches" not in k
    )
    flow = sum(p.numel() for p in model.criterion.flow.parameters())
    assert flow > 0.05 * upper  # large enough to show up if it were exported
    assert lower <= exported_count <= upper
    # ... and changing the flow changes nothing in the file
    with torch.no_grad():
        for p in model.criterion.flow.parameters():
            p.add_(1.0)
    again = _initializers(export_onnx(model, tmp_path / "again.onnx", INPUT_SIZE))
    assert again.keys() == weights.keys()
    for name, array in weights.items():
        np.testing.assert_array_equal(again[name], array)


def test_check_onnx_catches_a_mismatch_and_restores_modes(exported):
    model, path = exported
    model.train()
    model.backbone.bn1.eval()  # e.g. a frozen BN layer
    other = _model()
    with torch.no_grad():
        other.head.fc_coord.linear.bias.add_(0.01)
    with pytest.raises(OnnxMismatchError, match=r"by 0.01 > atol 0.0001 \(keypoints at batch \d\)"):
        check_onnx(other, path, atol=1e-4)
    check_onnx(model, path)
    assert model.training and model.head.training and not model.backbone.bn1.training


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_outputs(tmp_path):
    pytest.importorskip("onnxscript")
    model = _model()
    path = export_onnx(model, tmp_path / "dynamo.onnx", INPUT_SIZE, opset=18, dynamo=True)
    assert check_onnx(model, path, atol=1e-4, batch_sizes=(1, 3)) < 1e-4


def _head_model(name: str) -> torch.nn.Module:
    """A tiny model with ``name``'s head whose outputs vary with the image (no argmax ties)."""
    torch.manual_seed(0)
    options = {} if name == "regression" else {"deconv_channels": 16}
    model = create_pose_model(
        "resnet18", num_keypoints=17, width=0.125, head=name, head_options=options,
        input_size=(64, 64),
    )  # fmt: skip
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_exports_its_decoded_outputs(tmp_path, name):
    """backbone + head + decode in the graph: keypoints, scores and sigma where the head has one,
    equal to model.predict within 1e-4 for batches of 1 and 3."""
    model = _head_model(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx", (64, 64))
    assert check_onnx(model, path, atol=1e-4, batch_sizes=(1, 3)) <= 1e-4
    # (check_onnx compares every output's shape too; K is not always static in the graph)
    proto = onnx.load(str(path))
    outputs = {v.name: v.type.tensor_type.shape.dim[0].dim_param for v in proto.graph.output}
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        decoded = model.predict(images)
        head = model(images)
    expected = ["keypoints", "scores"] + ([] if decoded.sigma is None else ["sigma"])
    # then the head's output fields (posereg.runtime flips, averages and decodes them)
    expected += [f"head.{k}" for k, v in vars(head).items() if v is not None]
    assert outputs == dict.fromkeys(expected, "batch")
    # the graph is the decoded prediction (for the heatmap head: argmax + quarter shift, not the
    # maps): ONNX Runtime's keypoints and scores are model.predict's, and they move with the image
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    keypoints, scores = session.run(["keypoints", "scores"], {"images": images.numpy()})[:2]
    np.testing.assert_allclose(keypoints, decoded.keypoints.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, decoded.scores.numpy(), atol=1e-4, rtol=0)
    assert np.abs(keypoints[0] - keypoints[1]).max() > 0.01
