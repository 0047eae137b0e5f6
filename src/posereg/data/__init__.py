"""Top-down 2D data: loaders (COCO-format, MPII, Human3.6M), transforms, decoding, dataset, bad-input policy."""

from posereg.data.badinput import BadInputError, LoadReport, SkippedRecord
from posereg.data.dataset import Batch, Sample, TopDownDataset, TransformConfig, collate
from posereg.data.instances import InstanceTable
from posereg.data.transforms import (
    box_to_center_scale,
    crop_to_image,
    flip_keypoints,
    get_affine_transform,
)

__all__ = [
    "BadInputError",
    "LoadReport",
    "SkippedRecord",
    "Batch",
    "Sample",
    "TopDownDataset",
    "TransformConfig",
    "collate",
    "InstanceTable",
    "box_to_center_scale",
    "crop_to_image",
    "flip_keypoints",
    "get_affine_transform",
]
