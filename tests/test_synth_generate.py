"""End to end: the written COCO json and images, read back with pycocotools and OpenCV."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posereg.cli import main
from posereg.config import ConfigError, apply_overrides
from posereg.skeletons import COCO17, MPII16
from posereg.synth.body import skeleton_joint_indices
from posereg.synth.camera import DEFAULT_H36M_CAMERAS, project
from posereg.synth.generate import (
    SynthConfig,
    generate,
    generate_3d,
    render_index,
    sample_poses,
)
from posereg.synth.noise import COCO_SCALE, NoiseConfig
from posereg.synth.render import PARTS_PER_PERSON, own_part_ids, part_id

SEED = 11
NUM_IMAGES = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    path = generate(
        out, "val", NUM_IMAGES, seed=SEED, config=SynthConfig(), num_workers=0, progress=False
    )
    return path, json.loads(path.read_text())


def _anns(data: dict) -> list[dict]:
    assert len(data["annotations"]) > NUM_IMAGES  # several people per image on average
    return data["annotations"]


def test_pycocotools_reads_the_split(dataset: tuple[Path, dict]) -> None:
    path, data = dataset
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == NUM_IMAGES
    cat = coco.loadCats(1)[0]
    assert cat["keypoints"] == list(COCO17.keypoint_names)
    assert cat["skeleton"] == [[a + 1, b + 1] for a, b in COCO17.limbs]
    for img in coco.loadImgs(coco.getImgIds()):
        pixels = cv2.imread(str(path.parents[1] / "images" / "val" / img["file_name"]))
        assert pixels.shape == (img["height"], img["width"], 3)


def test_stored_3d_joints_project_to_the_clean_keypoints(dataset: tuple[Path, dict]) -> None:
    _, data = dataset
    worst = 0.0
    for a in _anns(data):
        kp = np.array(a["keypoints_clean"]).reshape(-1, 3)
        uv = project(np.array(a["joints_3d"])[None], np.array(a["camera"]["K"])[None])[0]
        vis = kp[:, 2] > 0
        worst = max(worst, float(np.abs(uv[vis] - kp[vis, :2]).max(initial=0.0)))
    assert worst < 0.01


def test_camera_pose_puts_people_on_the_floor(dataset: tuple[Path, dict]) -> None:
    """R, t map world (z up, floor z = 0) to camera: joints lie above the floor, feet near it."""
    _, data = dataset
    for a in _anns(data):
        R, t = np.array(a["camera"]["R"]), np.array(a["camera"]["t"])
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-7)
        world = (np.array(a["joints_3d"]) - t) @ R  # R^T (X - t), row-wise
        assert world[:, 2].min() > -1.0
        assert world[-2:, 2].min() < 250.0  # an ankle is near the floor unless lying/sitting high


def test_v0_exactly_when_the_clean_point_is_outside(dataset: tuple[Path, dict]) -> None:
    _, data = dataset
    size = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for a in _anns(data):
        h, w = size[a["image_id"]]
        uv = project(np.array(a["joints_3d"])[None], np.array(a["camera"]["K"])[None])[0]
        # inside = within the span of the pixel centres, [0, W - 1] x [0, H - 1]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
        for field in ("keypoints", "keypoints_clean"):
            kp = np.array(a[field]).reshape(-1, 3)
            np.testing.assert_array_equal(kp[:, 2] == 0, ~inside)
            assert np.all(kp[~inside] == 0.0)
        assert a["num_keypoints"] == int(inside.sum())
        # labels (noisy or clean) always lie inside the image: never negative, never past W - 1
        for field in ("keypoints", "keypoints_clean"):
            kp = np.array(a[field]).reshape(-1, 3)[inside]
            assert (kp[:, 0] >= 0).all() and (kp[:, 0] <= w - 1).all()
            assert (kp[:, 1] >= 0).all() and (kp[:, 1] <= h - 1).all()


def test_fields_are_consistent(dataset: tuple[Path, dict]) -> None:
    _, data = dataset
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for a in _anns(data):
        assert a["category_id"] == 1 and a["iscrowd"] == 0
        assert a["area"] >= 16 and a["bbox"][2] > 0 and a["bbox"][3] > 0
        assert a["bbox"][2] * a["bbox"][3] >= a["area"]  # the silhouette fills part of its box
        kp, clean = (
            np.array(a["keypoints"]).reshape(-1, 3),
            np.array(a["keypoints_clean"]).reshape(-1, 3),
        )
        np.testing.assert_array_equal(kp[:, 2], clean[:, 2])
        assert set(a["noise"]["outlier"]) <= set(np.flatnonzero(kp[:, 2] > 0).tolist())
        assert all(list(p) in [list(q) for q in COCO17.flip_pairs] for p in a["noise"]["swap"])
        assert np.array(a["joints_3d_h36m"]).shape == (17, 3)
        assert np.array(a["joints_3d_mpii"]).shape == (16, 3)


def test_labels_submitted_as_predictions_score_ap_one(dataset: tuple[Path, dict]) -> None:
    path, data = dataset
    coco = COCO(str(path))
    # People with no keypoint in the image (num_keypoints = 0) are ignored by COCOeval, and a
    # prediction of all-zero keypoints is no prediction: submit the others.
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in data["annotations"]
        if a["num_keypoints"] > 0
    ]
    assert len(results) > 0.9 * len(data["annotations"])
    ev = COCOeval(coco, coco.loadRes(results), "keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # AP
    assert ev.stats[5] == pytest.approx(1.0)  # AR


def test_visibility_agrees_with_the_rendered_part_ids(dataset: tuple[Path, dict]) -> None:
    """Re-render images: visible keypoints show their own body part, occluded ones do not."""
    _, data = dataset
    idx = skeleton_joint_indices(COCO17)
    face = set(range(5))  # nose, eyes, ears may hide behind their own head
    checked = {1: 0, 2: 0}
    for image_id in range(1, 9):
        scene = render_index(image_id - 1, SEED, "val", SynthConfig())
        stored = [a for a in data["annotations"] if a["image_id"] == image_id]
        kept = [p for p in range(len(scene.views)) if scene.area[p] >= 16]
        assert [a["area"] for a in stored] == [float(scene.area[p]) for p in kept]
        for a, p in zip(stored, kept, strict=True):
            kp = np.array(a["keypoints_clean"]).reshape(-1, 3)
            own = own_part_ids(p)
            for k, j in enumerate(idx):
                if kp[k, 2] == 0:
                    continue
                col, row = np.floor(kp[k, :2] + 0.5).astype(int)
                shown = int(scene.part_ids[row, col])
                checked[int(kp[k, 2])] += 1
                if kp[k, 2] == 2:
                    assert shown in own[j]
                elif k not in face:
                    assert shown not in own[j]
            # The box holds every pixel of the silhouette, and area counts them.
            x, y, w, h = a["bbox"]
            lo = part_id(p, 0)
            rows, cols = np.nonzero(
                (scene.part_ids >= lo) & (scene.part_ids < lo + PARTS_PER_PERSON)
            )
            assert len(rows) == a["area"]
            assert x <= cols.min() and cols.max() < x + w and y <= rows.min() and rows.max() < y + h
    assert checked[1] > 10 and checked[2] > 100


@pytest.mark.parametrize("preset", ["easy", "medium", "hard"])
def test_every_preset_renders_people(tmp_path: Path, preset: str) -> None:
    cfg = SynthConfig.preset(preset)
    path = generate(tmp_path, "train", 16, seed=8, config=cfg, num_workers=0, progress=False)
    data = json.loads(path.read_text())
    lo, hi = cfg.people_per_image
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=17)[1:]
    assert per_image.max() <= hi and (per_image >= 1).mean() > 0.9
    assert data["info"]["config"] == cfg.to_dict()
    assert SynthConfig.from_dict(data["info"]["config"]) == cfg


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_workers(
    dataset: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = dataset
    again = generate(tmp_path / "b", "val", NUM_IMAGES, seed=SEED, num_workers=2, progress=False)
    assert again.read_bytes() == path.read_bytes()
    for f in sorted((path.parents[1] / "images" / "val").iterdir()):
        assert (tmp_path / "b" / "images" / "val" / f.name).read_bytes() == f.read_bytes()
    # A shorter run is a prefix of a longer one; another seed differs.
    short = json.loads(
        generate(tmp_path / "c", "val", 20, seed=SEED, num_workers=0, progress=False).read_text()
    )
    full = json.loads(path.read_text())
    assert short["images"] == full["images"][:20]
    assert short["annotations"] == [a for a in full["annotations"] if a["image_id"] <= 20]
    other = generate(tmp_path / "d", "val", 3, seed=SEED + 1, num_workers=0, progress=False)
    assert json.loads(other.read_text())["annotations"][0] != full["annotations"][0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images": -1}, "num_images"),
        ({"seed": -3}, "seed"),
        ({"config": SynthConfig(occluder_prob=1.5)}, "occluder_prob"),
        ({"config": SynthConfig(noise=NoiseConfig(outlier_prob=-0.1))}, "noise.outlier_prob"),
        ({"config": SynthConfig(keypoint_set="coco18")}, "valid: coco17, mpii16, h36m17"),
        ({"config": SynthConfig(people_per_image=(3, 1))}, "people_per_image"),
        ({"config": SynthConfig(pose_classes=("flying",))}, "valid: standing"),
        ({"config": SynthConfig(camera="fisheye")}, "valid: random, h36m"),
        ({"split": "../escape"}, "split"),
    ],
)
def test_bad_parameters_fail_before_any_work(tmp_path: Path, kwargs: dict, message: str) -> None:
    out = tmp_path / "out"
    args = {
        "out_dir": out,
        "split": "train",
        "num_images": 4,
        "seed": 0,
        "num_workers": 0,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        generate(**args)
    assert not out.exists()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: SynthConfig.preset("medium", noise={"outlier_prob": -0.1}),
         "noise.outlier_prob: -0.1 is out of range; allowed: in [0, 1]"),
        (lambda: SynthConfig.preset("easy", occluder_prob=1.5),
         "occluder_prob: 1.5 is out of range; allowed: in [0, 1]"),
        (lambda: SynthConfig.preset("hard", image_size=(256.5, 256)),
         "image_size[0]: expected an integer, got 256.5"),
        (lambda: SynthConfig.from_dict({"noise": {"scael": 0.5}}),
         "unknown config key noise.scael; valid keys here: scale,"),
        (lambda: SynthConfig.preset("harder"), "unknown synth preset 'harder'; valid: easy, medium, hard, multi"),
        (lambda: apply_overrides(SynthConfig(), ["noise.scale=-1"]),
         "noise.scale: -1.0 is out of range; allowed: >= 0"),
        (lambda: apply_overrides(SynthConfig(), ["people_per_image=1..3..5"]),
         "people_per_image: expected 2 values, got 3"),
        (lambda: apply_overrides(SynthConfig(), ["occluders=3"]),
         "unknown config key occluders: no 'occluders' in the top level; valid: image_size,"),
        (lambda: SynthConfig(jpeg_quality=0).validate(), "jpeg_quality: 0 is out of range; allowed: in [1, 100]"),
        (lambda: SynthConfig(fov_deg=(60.0, 50.0)).validate(), "fov_deg must be (min, max) with min <= max"),
    ],
)  # fmt: skip
def test_bad_settings_are_config_errors_naming_the_key(build, message: str) -> None:
    """The generator's settings go through posereg.config: one from-dict check, one override parser."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_overrides_use_the_command_line_shorthands() -> None:
    """``--set``/``--noise`` values: ranges ``a..b``, lists ``a,b``, one number for a pair, ``none``."""
    cfg = apply_overrides(
        SynthConfig.preset("easy"),
        ["people_per_image=2..4", "image_size=128,96", "elevation_deg=-10..40",
         "pose_classes=standing,lying", "clutter_shapes=3", "camera_file=none",
         "photo_dir=photos", "noise.scale=0.7071", "jpeg_quality=80"],
    )  # fmt: skip
    assert (cfg.people_per_image, cfg.image_size, cfg.elevation_deg) == (
        (2, 4),
        (128, 96),
        (-10.0, 40.0),
    )
    assert cfg.pose_classes == ("standing", "lying") and cfg.clutter_shapes == (3, 3)
    assert cfg.camera_file is None and cfg.photo_dir == "photos" and cfg.jpeg_quality == 80
    # a noise override changes that field only; the preset's other settings stay
    easy = SynthConfig.preset("easy")
    assert cfg.noise == NoiseConfig(scale=0.7071) and cfg.roll_std_deg == easy.roll_std_deg
    assert apply_overrides(SynthConfig(), ["pose_classes=sitting"]).pose_classes == ("sitting",)


