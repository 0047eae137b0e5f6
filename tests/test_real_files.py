"""Real files as they are (issue 20 §5): Human-Art's COCO json in MMPose's format (``keypoints``
with COCO-17, ``keypoints_21`` with 21 points, a person category that lists 21 names), read by
the loader, the evaluation (pycocotools) and the CLI; and every keypoint set the synthetic
generator lists as valid really generates."""

from __future__ import annotations

import copy
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

from _real_data import real, tiny_config
from posereg.config import Config, from_dict
from posereg.data import BadInputError, TopDownDataset
from posereg.skeletons import COCO17, HUMANART21, SKELETONS, resolve_skeleton

BIN = Path(sys.executable).parent
EXTRA = ("left_finger", "right_finger", "left_toe", "right_toe")


def _extra_points(kp17: np.ndarray) -> np.ndarray:
    """(4, 3) finger and toe tips a little beyond the wrists and ankles (unlabelled where they are)."""
    out = np.zeros((4, 3))
    for n, (joint, offset) in enumerate(
        ((9, (1, -2)), (10, (-1, -2)), (15, (1, -1)), (16, (-1, -1)))
    ):
        if kp17[joint, 2] > 0:
            out[n] = (kp17[joint, 0] + offset[0], kp17[joint, 1] + offset[1], kp17[joint, 2])
    return out


def humanart_like(coco: dict) -> dict:
    """The COCO sample json rewritten as Human-Art ships it (MMPose's format)."""
    data = copy.deepcopy(coco)
    cat = data["categories"][0]
    cat["keypoints"] = list(HUMANART21.keypoint_names)
    cat["skeleton"] = [[a + 1, b + 1] for a, b in HUMANART21.limbs]
    for ann in data["annotations"]:
        kp17 = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
        kp21 = np.concatenate([kp17, _extra_points(kp17)])
        ann["keypoints_21"] = [round(float(v), 2) for v in kp21.ravel()]
        ann["num_keypoints_21"] = int((kp21[:, 2] > 0).sum())
    return data


@pytest.fixture
def humanart(tmp_path: Path) -> tuple[Path, Path]:
    """(annotation json, image folder) of a small Human-Art-style set on real photos."""
    coco = json.loads(real("coco", "test_coco.json").read_text())
    images = tmp_path / "images"
    images.mkdir()
    for img in coco["images"]:
        shutil.copy(real("coco", img["file_name"]), images / img["file_name"])
    ann = tmp_path / "humanart_val.json"
    ann.write_text(json.dumps(humanart_like(coco)))
    return ann, images


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- the skeleton
def test_humanart21_follows_mmposes_table():
    assert HUMANART21.keypoint_names == (*COCO17.keypoint_names, *EXTRA)
    assert SKELETONS["humanart21"] is HUMANART21
    flip = HUMANART21.flip_index
    for left, right in (("left_finger", "right_finger"), ("left_toe", "right_toe")):
        assert flip[HUMANART21.index(left)] == HUMANART21.index(right)
    assert HUMANART21.sigmas[:17] == COCO17.sigmas and HUMANART21.sigmas[17:] == (0.089,) * 4
    named = {frozenset(HUMANART21.keypoint_names[i] for i in limb) for limb in HUMANART21.limbs}
    assert frozenset(("left_wrist", "left_finger")) in named
    assert frozenset(("right_ankle", "right_toe")) in named


# --------------------------------------------------------------------------- loading
def test_the_file_is_what_pycocotools_reads(humanart):
    ann, _ = humanart
    coco = COCO(str(ann))
    assert len(coco.loadCats(coco.getCatIds())[0]["keypoints"]) == 21
    assert all(len(a["keypoints_21"]) == 63 for a in coco.dataset["annotations"])


def test_coco17_loads_the_keypoints_field_with_one_notice(humanart, caplog):
    ann, images = humanart
    plain = TopDownDataset.from_coco(real("coco", "test_coco.json"), real("coco"))
    with caplog.at_level(logging.WARNING):
        ds = TopDownDataset.from_coco(ann, images, skeleton="coco17")
        TopDownDataset.from_coco(ann, images, skeleton="coco17")  # the same notice, not again
    assert len(ds) == len(plain) > 0
    np.testing.assert_array_equal(ds.table.keypoints, plain.table.keypoints)
    notices = [w for w in _warnings(caplog) if "21 keypoint names" in w]
    assert len(notices) == 1, _warnings(caplog)
    assert str(ann) in notices[0] and "data.keypoints_field: keypoints_21" in notices[0]


