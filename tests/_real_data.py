"""Where the real fixtures live: the samples posereg carries (src/posereg/samples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from posereg.samples import SAMPLES_DIR

REPO = Path(__file__).resolve().parents[1]
REAL = SAMPLES_DIR
BADINPUT = REPO / "tests" / "badinput"


def real(*parts: str) -> Path:
    """A path under the real fixtures; fails (not skips) when they are missing."""
    path = REAL.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real fixture {path} not found in the samples posereg carries")
    return path


def tiny_checkpoint(path: Path, metrics: dict | None = None) -> Path:
    """A real posereg checkpoint of a tiny random RLE model (ResNet-18 x0.25, 64x48, COCO-17)."""
    import dataclasses

    import torch

    from posereg.checkpoint import save_checkpoint
    from posereg.config import Config, to_dict
    from posereg.models import create_pose_model

    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        name="tiny",
        data=dataclasses.replace(cfg.data, input_size=[64, 48]),
        model=dataclasses.replace(cfg.model, backbone="resnet18", width=0.25),
    )
    torch.manual_seed(0)
    model = create_pose_model("resnet18", num_keypoints=17, width=0.25)
    state = {"model": model.state_dict(), "config": to_dict(cfg), "metrics": metrics or {}}
    return save_checkpoint(state, path)


def tiny_config(tmp_path: Path, name: str = "tiny", **sections: dict) -> Path:
    """A YAML config of a run on the real COCO fixtures that a 2-core machine trains in seconds
    (ResNet-18 x0.25 at 64x48, 2 epochs); ``sections`` update its sections key by key."""
    import yaml

    coco = REAL / "coco"
    cfg = {
        "name": name,
        "out_dir": str(tmp_path / "runs"),
        "data": {
            "train_ann": str(coco / "test_coco.json"),
            "train_images": str(coco),
            "val_ann": str(coco / "test_coco.json"),
            "val_images": str(coco),
            "input_size": [64, 48],
            "workers": 0,
        },
        "model": {"backbone": "resnet18", "width": 0.25, "pretrained": False},
        "optim": {"lr": 1.0e-3, "milestones": [1]},
        "train": {"epochs": 2, "batch_size": 2, "log_every": 1, "progress": False, "threads": 1},
        "eval": {"batch_size": 8, "num_vis": 4},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_multi_config(root: Path, task: str, sections: dict) -> Path:
    """A tiny generated ``multi`` set under ``root/multi`` (4 train, 2 val images of 128x128)
    and the YAML config ``root/tiny.yaml`` of a multi-person family ``task`` that trains on it
    into ``root/runs/tiny`` (``sections``: the model, train, optim and eval sections)."""
    import dataclasses

    import yaml

    from posereg.synth import SynthConfig, generate

    config = dataclasses.replace(SynthConfig.preset("multi"), image_size=(128, 128))
    for split, n, seed in (("train", 4, 0), ("val", 2, 1)):
        generate(root / "multi", split, n, seed=seed, config=config, num_workers=0, progress=False)
    cfg = {
        "task": task, "name": "tiny", "out_dir": str(root / "runs"),
        "data": {
            "train_ann": str(root / "multi/annotations/person_keypoints_train.json"),
            "train_images": str(root / "multi/images/train"),
            "val_ann": str(root / "multi/annotations/person_keypoints_val.json"),
            "val_images": str(root / "multi/images/val"),
            "workers": 0,
        },
        **sections,
    }  # fmt: skip
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
