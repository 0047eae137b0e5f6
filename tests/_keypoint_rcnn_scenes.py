"""Small Keypoint R-CNNs and stick-figure scenes for the CPU tests of multi-person models
(tests/test_keypoint_rcnn.py, tests/test_export_multiperson.py)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

# A small model for the CPU: half-width ResNet-18 FPN with 32 channels, two 32-channel keypoint
# convs, anchors for people 30-100 px tall in 128x128 images, no resize.
SMALL = dict(
    backbone="resnet18_fpn_w0.5",
    min_size=128,
    max_size=128,
    anchor_sizes=(16, 32, 64, 128, 256),
    fpn_channels=32,
    keypoint_layers=(32, 32),
    box_representation=128,
    box_batch_size_per_image=32,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
)

# COCO-17 keypoints of a standing figure in a unit box (x right, y down) and its limbs
TEMPLATE = np.array(
    [[.50, .08], [.55, .05], [.45, .05], [.62, .07], [.38, .07], [.72, .22], [.28, .22],
     [.82, .40], [.18, .40], [.88, .55], [.12, .55], [.65, .55], [.35, .55], [.67, .77],
     [.33, .77], [.68, .97], [.32, .97]]
)  # fmt: skip
LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (5, 6), (11, 12), (5, 11), (6, 12), (11, 13), (13, 15),
         (12, 14), (14, 16), (0, 5), (0, 6)]  # fmt: skip


def scene(seed: int, num_people: int, size: int = 128) -> tuple[torch.Tensor, dict]:
    """An image (3, size, size) in [0, 1] with ``num_people`` stick figures side by side (grey
    limbs, one colour per keypoint) and their torchvision detection target."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 30, np.uint8)
    boxes, keypoints = [], []
    x = 4.0
    for _ in range(num_people):
        w, h = rng.uniform(28, 36), rng.uniform(70, 100)
        y = rng.uniform(2, size - h - 2)
        box = np.array([x, y, x + w, y + h])
        x += w + rng.uniform(4, 8)
        kp = box[:2] + TEMPLATE * (box[2:] - box[:2])
        px = np.round(kp).astype(int)
        for a, b in LIMBS:
            cv2.line(image, tuple(px[a].tolist()), tuple(px[b].tolist()), (200, 200, 200), 2)
        for k, p in enumerate(px):
            colour = (k * 15 % 256, (255 - k * 13) % 256, (80 + k * 9) % 256)
            cv2.circle(image, tuple(p.tolist()), 2, colour, -1)
        boxes.append(box)
        keypoints.append(np.concatenate([kp, np.full((17, 1), 2.0)], axis=1))
    target = {
        "boxes": torch.tensor(np.array(boxes), dtype=torch.float32),
        "labels": torch.ones(num_people, dtype=torch.int64),
        "keypoints": torch.tensor(np.array(keypoints), dtype=torch.float32),
    }
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255, target