def test_unwritable_output_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="cannot write to output directory"):
        generate(blocker / "ds", "train", 2, num_workers=0, progress=False)


def test_other_keypoint_sets(tmp_path: Path) -> None:
    cfg = SynthConfig(keypoint_set="mpii16", people_per_image=(1, 1))
    data = json.loads(
        generate(
            tmp_path, "train", 3, seed=1, config=cfg, num_workers=0, progress=False
        ).read_text()
    )
    assert data["categories"][0]["keypoints"] == list(MPII16.keypoint_names)
    for a in data["annotations"]:
        assert len(a["keypoints"]) == 48 and np.array(a["joints_3d"]).shape == (16, 3)


def test_h36m_cameras_are_the_real_ones_rescaled(tmp_path: Path) -> None:
    cfg = SynthConfig(camera="h36m")
    data = json.loads(
        generate(
            tmp_path, "train", 4, seed=2, config=cfg, num_workers=0, progress=False
        ).read_text()
    )
    raw = json.loads(DEFAULT_H36M_CAMERAS.read_text())
    rotations = [np.array(c["R"]).T for c in raw.values()]
    for a in data["annotations"]:
        R = np.array(a["camera"]["R"])
        assert min(np.abs(R - r).max() for r in rotations) < 1e-8
        assert 280 < a["camera"]["K"][0][0] < 300  # ~1145 px * 256 / 1000


