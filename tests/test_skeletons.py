"""Skeletons: the built-in tables, YAML files, ``auto`` from a COCO json, the dict a run saves,
and a run on a custom 14-keypoint set (its skeleton in config.yaml, the checkpoint, predict, eval)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from _real_data import real
from posereg.config import Config, ConfigError, apply_overrides, from_dict
from posereg.skeletons import (
    AIC14,
    COCO17,
    CROWDPOSE14,
    HALPE26,
    MEAN_COCO_SIGMA,
    POSETRACK17,
    SKELETONS,
    Skeleton,
    SkeletonError,
    default_sigmas,
    infer_flip_pairs,
    resolve_skeleton,
)

BIN = Path(sys.executable).parent
# COCO-17 index of each CrowdPose-14 joint; top_head and neck are made from COCO points below
COCO_OF_CROWDPOSE = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]


def pairs_set(pairs) -> set[frozenset[int]]:
    return {frozenset(p) for p in pairs}


# --------------------------------------------------------------------------- built-ins
def test_the_built_ins_and_their_sizes():
    sizes = {n: s.num_keypoints for n, s in SKELETONS.items()}
    assert sizes == {
        "coco17": 17,
        "mpii16": 16,
        "h36m17": 17,
        "crowdpose14": 14,
        "aic14": 14,
        "posetrack17": 17,
        "halpe26": 26,
        "humanart21": 21,
    }


def test_built_in_sigmas_follow_the_datasets_own_evaluation_code():
    # crowdposetools: head top and neck 0.079; AI Challenger keypoint_eval delta/2;
    # halpecocotools: head, neck 0.026, hip 0.066, feet 0.079; PoseTrack: COCO's by position
    assert CROWDPOSE14.sigmas[CROWDPOSE14.index("top_head")] == 0.079
    assert CROWDPOSE14.sigmas[CROWDPOSE14.index("left_hip")] == 0.107
    assert AIC14.sigmas[AIC14.index("head_top")] == pytest.approx(0.01291456)
    assert AIC14.sigmas[AIC14.index("right_hip")] == pytest.approx(0.03909642)
    halpe = dict(zip(HALPE26.keypoint_names, HALPE26.sigmas, strict=True))
    assert (halpe["head"], halpe["neck"], halpe["hip"], halpe["left_heel"]) == (
        0.026,
        0.026,
        0.066,
        0.079,
    )
    assert HALPE26.sigmas[:17] == COCO17.sigmas and POSETRACK17.sigmas == COCO17.sigmas


@pytest.mark.parametrize("name", sorted(SKELETONS))
def test_dict_round_trip_through_json_and_yaml(name):
    skel = SKELETONS[name]
    as_json = json.loads(json.dumps(skel.to_dict()))
    as_yaml = yaml.safe_load(yaml.safe_dump(skel.to_dict()))
    assert Skeleton.from_dict(as_json) == skel
    assert Skeleton.from_dict(as_yaml) == skel
    assert resolve_skeleton(as_json) == skel  # what a run config holds resolves to the same


@pytest.mark.parametrize("name", sorted(SKELETONS))
def test_the_left_right_rule_recovers_every_built_in_flip_table(name):
    skel = SKELETONS[name]
    assert pairs_set(infer_flip_pairs(skel.keypoint_names)) == pairs_set(skel.flip_pairs)


def test_posetrack_flips_ears_not_head_points():
    flip = POSETRACK17.flip_index
    for centre in ("nose", "head_bottom", "head_top"):
        assert flip[POSETRACK17.index(centre)] == POSETRACK17.index(centre)
    assert flip[POSETRACK17.index("left_ear")] == POSETRACK17.index("right_ear")
    # coco17 on the same 17 points would have swapped head_bottom and head_top (its eyes)
    assert COCO17.flip_index[1] == 2


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["left_eye", "right_eye", "nose"], {(0, 1)}),
        (["Left Eye", "Right Eye"], {(0, 1)}),
        (["leftEye", "rightEye"], {(0, 1)}),
        (["LHip", "RHip", "MidHip"], {(0, 1)}),
        (["l_knee", "r_knee"], {(0, 1)}),
        (["knee_L", "knee_R"], {(0, 1)}),
        (
            ["front-left-paw", "front-right-paw", "back-left-paw", "back-right-paw"],
            {(0, 1), (2, 3)},
        ),
        (["left_eye", "right_ear"], set()),  # no partner with the same rest
        (["leftover", "rightmost"], set()),  # "left" inside a word is not a side token
        (["left_right_thing", "right_left_thing"], set()),  # two side tokens: no side
        (["left_hand", "left-hand", "right_hand"], set()),  # ambiguous: two left candidates
    ],
)
def test_flip_pairs_from_names(names, expected):
    assert set(infer_flip_pairs(names)) == expected


def test_skeleton_checks_its_tables():
    with pytest.raises(SkeletonError, match="sigmas: 2 sigmas for 3 keypoints"):
        Skeleton("x", ("a", "b", "c"), (), (), (0.1, 0.1))
    with pytest.raises(SkeletonError, match=r"flip_pairs: index pair \(0, 3\)"):
        Skeleton("x", ("a", "b", "c"), ((0, 3),), (), (0.1,) * 3)
    with pytest.raises(SkeletonError, match="more than one pair"):
        Skeleton("x", ("a", "b", "c"), ((0, 1), (0, 2)), (), (0.1,) * 3)
    with pytest.raises(SkeletonError, match="unique"):
        Skeleton("x", ("a", "a"), (), (), (0.1,) * 2)


# --------------------------------------------------------------------------- YAML files
def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


DOG = {
    "name": "dog5",
    "keypoint_names": ["nose", "left_ear", "right_ear", "left_paw", "right_paw"],
    "flip_pairs": [["left_ear", "right_ear"], [3, 4]],
    "limbs": [["nose", "left_ear"], ["nose", "right_ear"]],
    "sigmas": [0.026, 0.035, 0.035, 0.089, 0.089],
}


def test_yaml_skeleton(tmp_path):
    skel = resolve_skeleton(str(write_yaml(tmp_path / "dog.yaml", DOG)))
    assert skel.name == "dog5" and skel.num_keypoints == 5
    assert skel.flip_pairs == ((1, 2), (3, 4)) and skel.limbs == ((0, 1), (0, 2))
    assert skel.sigmas == (0.026, 0.035, 0.035, 0.089, 0.089)
    assert list(skel.flip_index) == [0, 2, 1, 4, 3]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"keypoint_names": None}, "keypoint_names", "expected a non-empty list of names"),
        ({"sigmas": [0.1, 0.1]}, "sigmas", "expected 5 numbers (one per keypoint), got 2"),
        ({"sigmas": [0.1, 0.1, -1, 0.1, 0.1]}, "sigmas", "positive numbers"),
        ({"flip_pairs": [["left_ear", "tail"]]}, "flip_pairs[0]", "unknown keypoint 'tail'"),
        ({"limbs": [[0, 9]]}, "limbs[0]", "neither a keypoint name nor an index in 0..4"),
        ({"flip_pairs": [["left_ear"]]}, "flip_pairs[0]", "expected a pair"),
        ({"flip_pairs": [[1, 2], [1, 3]]}, "flip_pairs", "more than one pair"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_yaml_errors_name_the_file_and_the_field(tmp_path, change, field, words):
    data = {**DOG, **change}
    if data.get("keypoint_names") is None:
        data.pop("keypoint_names")
        words = "missing"
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(SkeletonError) as e:
        resolve_skeleton(str(path))
    assert str(e.value).startswith(f"{path}: {field}: ")
    assert words in str(e.value)


def test_yaml_file_missing_or_not_yaml(tmp_path):
    with pytest.raises(SkeletonError, match=r"nothere\.yaml: skeleton file not found"):
        resolve_skeleton(str(tmp_path / "nothere.yaml"))
    bad = write_yaml(tmp_path / "bad.yaml", "keypoint_names: [a, b\n")
    with pytest.raises(SkeletonError, match=r"bad\.yaml: not valid YAML"):
        resolve_skeleton(str(bad))
    with pytest.raises(SkeletonError, match="unknown skeleton 'coco18'.*crowdpose14.*auto"):
        resolve_skeleton("coco18")


def test_yaml_without_sigmas_takes_defaults_and_warns(tmp_path, caplog):
    data = {k: v for k, v in DOG.items() if k != "sigmas"}
    with caplog.at_level(logging.WARNING, "posereg.skeletons"):
        skel = resolve_skeleton(str(write_yaml(tmp_path / "dog.yaml", data)))
    # nose is COCO's; the ears too; the paws are unknown names: the mean COCO sigma
    assert skel.sigmas == (0.026, 0.035, 0.035, MEAN_COCO_SIGMA, MEAN_COCO_SIGMA)
    assert "not comparable with published numbers" in caplog.text
    assert "3 of 5 keypoints" in caplog.text


def test_default_sigmas_by_name():
    assert default_sigmas(list(COCO17.keypoint_names)) == list(COCO17.sigmas)
    assert default_sigmas(["top_head", "head_top", "left_heel", "tail"]) == [
        0.079,  # CrowdPose's
        POSETRACK17.sigmas[POSETRACK17.index("head_top")],  # PoseTrack's (before MPII's)
        0.079,  # Halpe's
        MEAN_COCO_SIGMA,
    ]
    assert MEAN_COCO_SIGMA == pytest.approx(np.mean(COCO17.sigmas))


# --------------------------------------------------------------------------- auto
def crowdpose_like(coco: dict, *, sigmas: bool, one_based: bool = True) -> dict:
    """The real COCO fixture relabelled as a 14-keypoint CrowdPose-style set: COCO's body
    joints, head top = eye centre moved up by the eye-nose distance, neck = shoulder centre;
    no area, no iscrowd (as CrowdPose ships)."""
    names = list(CROWDPOSE14.keypoint_names)
    anns = []
    for a in coco["annotations"]:
        kp = np.asarray(a["keypoints"], dtype=float).reshape(17, 3)
        out = np.zeros((14, 3))
        out[:12] = kp[COCO_OF_CROWDPOSE]
        eyes, shoulders = kp[1:3], kp[5:7]
        if (eyes[:, 2] > 0).all() and kp[0, 2] > 0:
            centre = eyes[:, :2].mean(0)
            top = centre - (kp[0, :2] - centre)
            out[12] = [top[0], max(top[1], 0.0), 2]
        if (shoulders[:, 2] > 0).all():
            out[13] = [*shoulders[:, :2].mean(0), 2]
        anns.append(
            {
                "id": a["id"],
                "image_id": a["image_id"],
                "category_id": 1,
                "bbox": a["bbox"],
                "keypoints": out.ravel().round(2).tolist(),
                "num_keypoints": int((out[:, 2] > 0).sum()),
            }
        )
    shift = 1 if one_based else 0
    cat = {
        "id": 1,
        "name": "person",
        "keypoints": names,
        "skeleton": [[a + shift, b + shift] for a, b in CROWDPOSE14.limbs],
    }
    if sigmas:
        cat["sigmas"] = list(CROWDPOSE14.sigmas)
    return {"images": coco["images"], "annotations": anns, "categories": [cat]}


@pytest.fixture(scope="module")
def coco_json() -> dict:
    return json.loads(real("coco", "test_coco.json").read_text())


def test_auto_reads_names_limbs_and_sigmas_from_the_json(tmp_path, coco_json, caplog):
    path = tmp_path / "crowd.json"
    path.write_text(json.dumps(crowdpose_like(coco_json, sigmas=True)))
    with caplog.at_level(logging.WARNING, "posereg.skeletons"):
        skel = resolve_skeleton("auto", path)
    assert skel.name == "auto:person"
    assert skel.keypoint_names == CROWDPOSE14.keypoint_names
    assert skel.limbs == CROWDPOSE14.limbs  # 1-based in the file, 0-based here
    assert pairs_set(skel.flip_pairs) == pairs_set(CROWDPOSE14.flip_pairs)
    assert skel.sigmas == CROWDPOSE14.sigmas
    assert "not comparable" not in caplog.text


def test_auto_without_sigmas_warns_and_uses_the_name_table(tmp_path, coco_json, caplog):
    path = tmp_path / "crowd.json"
    path.write_text(json.dumps(crowdpose_like(coco_json, sigmas=False, one_based=False)))
    with caplog.at_level(logging.WARNING, "posereg.skeletons"):
        skel = resolve_skeleton("auto", path)
    assert skel.sigmas == CROWDPOSE14.sigmas  # every name is in a built-in table
    assert skel.limbs == CROWDPOSE14.limbs  # index 0 present: read as 0-based
    assert "not comparable with published numbers" in caplog.text
    assert "read as 0-based" in caplog.text


def test_auto_errors_name_the_file(tmp_path, coco_json):
    with pytest.raises(SkeletonError, match="'auto' reads the skeleton from a COCO annotation"):
        resolve_skeleton("auto", None)
    no_kpts = tmp_path / "nokp.json"
    no_kpts.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1}]}))
    with pytest.raises(
        SkeletonError, match=rf"{no_kpts}: categories: no category with a 'keypoints'"
    ):
        resolve_skeleton("auto", no_kpts)
    data = crowdpose_like(coco_json, sigmas=True)
    data["categories"][0]["skeleton"] = [[1, 15]]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(SkeletonError, match=r"category 1 \(person\): skeleton: limb indices"):
        resolve_skeleton("auto", bad)
    data["categories"][0]["skeleton"] = []
    data["categories"][0]["sigmas"] = [0.1] * 3
    bad.write_text(json.dumps(data))
    with pytest.raises(SkeletonError, match=r"sigmas: expected 14 numbers"):
        resolve_skeleton("auto", bad)


def test_config_takes_a_name_a_file_auto_or_a_dict():
    cfg = apply_overrides(Config(), ["data.skeleton=auto"])
    assert cfg.data.skeleton == "auto"
    cfg = from_dict(Config, {"data": {"skeleton": CROWDPOSE14.to_dict()}})
    assert resolve_skeleton(cfg.data.skeleton) == CROWDPOSE14
    with pytest.raises(ConfigError, match="data.skeleton"):
        from_dict(Config, {"data": {"skeleton": 14}})


# --------------------------------------------------------------------------- a run
@pytest.mark.slow
def test_a_run_on_a_14_keypoint_set_with_auto_saves_and_reuses_its_skeleton(tmp_path, coco_json):
    """Train on a CrowdPose-style json (no area, no iscrowd, no sigmas in the file) with
    skeleton: auto; the run config and the checkpoint keep the resolved skeleton, predict and
    eval rebuild it from there (the json is gone by then), and evaluation uses its sigmas."""
    import torch

    from posereg.checkpoint import load_checkpoint
    from posereg.config import load_config
    from posereg.engine.train import train
    from posereg.predict import Predictor

    data = crowdpose_like(coco_json, sigmas=False)
    ann = tmp_path / "crowd.json"
    ann.write_text(json.dumps(data))
    images = real("coco")
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "name": "crowd",
                "out_dir": str(tmp_path / "runs"),
                "data": {
                    "train_ann": str(ann),
                    "train_images": str(images),
                    "val_ann": str(ann),
                    "val_images": str(images),
                    "skeleton": "auto",
                    "input_size": [64, 48],
                    "workers": 0,
                },
                "model": {"backbone": "resnet18", "width": 0.25, "pretrained": False},
                "train": {
                    "epochs": 1,
                    "max_steps": 2,
                    "batch_size": 4,
                    "progress": False,
                    "threads": 1,
                },
                "eval": {"batch_size": 8, "num_vis": 2},
            }
        )
    )
    torch.set_num_threads(1)
    result = train(load_config(cfg_path), device="cpu")
    run = result.run_dir
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]["skeleton"]
    expected = resolve_skeleton("auto", ann)
    assert Skeleton.from_dict(saved) == expected
    assert expected.sigmas == CROWDPOSE14.sigmas  # from the name table (no sigmas in the file)
    state = load_checkpoint(run / "last.pt")
    assert Skeleton.from_dict(state["config"]["data"]["skeleton"]) == expected
    # evaluated with the 14 sigmas (COCO-17's 17 would not even fit), no KeyError 'area'
    assert 0.0 <= result.metrics["AP"] <= 1.0

    ann.unlink()  # predict and eval must not need the training json to know the skeleton
    predictor = Predictor.from_checkpoint(run / "last.pt", device="cpu")
    assert predictor.skeleton == expected
    pose = predictor(str(images / "000000000785.jpg"), boxes=[[280, 40, 220, 380]])
    assert pose.keypoints.shape == (1, 14, 2)

    # posereg eval with a config that says coco17: the checkpoint's skeleton wins
    ann.write_text(json.dumps(data))
    proc = subprocess.run(
        [
            str(BIN / "posereg"),
            "eval",
            str(cfg_path),
            "--checkpoint",
            str(run / "last.pt"),
            "--set",
            "data.skeleton=coco17",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "using the skeleton saved in the checkpoint (auto:person)" in proc.stderr
    assert "AP: " in proc.stdout
