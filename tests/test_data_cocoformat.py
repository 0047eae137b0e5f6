"""COCO-format files as they really are: no area / iscrowd, annotation id 0, keypoints a little
outside the image, images under another root, fields of the wrong type, and `posereg data show`
on bad input. Real json files on disk, real photos, real pycocotools, the real CLI."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from _real_data import BADINPUT, real
from posereg.data import BadInputError, TopDownDataset
from posereg.data.instances import AREA_PER_BOX_AREA
from posereg.metrics.coco import evaluate_coco, load_coco_gt, prepare_coco_gt

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def gt() -> dict:
    return json.loads(real("coco", "test_coco.json").read_text())


def labels_as_predictions(gt: dict, shift: float = 0.0) -> list[dict]:
    out = []
    for a in gt["annotations"]:
        if a["num_keypoints"] == 0:
            continue
        kp = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        kp[:, :2] += shift * np.sin(np.arange(len(kp)))[:, None]  # a fixed, uneven error
        out.append(
            {
                "image_id": a["image_id"],
                "category_id": 1,
                "keypoints": kp.ravel().tolist(),
                "score": 1.0,
            }
        )
    return out


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, allow_nan=True))
    return path


# --------------------------------------------------------------------------- area, iscrowd
def test_missing_area_and_iscrowd_evaluate_with_the_documented_fill(gt, tmp_path):
    bare = copy.deepcopy(gt)
    for a in bare["annotations"]:
        del a["area"], a["iscrowd"]
    path = write(tmp_path / "bare.json", bare)
    # plain pycocotools crashes on this file: what posereg users saw
    with pytest.raises(KeyError, match="area|iscrowd"), contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        ev = COCOeval(coco, coco.loadRes(labels_as_predictions(gt, 3.0)), "keypoints")
        ev.evaluate()
    assert evaluate_coco(path, labels_as_predictions(gt)).ap == 1.0
    # the fill: area = 0.53 x w x h, iscrowd = 0; identical numbers to a file that says so
    filled = copy.deepcopy(bare)
    for a in filled["annotations"]:
        a["area"] = 0.53 * a["bbox"][2] * a["bbox"][3]
        a["iscrowd"] = 0
    preds = labels_as_predictions(gt, 3.0)
    ours, explicit = evaluate_coco(path, preds), evaluate_coco(filled, preds)
    np.testing.assert_array_equal(ours.stats, explicit.stats)
    assert 0.2 < ours.ap < 1.0  # the shift matters, so the area really enters OKS
    coco = load_coco_gt(path)
    a0 = coco.dataset["annotations"][0]
    assert a0["area"] == pytest.approx(AREA_PER_BOX_AREA * a0["bbox"][2] * a0["bbox"][3])


def test_the_fill_is_reported_once(gt, tmp_path, caplog):
    bare = copy.deepcopy(gt)
    for a in bare["annotations"]:
        del a["area"]
    path = write(tmp_path / "noarea.json", bare)
    with caplog.at_level(logging.WARNING, "posereg.metrics"):
        for _ in range(3):  # e.g. three validation epochs
            evaluate_coco(path, labels_as_predictions(gt))
    lines = [r.getMessage() for r in caplog.records if "ground truth adjusted" in r.getMessage()]
    assert len(lines) == 1
    assert f"area missing or invalid, set to 0.53 x box area: {len(gt['annotations'])}" in lines[0]


# --------------------------------------------------------------------------- annotation ids
@pytest.mark.parametrize("ids", ["zero", "negative", "duplicate"])
def test_annotation_ids_pycocotools_mistreats_still_give_ap_1(gt, tmp_path, ids):
    data = copy.deepcopy(gt)
    if ids == "zero":
        data["annotations"][0]["id"] = 0  # was 0.69 before: id 0 means "unmatched" in COCOeval
    elif ids == "negative":
        data["annotations"][3]["id"] = -7
    else:
        data["annotations"][2]["id"] = data["annotations"][1]["id"]
    path = write(tmp_path / "ids.json", data)
    result = evaluate_coco(path, labels_as_predictions(gt))
    assert result.ap == 1.0 and result.ar == 1.0


def test_id_zero_is_what_broke_plain_pycocotools(gt, tmp_path):
    """The reason for the remap, measured: pycocotools itself on the same file."""
    data = copy.deepcopy(gt)
    data["annotations"][0]["id"] = 0
    path = write(tmp_path / "id0.json", data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        ev = COCOeval(coco, coco.loadRes(labels_as_predictions(gt)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] < 0.9


def test_malformed_ground_truth_is_left_out_not_a_crash(gt, tmp_path):
    data = copy.deepcopy(gt)
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]
    data["annotations"][1]["bbox"] = ["10", 20, 30, 40]
    prepared, counts = prepare_coco_gt(data, "x.json", num_keypoints=17)
    assert counts["left out (malformed)"] == 2
    assert len(prepared["annotations"]) == len(data["annotations"]) - 2
    assert [a["id"] for a in prepared["annotations"]] == list(
        range(1, len(data["annotations"]) - 1)
    )
    preds = [p for p in labels_as_predictions(gt)]
    assert evaluate_coco(write(tmp_path / "m.json", data), preds).ap < 1.0  # no crash


def test_predictions_for_an_unknown_image_are_a_clear_error(gt):
    preds = labels_as_predictions(gt)
    preds[0]["image_id"] = 999999
    with pytest.raises(
        ValueError, match=r"image ids \[999999\] that the ground truth does not have"
    ):
        evaluate_coco(gt, preds)


# --------------------------------------------------------------------------- the loader
def test_a_keypoint_outside_the_image_is_dropped_and_the_person_kept():
    ds = TopDownDataset.from_coco(BADINPUT / "negative_coordinate.json", BADINPUT)
    assert len(ds) == 2 and ds.report.num_skipped == 0
    assert ds.report.adjustments() == {"keypoints outside the image dropped": 1}
    assert "annotation id 2 (image id 1) (keypoint 9 at [-4.0, 30.0])" in ds.report.summary()
    kp = ds.table.keypoints[1]
    assert kp[9].tolist() == [0.0, 0.0, 0.0]  # dropped: v = 0
    assert (kp[np.arange(17) != 9, 2] == 2).all()  # every other label kept
    assert (ds.table.keypoints[0, :, 2] == 2).all()


def ok_file(tmp_path: Path, anns: list[dict], **image) -> Path:
    base = json.loads((BADINPUT / "ok.json").read_text())
    base["images"][0].update(image)
    base["annotations"] = anns
    shutil.copy(BADINPUT / "ok.jpg", tmp_path / "ok.jpg")
    return write(tmp_path / "case.json", base)


def ok_ann(**changes) -> dict:
    ann = json.loads((BADINPUT / "ok.json").read_text())["annotations"][0]
    ann.update(changes)
    return ann


def test_outside_on_the_far_side_and_all_outside(tmp_path):
    kp = np.asarray(ok_ann()["keypoints"], dtype=float).reshape(17, 3)
    beyond = kp.copy()
    beyond[16, 0] = 64.5  # image width 64
    gone = kp.copy()
    gone[:, 0] = -1.0
    anns = [
        ok_ann(id=1, keypoints=beyond.ravel().tolist()),
        ok_ann(id=2, keypoints=gone.ravel().tolist()),
    ]
    ds = TopDownDataset.from_coco(ok_file(tmp_path, anns), tmp_path)
    assert len(ds) == 1 and ds.table.keypoints[0, 16, 2] == 0
    assert ds.report.adjustments() == {"keypoints outside the image dropped": 1}
    assert ds.report.counts() == {"no labelled keypoints": 1}
    assert "all 17 labelled keypoints are outside the image" in ds.report.summary()


def test_missing_area_and_iscrowd_in_the_loader(tmp_path):
    ann = ok_ann()
    del ann["area"], ann["iscrowd"]
    ds = TopDownDataset.from_coco(ok_file(tmp_path, [ann]), tmp_path)
    assert ds.table.areas[0] == pytest.approx(0.53 * 48.0 * 84.0)
    assert ds.report.adjustments() == {
        "iscrowd missing, 0 used": 1,
        "area missing or invalid, 0.53 x box area used": 1,
    }


def test_missing_images_say_which_root_was_searched(tmp_path, gt):
    # the json names "000000000785.jpg"; the user points the root one folder too high
    photos = tmp_path / "coco" / "val2017"
    photos.mkdir(parents=True)
    for img in gt["images"]:
        shutil.copy(real("coco", img["file_name"]), photos / img["file_name"])
    ann = write(tmp_path / "val.json", gt)
    with pytest.raises(BadInputError) as e:
        TopDownDataset.from_coco(ann, tmp_path / "coco")
    msg = str(e.value)
    assert "no usable instance" in msg and "image file not found" in msg
    assert f"searched under image root {tmp_path / 'coco'}" in msg
    assert "data.train_images / data.val_images" in msg
    # file names with folders, root already inside that folder: the hint says so
    data = copy.deepcopy(gt)
    for img in data["images"]:
        img["file_name"] = "val2017/" + img["file_name"]
    ann2 = write(tmp_path / "val_folders.json", data)
    assert len(TopDownDataset.from_coco(ann2, tmp_path / "coco")) == 12  # the right root works
    with pytest.raises(BadInputError) as e:
        TopDownDataset.from_coco(ann2, photos, strict=True)
    assert f"{photos / 'val2017' / '000000000785.jpg'}" in str(e.value)
    assert f"exists: is the image root {tmp_path / 'coco'}?" in str(e.value)


# --------------------------------------------------------------------------- wrong types
@pytest.mark.parametrize(
    ("image", "record", "words"),
    [
        (
            {"height": float("nan")},
            "image id 1",
            "height must be a whole number of pixels, got nan",
        ),
        ({"height": "96"}, "image id 1", "height must be a whole number of pixels, got '96'"),
        ({"width": 63.5}, "image id 1", "width must be a whole number of pixels >= 0, got 63.5"),
        ({"width": -64}, "image id 1", "width must be a whole number of pixels >= 0, got -64"),
    ],
)
def test_image_fields_of_the_wrong_type_name_file_and_record(tmp_path, image, record, words):
    path = ok_file(tmp_path, [ok_ann()], **image)
    with pytest.raises(BadInputError) as e:
        TopDownDataset.from_coco(path, tmp_path)
    assert type(e.value) is BadInputError
    assert str(e.value) == f"{path}: {record}: {words}"


def test_category_of_the_wrong_type_or_size(tmp_path):
    path = ok_file(tmp_path, [ok_ann()])
    data = json.loads(path.read_text())
    data["categories"][0]["id"] = "person"
    write(path, data)
    with pytest.raises(
        BadInputError, match=rf"{path}: category #0: category id 'person' is not an integer"
    ):
        TopDownDataset.from_coco(path, tmp_path)
    data["categories"][0]["id"] = 1
    data["categories"][0]["keypoints"] = data["categories"][0]["keypoints"][:14]
    write(path, data)
    with pytest.raises(BadInputError) as e:
        TopDownDataset.from_coco(path, tmp_path)
    assert "category id 1 (person): 14 keypoints, but skeleton coco17 has 17" in str(e.value)
    assert "set data.skeleton" in str(e.value)


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        ({"category_id": "1"}, "invalid category_id", "category_id '1' is not an integer"),
        ({"bbox": [8, "6", 48, 84]}, "invalid bbox", "non-numeric bbox"),
        ({"iscrowd": "0"}, "invalid iscrowd", "iscrowd '0', expected 0 or 1"),
        ({"id": "2"}, "missing annotation id", "id '2' is not an integer"),
        ({"image_id": "1"}, "unknown image_id", "no image with id '1'"),
    ],
)
def test_annotation_fields_of_the_wrong_type_are_counted_or_strict_errors(
    tmp_path, changes, reason, detail
):
    path = ok_file(tmp_path, [ok_ann(id=1), ok_ann(**{"id": 2, **changes})])
    ds = TopDownDataset.from_coco(path, tmp_path)
    assert len(ds) == 1 and ds.report.counts() == {reason: 1}
    assert detail in ds.report.summary()
    with pytest.raises(BadInputError) as e:
        TopDownDataset.from_coco(path, tmp_path, strict=True)
    assert str(e.value).startswith(f"{path}: ") and f"{reason}: {detail}" in str(e.value)


# --------------------------------------------------------------------------- posereg data show
def posereg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "posereg"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def dataset_folder(root: Path, gt: dict) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "val").mkdir(parents=True)
    for img in gt["images"]:
        shutil.copy(real("coco", img["file_name"]), root / "images" / "val" / img["file_name"])
    write(root / "annotations" / "person_keypoints_val.json", gt)
    return root


def test_data_show_on_bad_input_is_one_clear_message(tmp_path, gt, capsys):
    """Through the CLI's entry point in-process (the exit status and the one printed line);
    the subprocess test below checks the installed script on two of these cases."""
    from posereg.cli import main

    root = dataset_folder(tmp_path / "set", gt)
    ann = root / "annotations" / "person_keypoints_val.json"
    out = tmp_path / "sheet.png"

    def show(*extra: str) -> tuple[int, str]:
        code = main(["data", "show", *extra])
        return code, capsys.readouterr().err

    def fails(result: tuple[int, str], *words: str) -> None:
        code, err = result
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1, err
        assert lines[0].startswith("posereg data show: error: "), err
        for w in words:
            assert w in lines[0], lines[0]

    assert show(str(root), "--split", "val", "--out", str(out))[0] == 0 and out.is_file()
    fails(show(str(tmp_path / "nope")), str(tmp_path / "nope"), "dataset folder not found")
    fails(show(str(root), "--split", "train"), "annotation file not found", "split 'train'")
    ann.write_text("{not json")
    fails(show(str(root), "--split", "val"), str(ann), "not valid JSON")
    write(ann, [1, 2])
    fails(show(str(root), "--split", "val"), "not a COCO keypoint file")
    data = copy.deepcopy(gt)
    data["categories"][0]["skeleton"] = [[1, 99]]
    write(ann, data)
    fails(show(str(root), "--split", "val"), "category id 1", "1-based [a, b]")
    data = copy.deepcopy(gt)
    data["categories"] = "person"  # no usable category: drawn without limbs
    data["annotations"][0]["keypoints"] = "everywhere"
    data["annotations"][1]["bbox"] = None
    data["images"][2]["id"] = [3]
    write(ann, data)
    with caplog_at_warning() as records:
        assert show(str(root), "--split", "val", "--out", str(out))[0] == 0
    assert any("2 annotations not drawn" in r for r in records)
    data = copy.deepcopy(gt)
    data["images"][0]["file_name"] = "../../escape.jpg"
    write(ann, data)
    fails(show(str(root), "--split", "val"), "image id 785", "points outside the image root")


@contextlib.contextmanager
def caplog_at_warning():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("posereg").addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger("posereg").removeHandler(handler)


@pytest.mark.slow
def test_data_show_script_exits_nonzero_with_one_line(tmp_path, gt):
    root = dataset_folder(tmp_path / "set", gt)
    (root / "images" / "val" / gt["images"][1]["file_name"]).unlink()
    for args, words in (
        ([str(tmp_path / "nope")], [str(tmp_path / "nope"), "dataset folder not found"]),
        (
            [str(root), "--split", "val"],
            ["image file not found", f"searched under {root / 'images' / 'val'}"],
        ),
    ):
        proc = posereg("data", "show", *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("posereg data show: error: "), proc.stderr
        assert all(w in lines[0] for w in words), lines[0]