def test_auto_takes_the_names_the_field_holds(humanart):
    ann, images = humanart
    auto17 = resolve_skeleton("auto", ann)
    assert auto17.keypoint_names == COCO17.keypoint_names
    assert set(auto17.flip_pairs) == set(COCO17.flip_pairs)
    assert set(auto17.limbs) == set(COCO17.limbs)
    ds = TopDownDataset.from_coco(ann, images, skeleton="auto")  # not "every annotation skipped"
    assert len(ds) > 0 and ds.table.keypoints.shape[1] == 17

    auto21 = resolve_skeleton("auto", ann, "keypoints_21")
    assert auto21.keypoint_names == HUMANART21.keypoint_names
    assert set(auto21.limbs) == set(HUMANART21.limbs)
    ds21 = TopDownDataset.from_coco(ann, images, skeleton="auto", keypoints_field="keypoints_21")
    assert len(ds21) == len(ds) and ds21.table.keypoints.shape[1] == 21


def test_auto_on_keypoints_21_takes_mmposes_sigmas_for_the_tips(humanart):
    ann, _ = humanart
    assert resolve_skeleton("auto", ann, "keypoints_21").sigmas == HUMANART21.sigmas


def test_a_field_that_holds_another_count_is_one_error_naming_the_field_that_fits(humanart):
    """A 21-keypoint skeleton on the 17-value field: not "every annotation skipped", but what to set."""
    ann, images = humanart
    with pytest.raises(BadInputError) as e:
        TopDownDataset.from_coco(ann, images, skeleton="humanart21")
    msg = str(e.value)
    assert msg.startswith(f"{ann}: category id 1 (person): ") and "\n" not in msg
    assert "'keypoints' hold 17 keypoints, but skeleton humanart21 has 21" in msg
    assert "set data.keypoints_field: keypoints_21" in msg


def test_keypoints_21_with_humanart21(humanart):
    ann, images = humanart
    ds = TopDownDataset.from_coco(
        ann, images, skeleton="humanart21", keypoints_field="keypoints_21"
    )
    plain = TopDownDataset.from_coco(ann, images, skeleton="coco17")
    assert ds.skeleton == HUMANART21 and len(ds) == len(plain)
    np.testing.assert_array_equal(ds.table.keypoints[:, :17], plain.table.keypoints)
    raw = json.loads(ann.read_text())["annotations"]
    by_id = {a["id"]: np.asarray(a["keypoints_21"]).reshape(21, 3) for a in raw}
    for aid, kp in zip(ds.table.ann_ids, ds.table.keypoints, strict=True):
        np.testing.assert_allclose(kp[17:], by_id[int(aid)][17:])
    assert (ds.table.keypoints[:, 17:, 2] > 0).any()


def test_a_field_no_annotation_has_is_one_error_naming_file_and_field(humanart):
    ann, images = humanart
    with pytest.raises(BadInputError) as e:
        TopDownDataset.from_coco(ann, images, skeleton="coco17", keypoints_field="keypoints_99")
    msg = str(e.value)
    assert msg.startswith(f"{ann}: ") and "'keypoints_99'" in msg and "\n" not in msg
    assert "keypoints_21" in msg  # what the file does hold


def test_a_skeleton_that_is_not_the_categorys_prefix_is_still_refused(humanart):
    ann, images = humanart
    with pytest.raises(BadInputError, match="21 keypoints, but skeleton posetrack17 has 17"):
        TopDownDataset.from_coco(ann, images, skeleton="posetrack17")
    # 17 names, but the field holds 21: refused, saying which field holds what
    with pytest.raises(BadInputError, match="skeleton coco17 has 17"):
        TopDownDataset.from_coco(ann, images, skeleton="coco17", keypoints_field="keypoints_21")


# --------------------------------------------------------------------------- evaluation
def _perfect(ann: Path, field: str) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a[field], "score": 1.0}
        for a in json.loads(ann.read_text())["annotations"]
        if any(v > 0 for v in a[field][2::3])
    ]


