"""The bad-input corpus (tests/badinput/): every case is a clear error naming file and record,
or a counted skip that the load report shows. Never a crash deep in a worker, never a silent drop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from _real_data import BADINPUT
from posereg.data import BadInputError, TopDownDataset, collate
from posereg.data.image_io import decode_bgr, read_bytes, read_image
from posereg.data.mpii import load_mpii_instances

# json case -> (skip reason, the bad record) : a counted skip, the good annotation still loads
SKIPS = {
    "wrong_length.json": ("wrong keypoint length", "annotation id 2 (image id 1)"),
    "nan_keypoint.json": ("non-finite keypoint", "annotation id 2 (image id 1)"),
    "inf_keypoint.json": ("non-finite keypoint", "annotation id 2 (image id 1)"),
    "bad_visibility.json": ("invalid visibility code", "annotation id 2 (image id 1)"),
    "zero_area_box.json": ("non-positive box size", "annotation id 2 (image id 1)"),
    "negative_box.json": ("non-positive box size", "annotation id 2 (image id 1)"),
    "unknown_image_id.json": ("unknown image_id", "annotation id 2 (image id 99)"),
    "missing_file.json": ("image file not found", "annotation id 2 (image id 2)"),
}

# json case -> (record named in the error, words of the problem)
ERRORS = {
    "duplicate_image_id.json": ("image id 1", "duplicate image id"),
    "duplicate_ann_id.json": ("annotation id 1 (image id 1)", "duplicate annotation id"),
    # image 1 is "../badinput/ok.jpg", which stays inside the root and is fine
    "path_escape.json": ("image id 2", "points outside the image root"),
    "absolute_path.json": ("image id 1", "is absolute"),
    "empty_dataset.json": ("", "no usable instance (empty dataset)"),
    "all_unlabelled.json": ("", "no labelled keypoints: 1"),
    "not_json.json": ("", "not valid JSON"),
}

# image case -> words of the problem, raised at __getitem__ naming the image file and record
BAD_IMAGES = {
    "truncated_image.json": ("truncated.jpg", "truncated JPEG"),
    "corrupt_image.json": ("corrupt.jpg", "premature end of data segment"),
    "not_an_image.json": ("not_an_image.jpg", "cannot decode image"),
    "empty_image.json": ("empty.jpg", "image file is empty"),
    "size_mismatch.json": ("ok.jpg", "the annotation file says 480x640"),
}


def load(case: str, **kwargs) -> TopDownDataset:
    return TopDownDataset.from_coco(BADINPUT / case, BADINPUT, **kwargs)


@pytest.mark.parametrize("case", sorted(SKIPS))
def test_bad_record_is_a_counted_skip(case):
    reason, record = SKIPS[case]
    ds = load(case)
    assert len(ds) == 1 and ds.report.num_skipped == 1
    assert ds.report.counts() == {reason: 1}
    assert ds.report.skipped[0].record == record
    assert f"{reason}: 1" in ds.report.summary() and record in ds.report.summary()
    assert ds[0].ann_id == 1  # the good annotation is intact


@pytest.mark.parametrize("case", sorted(SKIPS))
def test_bad_record_is_an_error_when_strict(case):
    reason, record = SKIPS[case]
    with pytest.raises(BadInputError) as info:
        load(case, strict=True)
    assert record in str(info.value) and reason in str(info.value)
    assert info.value.file.endswith(case) or "missing.jpg" in info.value.file


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_file_is_an_error_naming_file_and_record(case):
    record, problem = ERRORS[case]
    with pytest.raises(BadInputError) as info:
        load(case)
    assert info.value.file == str(BADINPUT / case)
    assert info.value.record == record
    assert problem in str(info.value)


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_unreadable_image_raises_with_file_and_record(case):
    image, problem = BAD_IMAGES[case]
    ds = load(case)
    with pytest.raises(BadInputError) as info:
        ds[0]
    assert info.value.file == str(BADINPUT / image)
    assert "annotation id 1 (image id 1" in info.value.record
    assert problem in str(info.value)


def test_unreadable_image_crosses_a_worker_as_the_same_error():
    loader = DataLoader(
        load("truncated_image.json"), batch_size=1, num_workers=1, collate_fn=collate
    )
    batches = iter(loader)
    with pytest.raises(BadInputError) as info:
        next(batches)
    batches._shutdown_workers()  # now, not whenever garbage collection gets to it
    message = str(info.value).splitlines()[-1]  # DataLoader puts the worker traceback first
    assert message.endswith(
        f"{BADINPUT / 'truncated.jpg'}: annotation id 1 (image id 1, truncated.jpg): "
        "corrupt or truncated JPEG (Premature end of JPEG file)"
    )


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_unreadable_image_skip_mode_is_counted_in_the_batch(case):
    ds = load(case, on_bad_image="skip")
    batch = collate([ds[0], ds[0]])
    assert batch.num_invalid == 2 and not batch.valid.any()
    assert float(batch.target_weight.abs().sum()) == 0.0 and float(batch.image.abs().sum()) == 0.0
    assert all(BAD_IMAGES[case][0] in e for e in batch.errors)


def test_verify_images_finds_and_drops_unreadable_images():
    ds = load("truncated_image.json")
    report = ds.verify_images()
    assert report.counts() == {"unreadable image": 1} and "truncated.jpg" in report.skipped[0].file
    with pytest.raises(BadInputError, match="no usable instance left"):
        ds.verify_images(drop=True)
    assert load("ok.json").verify_images().num_skipped == 0


@pytest.mark.parametrize("name", ["grey.png", "grey.jpg", "grey16.png", "rgba.png", "palette.png"])
@pytest.mark.parametrize("decoder", ["simplejpeg", "opencv"])
def test_any_input_mode_becomes_3_channel_uint8(name, decoder):
    reference = read_image(BADINPUT / "ok.jpg").astype(float)  # BGR
    decoded = decode_bgr(read_bytes(BADINPUT / name), jpeg_decoder=decoder).pixels
    assert decoded.dtype == np.uint8 and decoded.shape == (96, 64, 3)
    if name.startswith("grey"):
        assert np.array_equal(decoded[..., 0], decoded[..., 2])  # grey replicated
        grey_ref = reference @ np.array([0.114, 0.587, 0.299])
        assert np.abs(decoded[..., 0] - grey_ref).mean() < 3.0  # 16 bit rounded back to 8
    else:
        assert np.abs(decoded - reference).mean() < 6.0  # alpha dropped, palette expanded


def test_modes_load_through_the_dataset():
    ds = load("modes.json")
    assert len(ds) == 5
    batch = collate([ds[i] for i in range(5)])
    assert batch.valid.all() and torch.isfinite(batch.image).all()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("mpii_wrong_length.json", "wrong keypoint length"),
        ("mpii_bad_scale.json", "non-positive box size"),
    ],
)
def test_mpii_bad_entries_are_counted(case, reason):
    table, report = load_mpii_instances(BADINPUT / case, BADINPUT)
    assert len(table) == 1 and report.counts() == {reason: 1}
    assert report.skipped[0].record == "entry #1 (ok.jpg)"