def test_cli_synth_then_show(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ds"
    rc = main(["data", "synth", "--out", str(out), "--num-images", "4", "--seed", "5", "--workers", "0",
               "--people-per-image", "2..2", "--image-size", "128", "160", "--noise", "off", "--quiet"])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "annotations" / "person_keypoints_train.json").read_text())
    assert {(im["height"], im["width"]) for im in data["images"]} == {(128, 160)}
    for a in data["annotations"]:
        assert a["keypoints"] == a["keypoints_clean"]  # --noise off
    png = tmp_path / "sheet.png"
    assert main(["data", "show", str(out), "--out", str(png), "--columns", "2"]) == 0
    sheet = cv2.imread(str(png))
    assert sheet.shape == (2 * 130, 2 * 162, 3)
    # Visible labels are filled dots in the person's colour (the last person drawn: blue),
    # blended at 75 % over the image.
    a = [a for a in data["annotations"] if a["image_id"] == 1][-1]
    assert len([b for b in data["annotations"] if b["image_id"] == 1]) == 2
    photo = cv2.imread(str(out / "images" / "train" / data["images"][0]["file_name"])).astype(float)
    kp = np.array(a["keypoints"]).reshape(-1, 3)
    xy = np.round(kp[kp[:, 2] == 2, :2]).astype(int)
    expected = 0.75 * np.array([255.0, 160.0, 0.0]) + 0.25 * photo[xy[:, 1], xy[:, 0]]
    hits = np.abs(sheet[xy[:, 1], xy[:, 0]] - expected).max(axis=1) <= 2
    assert hits.mean() > 0.5
    assert main(["data", "synth", "--out", str(out), "--noise", "swap_prob=2"]) == 2
    assert "swap_prob" in capsys.readouterr().err