def test_evaluation_reads_the_truth_from_the_chosen_field(humanart):
    from posereg.metrics.coco import evaluate_coco

    ann, _ = humanart
    ap21 = evaluate_coco(
        ann, _perfect(ann, "keypoints_21"), sigmas=HUMANART21.sigmas, keypoints_field="keypoints_21"
    ).ap
    assert ap21 == pytest.approx(1.0)
    assert evaluate_coco(ann, _perfect(ann, "keypoints"), sigmas=COCO17.sigmas).ap == pytest.approx(
        1.0
    )
    with pytest.raises(BadInputError, match="'keypoints_99'"):
        evaluate_coco(
            ann, _perfect(ann, "keypoints"), sigmas=COCO17.sigmas, keypoints_field="keypoints_99"
        )


def test_the_engine_evaluates_against_data_keypoints_field(humanart):
    """``posereg eval``'s metric step: the truth of its COCO AP is built from the same field."""
    from posereg.engine.evaluate import Predictions, evaluate_predictions

    ann, images = humanart
    cfg = from_dict(
        Config,
        {
            "data": {
                "val_ann": str(ann),
                "val_images": str(images),
                "skeleton": "humanart21",
                "keypoints_field": "keypoints_21",
            }
        },
    )
    ds = TopDownDataset.from_coco(
        ann, images, skeleton="humanart21", keypoints_field="keypoints_21"
    )
    n = len(ds)
    preds = Predictions(
        keypoints=ds.table.keypoints[..., :2].copy(),
        sigma=None,
        confidence=np.ones((n, 21)),
        normalized=np.zeros((n, 21, 2)),
    )
    result = evaluate_predictions(preds, ds, cfg)
    assert result.coco["labels"].ap == pytest.approx(1.0)


