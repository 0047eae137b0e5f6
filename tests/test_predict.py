"""Prediction on images: the same numbers as evaluation, colour order, EXIF, bad files and boxes."""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from _real_data import BADINPUT, real
from posereg.checkpoint import save_checkpoint
from posereg.config import Config, to_dict
from posereg.data.dataset import TopDownDataset, TransformConfig
from posereg.data.image_io import apply_orientation, read_exif_orientation, read_image
from posereg.engine.evaluate import predict_dataset
from posereg.models import HEADS, create_pose_model
from posereg.predict import Predictor, box_problem, load_detections
from posereg.skeletons import get_skeleton

POSEREG = str(Path(sys.executable).parent / "posereg")
INPUT_SIZE = (64, 48)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_pose_model("resnet18", num_keypoints=17, width=0.25).eval()


def _predictor(flip_test: bool = False, **kw) -> Predictor:
    return Predictor(_model(), get_skeleton("coco17"), INPUT_SIZE, flip_test=flip_test, **kw)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real posereg checkpoint of the tiny random model (what `posereg train` writes)."""
    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, input_size=list(INPUT_SIZE)),
        model=dataclasses.replace(cfg.model, backbone="resnet18", width=0.25),
    )
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    return save_checkpoint({"model": _model().state_dict(), "config": to_dict(cfg)}, path)


def _posereg(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [POSEREG, *args], capture_output=True, text=True, timeout=300, **kw
    )  # fmt: skip


# --------------------------------------------------------------------------- finding 1: colours
@pytest.mark.parametrize("flip_test", [False, True])
def test_predictor_on_a_file_equals_the_evaluation_path(flip_test):
    ds = TopDownDataset.from_coco(
        real("coco", "test_coco.json"),
        real("coco"),
        input_size=INPUT_SIZE,
        transform=TransformConfig(fast_decode=False),  # full-size decode, as the predictor
    )
    model = _model()
    evaluated = predict_dataset(model, ds, torch.device("cpu"), flip_test=flip_test)
    predictor = Predictor(model, ds.skeleton, INPUT_SIZE, ds.transform.padding, flip_test)
    table = ds.table
    for j in np.unique(table.image_index):
        mine = table.image_index == j
        path = table.image_path(int(np.flatnonzero(mine)[0]))
        result = predictor(path, table.boxes[mine])
        np.testing.assert_allclose(result.keypoints, evaluated.keypoints[mine], atol=1e-5, rtol=0)
        # sigma (~150 px) differs in float32 rounding only: batches of other sizes
        np.testing.assert_allclose(result.sigma, evaluated.sigma[mine], rtol=1e-6)
        # the test has teeth: the model's answer depends on the colour order (1000x the
        # tolerance above), except on the fixtures' one greyscale photo
        bgr = read_image(path)
        swapped = predictor(bgr[..., ::-1], table.boxes[mine])
        change = np.abs(swapped.keypoints - result.keypoints).max()
        grey = np.array_equal(bgr[..., 0], bgr[..., 2])
        assert change == 0 if grey else change > 0.01


def test_arrays_are_bgr_unless_color_rgb_says_otherwise():
    predictor = _predictor()
    path = real("coco", "000000000785.jpg")
    box = [[277.1, 45.7, 225.1, 333.6]]
    from_file = predictor(path, box).keypoints
    bgr = cv2.imread(str(path))  # what OpenCV users have
    rgb = np.ascontiguousarray(bgr[..., ::-1])  # what Pillow / imageio users have
    assert np.array_equal(read_image(path), bgr)  # read_image is BGR, as cv2.imread
    assert np.array_equal(predictor(bgr, box).keypoints, from_file)
    assert np.array_equal(predictor(rgb, box, color="rgb").keypoints, from_file)
    assert np.abs(predictor(rgb, box).keypoints - from_file).max() > 0.01  # RGB taken as BGR
    with pytest.raises(ValueError, match="color must be 'bgr' or 'rgb'"):
        predictor(bgr, box, color="RGBA")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 BGR array, got \(10, 10\)"):
        predictor(np.zeros((10, 10), np.uint8))


# --------------------------------------------------------------------------- finding 13: EXIF
def _photo_with_orientation(tmp_path: Path, orientation: int) -> Path:
    """A real photo re-saved as JPEG with an EXIF orientation tag (pixels stored as they were)."""
    from PIL import Image

    image = Image.open(real("coco", "000000040083.jpg"))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone_{orientation}.jpg"
    image.save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_photo_as_pillow_does(tmp_path, orientation):
    from PIL import Image, ImageOps

    path = _photo_with_orientation(tmp_path, orientation)
    assert read_exif_orientation(path.read_bytes()) == orientation
    stored = read_image(path)  # datasets: the stored raster
    upright = read_image(path, exif_orientation=True)
    assert stored.shape[:2] == (333, 500)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(path)))[..., ::-1].astype(float)
    assert upright.shape == reference.shape
    assert np.abs(upright - reference).mean() < 2.0  # two JPEG decoders, same pixels
    for other in set(range(1, 9)) - {orientation}:  # and no other orientation fits
        turned = apply_orientation(stored, other)
        if turned.shape == reference.shape:
            assert np.abs(turned - reference).mean() > 10.0


@pytest.mark.slow
def test_predictions_on_a_rotated_phone_photo_land_on_the_upright_pixels(tmp_path, checkpoint):
    path = _photo_with_orientation(tmp_path, 6)  # stored landscape, shown rotated 90 clockwise
    stored = read_image(path)
    upright = np.rot90(stored, -1)
    assert np.array_equal(read_image(path, exif_orientation=True), upright)
    predictor = _predictor()
    box = [[20.0, 150.0, 300.0, 320.0]]  # in the upright (333 wide, 500 high) image
    result = predictor(path, box)
    assert np.array_equal(result.keypoints, predictor(np.ascontiguousarray(upright), box).keypoints)
    sideways = _predictor(exif_orientation=False)(path, box)
    assert np.abs(sideways.keypoints - result.keypoints).max() > 0.01

    # posereg predict: the whole upright image is the box, keypoints as on the upright pixels
    (tmp_path / "in").mkdir()
    shutil.copy(path, tmp_path / "in" / path.name)
    out = _posereg("predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint),
                   "--out", str(tmp_path / "out"), "--no-draw", "--device", "cpu")  # fmt: skip
    assert out.returncode == 0, out.stderr
    [entry] = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert entry["bbox"] == [0.0, 0.0, 333.0, 500.0]
    expected = Predictor.from_checkpoint(checkpoint, device="cpu")(
        np.ascontiguousarray(upright), [[0, 0, 333, 500]]
    )
    kp = np.array(entry["keypoints"]).reshape(17, 3)[:, :2]
    np.testing.assert_allclose(kp, expected.keypoints[0], atol=1e-3)  # json rounds to 1e-3


# --------------------------------------------------------------------------- finding 7: boxes
@pytest.mark.parametrize(
    ("box", "problem"),
    [
        ([10, 10, 50, 80], None),
        ([-30, -30, 50, 80], None),  # reaches past the border: kept, the crop is padded
        ([np.nan, 10, 50, 80], "not 4 finite numbers"),
        ([10, 10, np.inf, 80], "not 4 finite numbers"),
        ([10, 10, -5, 80], "no area"),
        ([10, 10, 0, 0], "no area"),
        ([10, 10, 1e30, 1e30], "over 10x the image"),
        ([500, 10, 50, 80], "outside the image"),
        ([10, -200, 50, 80], "outside the image"),
    ],
)
def test_box_problem(box, problem):
    found = box_problem(np.array(box, dtype=float), (200, 300))
    assert found is None if problem is None else problem in found
    if problem is not None:  # the Python API refuses the box by index, never crashes OpenCV
        image = np.zeros((200, 300, 3), np.uint8)
        with pytest.raises(ValueError, match=rf"box #1: .*{problem}"):
            _predictor()(image, [[10, 10, 50, 80], box])


def test_detections_match_by_file_name_or_ascii_number(tmp_path):
    entries = [
        {"image_id": 785, "bbox": [1, 2, 30, 40], "score": 0.9},
        {"image_id": "785", "bbox": [1, 2, 30, 40], "score": 0.8},
        {"file_name": "val/١٢٣.jpg", "image_id": 7, "bbox": [1, 2, 30, 40], "score": 0.7},
        {"image_id": 123, "bbox": [1, 2, 30, 40], "score": 0.6},  # not '١٢٣.jpg': not ASCII
        {"image_id": "frame_b", "bbox": [1, 2, 30, 40], "score": 0.5},
        {"image_id": 785, "bbox": [np.nan, 2, 30, 40], "score": 0.9},
        {"image_id": 785, "bbox": [1, 2, 30, 40], "score": np.inf},
        {"image_id": [1], "bbox": [1, 2, 30, 40]},
        {"image_id": 785, "bbox": "x"},
        {"image_id": 785, "bbox": [1, 2, -3, 40]},
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(entries))  # json writes NaN / Infinity, as numpy users produce
    dets = load_detections(path)
    assert [d.index for d in dets.for_image(Path("000000000785.jpg"))] == [0, 1]
    assert [d.index for d in dets.for_image(Path("١٢٣.jpg"))] == [2]
    assert [d.index for d in dets.for_image(Path("123.jpg"))] == [3]
    assert [d.index for d in dets.for_image(Path("frame_b.png"))] == [4]
    assert dets.for_image(Path("²³.jpg")) == []  # '²'.isdigit() is True; int('²') fails
    assert dets.report.counts() == {
        "bbox is not 4 finite numbers": 1,
        "score is not finite": 1,
        "no image_id or file_name to match an image": 1,
        "bbox is not [x, y, w, h] numbers": 1,
        "bbox has no area": 1,
    }
    assert "detection #5 (image 785)" in dets.report.summary(max_examples=5)


@pytest.mark.slow
def test_predict_cli_skips_unusable_boxes_and_odd_file_names(tmp_path, checkpoint):
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(real("coco", "000000000785.jpg"), images / "000000000785.jpg")  # 640 x 425
    shutil.copy(real("coco", "000000040083.jpg"), images / "²³.jpg")
    shutil.copy(real("coco", "000000040083.jpg"), images / "١٢٣.jpg")
    dets = [
        {"image_id": 785, "bbox": [277.1, 45.7, 225.1, 333.6], "score": 0.99, "category_id": 1},
        {"image_id": 785, "bbox": [float("nan"), 45.7, 225.1, 333.6], "score": 0.9},
        {"image_id": 785, "bbox": [0, 0, float("inf"), 10], "score": 0.9},
        {"image_id": 785, "bbox": [0, 0, 1e30, 1e30], "score": 0.9},
        {"image_id": 785, "bbox": [10, 10, -40, 80], "score": 0.9},
        {"image_id": 785, "bbox": [5000, 10, 40, 80], "score": 0.9},
        {"file_name": "١٢٣.jpg", "image_id": 123, "bbox": [100, 20, 150, 300], "score": 0.8},
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = _posereg("predict", str(images), "--checkpoint", str(checkpoint), "--boxes",
                   str(tmp_path / "dets.json"), "--out", str(tmp_path / "out"), "--device",
                   "cpu")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    text = (tmp_path / "out" / "predictions.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    preds = json.loads(text)
    assert [(p["file_name"], p["image_id"]) for p in preds] == [
        ("000000000785.jpg", 785),
        ("١٢٣.jpg", 123),
    ]
    assert np.isfinite(np.array([p["keypoints"] for p in preds])).all()
    for index in (1, 2, 4):  # skipped when read
        assert f"detection #{index} (image 785)" in out.stderr
    assert "over 10x the image" in out.stderr and "outside the image" in out.stderr
    assert "5 skipped" in out.stderr
    assert "no usable box in the detections: ²³.jpg" in out.stderr


# --------------------------------------------------------------------------- finding 11: bad files
@pytest.mark.slow
def test_one_bad_image_does_not_stop_the_batch(tmp_path, checkpoint):
    images = tmp_path / "in"
    images.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg", "000000196141.jpg"):
        shutil.copy(real("coco", name), images / name)
    shutil.copy(BADINPUT / "corrupt.jpg", images / "corrupt.jpg")
    shutil.copy(BADINPUT / "not_an_image.jpg", images / "not_an_image.jpg")
    out = _posereg("predict", str(images), "--checkpoint", str(checkpoint),
                   "--out", str(tmp_path / "out"), "--device", "cpu")  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f"skipped {images / 'corrupt.jpg'}: corrupt or truncated JPEG" in out.stderr
    assert "2 of 5 images failed: corrupt.jpg (corrupt" in out.stderr
    assert "not_an_image.jpg (" in out.stderr.splitlines()[-1]
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted(p["image_id"] for p in preds) == [785, 40083, 196141]
    assert len(list((tmp_path / "out").glob("*_pose.png"))) == 3


@pytest.mark.slow
def test_unwritable_output_is_one_clear_message(tmp_path, checkpoint):
    image = str(real("coco", "000000000785.jpg"))
    (tmp_path / "file").write_text("x")
    out = _posereg("predict", image, "--checkpoint", str(checkpoint),
                   "--out", str(tmp_path / "file" / "out"), "--device", "cpu")  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"cannot create the output folder {tmp_path / 'file' / 'out'}" in out.stderr
    (tmp_path / "out" / "predictions.json").mkdir(parents=True)  # in the way of the json
    out = _posereg("predict", image, "--checkpoint", str(checkpoint), "--no-draw",
                   "--out", str(tmp_path / "out"), "--device", "cpu")  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"cannot write {tmp_path / 'out' / 'predictions.json'}: " in out.stderr


def _small_file_limit() -> None:  # a full disk, for files: writes past 20 kB fail
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


@pytest.mark.slow
def test_disk_full_names_the_file_and_leaves_no_partial_file(tmp_path, checkpoint):
    out = _posereg("predict", str(real("coco", "000000000785.jpg")), "--checkpoint",
                   str(checkpoint), "--out", str(tmp_path / "out"), "--device", "cpu",
                   preexec_fn=_small_file_limit)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"cannot write {tmp_path / 'out' / '000000000785_pose.png'}: File too large" in (
        out.stderr
    )
    assert list((tmp_path / "out").iterdir()) == []  # no half-written PNG or temporary file


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_predicts_the_same_from_a_file_as_in_evaluation(name):
    """Predictor (file, box) and evaluation (dataset crop) both call model.predict with the flip
    test: same keypoints, scores and sigma (for the heads that have one), for every head."""
    size = (64, 64)  # map heads need multiples of 32
    ds = TopDownDataset.from_coco(
        real("coco", "test_coco.json"), real("coco"), input_size=size,
        transform=TransformConfig(fast_decode=False),
    )  # fmt: skip
    torch.manual_seed(0)
    options = {} if name == "regression" else {"deconv_channels": 16}
    model = create_pose_model(
        "resnet18", num_keypoints=17, width=0.25, head=name, head_options=options, input_size=size
    ).eval()
    with torch.no_grad():  # maps and coordinates that vary with the image: no argmax ties
        for p in model.head.parameters():
            p.normal_(0, 0.3)
    evaluated = predict_dataset(model, ds, torch.device("cpu"), flip_test=True)
    predictor = Predictor(model, ds.skeleton, size, ds.transform.padding, flip_test=True)
    assert (evaluated.sigma is None) == (name in ("heatmap", "integral"))
    table = ds.table
    for j in np.unique(table.image_index):
        mine = table.image_index == j
        result = predictor(table.image_path(int(np.flatnonzero(mine)[0])), table.boxes[mine])
        # (float32 rounding of other batch sizes: well below a pixel; a map pixel here is >= 4 px)
        np.testing.assert_allclose(result.keypoints, evaluated.keypoints[mine], atol=1e-3, rtol=0)
        np.testing.assert_allclose(result.confidence, evaluated.confidence[mine], atol=1e-5)
        if evaluated.sigma is None:
            assert result.sigma is None
        else:
            np.testing.assert_allclose(result.sigma, evaluated.sigma[mine], rtol=1e-5, atol=1e-4)
    # the instance score is the evaluation's rule (official: box score + mean + max)
    c = result.confidence
    np.testing.assert_allclose(result.scores, 1.0 + c.mean(1) + c.max(1))