def test_3d_only_mode_is_consistent_and_deterministic(tmp_path: Path) -> None:
    cfg = SynthConfig(keypoint_set="h36m17")
    s = sample_poses(3000, seed=4, config=cfg)
    np.testing.assert_allclose(project(s.joints_3d, s.K), s.keypoints_2d, atol=1e-9)
    h, w = cfg.image_size
    u, v = s.keypoints_2d[..., 0], s.keypoints_2d[..., 1]
    np.testing.assert_array_equal(s.visible, (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1))
    assert np.all(s.keypoints_2d_noisy[~s.visible] == 0)
    assert s.visible.mean() > 0.9 and np.all(s.joints_3d[..., 2] > 0)
    again = sample_poses(3000, seed=4, config=cfg)
    np.testing.assert_array_equal(again.keypoints_2d_noisy, s.keypoints_2d_noisy)
    path = generate_3d(tmp_path, "train", 100, seed=4, config=cfg)
    with np.load(path) as z:
        np.testing.assert_allclose(z["joints_3d"], s.joints_3d[:100], rtol=1e-6)
        assert list(z["keypoint_names"]) == list(s.keypoint_names)


@pytest.mark.slow
def test_label_spread_in_a_rendered_dataset_matches_the_model(tmp_path: Path) -> None:
    """End to end, with the rendered silhouette areas: (label - truth) / (k_i s) has sd
    COCO_SCALE (visible) and 2 COCO_SCALE (occluded) at the default; outliers are about 3 %."""
    path = generate(tmp_path, "train", 160, seed=3, num_workers=0, progress=False)
    data = json.loads(path.read_text())
    k = COCO17.oks_k
    z = {1: [], 2: []}
    outliers, labelled = 0, 0
    for a in data["annotations"]:
        kp, clean = (
            np.array(a["keypoints"]).reshape(-1, 3),
            np.array(a["keypoints_clean"]).reshape(-1, 3),
        )
        skip = set(a["noise"]["outlier"]) | {i for p in a["noise"]["swap"] for i in p}
        outliers += len(a["noise"]["outlier"])
        for i in np.flatnonzero(kp[:, 2] > 0):
            labelled += 1
            if i not in skip:
                z[int(kp[i, 2])].append((kp[i, :2] - clean[i, :2]) / (k[i] * np.sqrt(a["area"])))
    assert len(z[2]) > 1500 and len(z[1]) > 300
    np.testing.assert_allclose(np.std(z[2]), COCO_SCALE, rtol=0.1)
    np.testing.assert_allclose(np.std(z[1]), 2.0 * COCO_SCALE, rtol=0.1)
    assert abs(outliers / labelled - 0.03) < 4 * np.sqrt(0.03 * 0.97 / labelled)