# --------------------------------------------------------------------------- the CLI
def test_train_with_a_missing_field_is_one_line_naming_file_and_field(humanart, tmp_path):
    ann, images = humanart
    cfg = tiny_config(
        tmp_path,
        "ha",
        data={
            "train_ann": str(ann),
            "train_images": str(images),
            "val_ann": str(ann),
            "val_images": str(images),
            "keypoints_field": "kpts",
        },
        train={"epochs": 1, "max_steps": 1},
    )
    proc = subprocess.run(
        [str(BIN / "posereg"), "train", str(cfg), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, proc.stderr
    assert str(ann) in errors[0] and "'kpts'" in errors[0], proc.stderr


# --------------------------------------------------------------------------- synth keypoint sets
def _rest_joints() -> np.ndarray:
    """The model's joints (J, 3) standing at rest (no rotation), body frame: x right, y forward."""
    from posereg.synth import body as B

    offsets = (B._REST * 1700.0)[None]
    return B.forward_kinematics(offsets, {}, np.eye(3)[None])[0][0]


def test_every_built_in_skeleton_is_a_synth_keypoint_set():
    from posereg.synth.body import keypoint_sets

    assert keypoint_sets() == tuple(SKELETONS)


@pytest.mark.parametrize(
    ("keypoint_set", "keypoint", "joint"),
    [
        ("crowdpose14", "top_head", "head_top"),
        ("crowdpose14", "neck", "thorax"),  # the base of the neck, between the shoulders
        ("aic14", "neck", "thorax"),
        ("halpe26", "neck", "thorax"),
        ("halpe26", "head", "head_top"),
        ("posetrack17", "head_bottom", "neck"),  # the model's neck is the upper neck
        ("posetrack17", "head_top", "head_top"),
        ("mpii16", "upper_neck", "neck"),
        ("h36m17", "neck", "neck"),
        ("h36m17", "head", "head_top"),
        ("humanart21", "left_finger", "left_hand"),
        ("humanart21", "right_toe", "right_toe"),
    ],
)
def test_synth_keypoints_are_the_body_joints_they_name(keypoint_set, keypoint, joint):
    from posereg.synth.body import joint_index, skeleton_keypoint_map

    skel = SKELETONS[keypoint_set]
    kmap = skeleton_keypoint_map(skel)
    i = skel.index(keypoint)
    assert not kmap.derived[i] and kmap.joint[i] == joint_index(joint)


def test_halpe_hip_and_feet_sit_where_they_are_named():
    from posereg.synth.body import joint_index, skeleton_keypoint_map

    skel = SKELETONS["halpe26"]
    kmap = skeleton_keypoint_map(skel)
    joints = _rest_joints()
    pts = kmap.points(joints)
    np.testing.assert_allclose(kmap.weights.sum(axis=1), 1.0)  # affine: moves with the body
    at = dict(zip(skel.keypoint_names, pts, strict=True))
    j = {n: joints[joint_index(n)] for n in ("left_hip", "right_hip", "left_ankle", "left_toe")}
    np.testing.assert_allclose(at["hip"], (j["left_hip"] + j["right_hip"]) / 2)
    heel, big, small = at["left_heel"], at["left_big_toe"], at["left_small_toe"]
    ankle, toe = j["left_ankle"], j["left_toe"]
    assert heel[1] < ankle[1] < toe[1] and heel[2] < ankle[2]  # behind and below the ankle
    assert small[0] < toe[0] < big[0]  # left is -x: the big toe on the inside, the small outside
    assert big[1] > ankle[1] and small[1] > ankle[1]  # both ahead of the ankle
    for left, right in skel.flip_pairs:  # mirror images of each other (x -> -x)
        np.testing.assert_allclose(pts[left] * (-1, 1, 1), pts[right], atol=1e-6)


@pytest.mark.parametrize("keypoint_set", list(SKELETONS))
def test_synth_generates_every_listed_keypoint_set(keypoint_set, tmp_path):
    from posereg.synth.generate import SynthConfig, generate, sample_poses

    skel = SKELETONS[keypoint_set]
    config = SynthConfig(keypoint_set=keypoint_set, people_per_image=(1, 1), image_size=(96, 96))
    path = generate(tmp_path, "val", 2, seed=1, config=config, num_workers=0, progress=False)
    data = json.loads(path.read_text())
    assert data["categories"][0]["keypoints"] == list(skel.keypoint_names)
    k = skel.num_keypoints
    for a in data["annotations"]:
        kp = np.asarray(a["keypoints_clean"]).reshape(k, 3)
        assert np.asarray(a["joints_3d"]).shape == (k, 3) and len(a["keypoints"]) == 3 * k
        assert np.isfinite(kp).all() and set(kp[:, 2].tolist()) <= {0, 1, 2}
        inside = (kp[:, 0] >= 0) & (kp[:, 0] <= 95) & (kp[:, 1] >= 0) & (kp[:, 1] <= 95)
        assert inside[kp[:, 2] > 0].all()
    ds = TopDownDataset.from_coco(path, tmp_path / "images" / "val", skeleton=keypoint_set)
    assert len(ds) > 0 and (ds.table.keypoints[..., 2] > 0).sum() > k
    poses = sample_poses(5, seed=1, config=config)
    assert poses.keypoints_2d.shape == (5, k, 2) and poses.joints_3d.shape == (5, k, 3)
    assert poses.keypoint_names == skel.keypoint_names


def test_an_unknown_keypoint_set_lists_only_sets_that_generate(tmp_path):
    """The CLI's one line; every set it lists is generated by the test above."""
    proc = subprocess.run(
        [str(BIN / "posereg"), "data", "synth", "--out", str(tmp_path / "x"), "--num-images", "1"]
        + ["--keypoint-set", "coco18"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "unknown keypoint_set 'coco18'; valid: " in lines[0]
    listed = lines[0].split("valid: ")[1].split(", ")
    assert listed == list(SKELETONS)
    assert not (tmp_path / "x").exists()


def test_data_show_draws_a_humanart_folder(humanart, tmp_path, caplog):
    """``posereg data show`` on the folder layout: every annotation drawn, none "not drawn"."""
    from posereg.cli import main

    ann, images = humanart
    root = tmp_path / "set"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(images, root / "images" / "val")
    shutil.copy(ann, root / "annotations" / "person_keypoints_val.json")
    out = tmp_path / "sheet.png"
    with caplog.at_level(logging.WARNING):
        assert main(["data", "show", str(root), "--split", "val", "--out", str(out)]) == 0
    assert out.is_file()
    assert not [w for w in _warnings(caplog) if "not drawn" in w], _warnings(caplog)
