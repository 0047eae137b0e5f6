"""Image-level multi-person data: every person of a COCO-format image as one detection target.

For the models that find people themselves (Keypoint R-CNN with an RLE head, the dense
one-stage model; RLE paper, Tab. 2c and 2d). One item is one image and all of its people, in
torchvision's detection target format (docs/multiperson.md):

- ``image``: (3, H, W) float32 RGB in [0, 1] (not mean/std normalised: detection models do it).
- ``target["boxes"]``: (N, 4) float32 x1, y1, x2, y2 in image pixels.
- ``target["labels"]``: (N,) int64, all 1 (person).
- ``target["keypoints"]``: (N, K, 3) float32 x, y, v in image pixels; v is the COCO code
  (0 unlabelled, 1 labelled occluded, 2 labelled visible) and x = y = 0 where v = 0.
- ``target["crowd_boxes"]``: (C, 4) float32 x1, y1, x2, y2 of the image's crowd regions.
- ``target["image_id"]``: int, the json's image id.

Coordinates follow torchvision's v2 kernels, which match posereg's (``data/transforms.py``):
keypoints are continuous pixel coordinates with pixel centres at integers (a horizontal flip maps
x to W - 1 - x), boxes have their edges on pixel borders (a flip maps x1 to W - x2).

Crowd regions (``iscrowd: 1``) are handled as COCO's evaluation does: they are not targets, and
a detection inside one counts neither as a hit nor as a false positive (COCOeval matches it to
the crowd region with IoU = area(d & g) / area(d)). A model should therefore leave every
detection candidate (anchor, proposal, feature-map point) whose own area lies mostly inside a
``crowd_boxes`` entry out of its classification loss, neither positive nor negative; the boxes
are the regions' bounding boxes (the crowd masks are not read). torchvision's detection models
ignore keys they do not know, and their own ``GeneralizedRCNNTransform`` does not rescale
``crowd_boxes``: a model that uses them applies the same scale itself.

People with no labelled keypoint (all v = 0, e.g. COCO people too small to label) are kept as
box-only targets, as torchvision's and Detectron2's keypoint recipes do: the detector learns them
as people, the keypoint loss (weighted by v > 0) gets nothing from them, and COCO's keypoint
evaluation ignores them. The dataset counts them in its load report (one warning per file).

Bad input follows posereg's policy (:mod:`posereg.data.badinput`): records are read by
:func:`posereg.data.coco.load_coco_instances`; a malformed person record is a counted skip
(``strict``: an error), and its image is then left out whole, counted, since the unread person
would otherwise be trained as background. A corrupt, truncated or missing image, or one whose
size differs from the json's, raises one :class:`BadInputError` naming the file and image.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from posereg.config import (
    ConfigError,
    MultiPersonDataConfig,
    MultiPersonTransformConfig,
    validate,
)
from posereg.data.badinput import BadInputError, LoadReport
from posereg.data.image_io import check_image_size, decode_bgr, read_bytes
from posereg.data.instances import InstanceTable, keypoints_outside_image, missing_image_detail
from posereg.skeletons import Skeleton, resolve_skeleton

__all__ = [
    "KeypointVisibility",
    "RandomHorizontalFlipSwap",
    "build_multiperson_transforms",
    "MultiPersonDataset",
    "collate_fn",
    "build_multiperson_loader",
]

# Skip reasons of load_coco_instances that say nothing against the rest of the image: the record
# is not a person of it, or lies wholly outside it, or the image itself is gone (checked below).
_HARMLESS_SKIPS = {
    "not the person category",
    "box outside the image",
    "unknown image_id",
    "image file not found",
}
# load_coco_instances names a record of a known image "annotation id A (image id I)".
_RECORD_IMAGE_ID = re.compile(r"\(image id (-?\d+)\)$")


class KeypointVisibility(tv_tensors.TVTensor):
    """(N, K) COCO visibility codes that ride along a sample through ``transforms.v2``.

    No v2 kernel is registered for this type, so geometric transforms pass it through unchanged;
    :class:`RandomHorizontalFlipSwap` permutes it with the keypoints and
    ``v2.SanitizeBoundingBoxes`` drops the rows of the boxes it drops.
    """


class RandomHorizontalFlipSwap(v2.RandomHorizontalFlip):
    """``v2.RandomHorizontalFlip`` that also swaps left and right keypoints.

    torchvision mirrors the coordinates (x -> W - 1 - x) but does not know the skeleton: after
    the flip, keypoint i of a person is the mirror image of its keypoint ``flip_index[i]``.

    Arguments:
        flip_index: (K,) permutation, ``Skeleton.flip_index``.
        p: probability of the flip.

    Example:
        >>> from posereg.skeletons import COCO17
        >>> flip = RandomHorizontalFlipSwap(COCO17.flip_index, p=1.0)
    """

    def __init__(self, flip_index: Sequence[int], p: float = 0.5) -> None:
        super().__init__(p=p)
        self.flip_index = torch.as_tensor(np.asarray(flip_index), dtype=torch.int64)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, params)
        if isinstance(out, tv_tensors.KeyPoints | KeypointVisibility):  # (N, K, 2) / (N, K)
            out = tv_tensors.wrap(out[:, self.flip_index], like=out)
        return out


def build_multiperson_transforms(
    config: MultiPersonTransformConfig, skeleton: Skeleton
) -> v2.Transform | None:
    """The random augmentation and resize of :class:`MultiPersonTransformConfig`, as one v2 pipeline.

    Works on a sample dict with ``image`` (``tv_tensors.Image``), ``boxes``
    (``tv_tensors.BoundingBoxes``), ``keypoints`` (``tv_tensors.KeyPoints`` (N, K, 2)) and
    ``visibility`` (:class:`KeypointVisibility`). The dataset clamps and sanitizes the boxes
    after it. Returns None when there is nothing to do.

    Raises:
        ConfigError: a setting out of its range (``posereg.config.validate``), naming it.
    """
    validate(config)
    if config.scale[0] > config.scale[1]:
        raise ConfigError(f"scale must be (min, max) with min <= max, got {config.scale}")
    steps: list[v2.Transform] = []
    if config.augment:
        if config.flip_prob > 0:
            steps.append(RandomHorizontalFlipSwap(skeleton.flip_index, p=config.flip_prob))
        if config.rotation_deg > 0 or config.scale != (1.0, 1.0) or config.translate > 0:
            steps.append(
                v2.RandomAffine(
                    degrees=config.rotation_deg,
                    translate=(config.translate, config.translate),
                    scale=config.scale,
                )
            )
        if config.color_jitter > 0:
            j = config.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    if config.max_size is not None:
        steps.append(v2.Resize(size=None, max_size=config.max_size))
    return v2.Compose(steps) if steps else None


def _sanitized_fields(sample: dict) -> tuple[Tensor, ...]:
    """What ``v2.SanitizeBoundingBoxes`` drops with the boxes: one row per person / region."""
    return sample["labels"], sample["keypoints"], sample["visibility"], sample["is_crowd"]


class MultiPersonDataset(Dataset):
    """Images with all their people as torchvision detection targets (see the module docstring).

    Build it with :meth:`from_coco`, which keeps the loader's :class:`LoadReport` in
    ``self.report`` (logged once at construction, a warning when anything was skipped or
    changed).

    Arguments:
        table: the person instances, loaded with ``keep_crowd=True`` and
            ``skip_unlabelled=False`` (:func:`posereg.data.coco.load_coco_instances`).
        skeleton: keypoint layout (its flip permutation is used by the flip).
        transforms: a v2 transform of the sample dict (:func:`build_multiperson_transforms`);
            None: the images as stored.
        keep_empty_images: keep images without any person target (negative images).
        min_box_size: boxes narrower or lower than this after the transforms are dropped.
        report: the loader's report; skips and adjustments of this class are added to it.
        check_files: check that the image files of images without people exist too (the
            loader checked the others).
        strict: a missing image file raises instead of being a counted skip.

    Attributes:
        dropped: ``Counter`` of the people (``"people"``) and crowd regions (``"crowd regions"``)
            that ``v2.SanitizeBoundingBoxes`` removed after the transforms, in this process (a
            DataLoader worker counts its own).

    Example:
        >>> ds = MultiPersonDataset.from_coco("ann.json", "images")  # doctest: +SKIP
        >>> image, target = ds[0]  # doctest: +SKIP
        >>> # image (3, H, W) in [0, 1]; target["boxes"] (N, 4) x1y1x2y2, "keypoints" (N, K, 3)
    """

    def __init__(
        self,
        table: InstanceTable,
        skeleton: Skeleton | str | dict = "coco17",
        transforms: Callable[[dict], dict] | None = None,
        keep_empty_images: bool = True,
        min_box_size: float = 1.0,
        report: LoadReport | None = None,
        check_files: bool = True,
        strict: bool = False,
    ) -> None:
        if table.crowd_boxes is None or table.crowd_image_index is None:
            raise ValueError(
                f"{table.source}: the table was loaded without its crowd regions; "
                "use load_coco_instances(..., keep_crowd=True) or MultiPersonDataset.from_coco"
            )
        self.table = table
        self.skeleton = resolve_skeleton(skeleton)
        if table.keypoints.shape[1] != self.skeleton.num_keypoints:
            raise ValueError(
                f"{table.source}: {table.keypoints.shape[1]} keypoints per person but skeleton "
                f"{self.skeleton.name} has {self.skeleton.num_keypoints}"
            )
        self.transforms = transforms
        self.sanitize = v2.Compose(
            [
                v2.ClampBoundingBoxes(),
                v2.SanitizeBoundingBoxes(min_size=min_box_size, labels_getter=_sanitized_fields),
            ]
        )
        self.report = report if report is not None else LoadReport(table.source)
        self.dropped: Counter[str] = Counter()
        self._count_unlabelled()
        self.image_index = self._select_images(keep_empty_images, check_files, strict)
        # instance and crowd-region indices of each kept image, in the json's order
        people = np.argsort(table.image_index, kind="stable")
        starts = np.searchsorted(table.image_index[people], self.image_index)
        ends = np.searchsorted(table.image_index[people], self.image_index, side="right")
        self._people = [people[s:e] for s, e in zip(starts, ends, strict=True)]
        crowd = np.argsort(table.crowd_image_index, kind="stable")
        starts = np.searchsorted(table.crowd_image_index[crowd], self.image_index)
        ends = np.searchsorted(table.crowd_image_index[crowd], self.image_index, side="right")
        self._crowd = [crowd[s:e] for s, e in zip(starts, ends, strict=True)]
        if len(self.image_index) == 0:
            raise BadInputError(table.source, "", "no usable image.\n" + self.report.summary())
        # OpenCV single-threaded, as TopDownDataset: DataLoader workers are the parallelism.
        cv2.setNumThreads(1)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_coco(
        cls,
        ann_file: str | Path,
        image_root: str | Path,
        *,
        skeleton: Skeleton | str | dict = "coco17",
        transform: MultiPersonTransformConfig | None = None,
        keep_empty_images: bool = True,
        keypoints_field: str = "keypoints",
        check_files: bool = True,
        strict: bool = False,
    ) -> MultiPersonDataset:
        """From a COCO person_keypoints json; see :func:`posereg.data.coco.load_coco_instances`.

        Arguments:
            ann_file, image_root: the json and the folder its ``file_name`` entries are
                relative to.
            skeleton: a built-in name, a YAML file, ``auto`` or a dict (``data.skeleton``).
            transform: augmentation settings (None: none).
            keep_empty_images: keep images without people.
            keypoints_field: the annotation field the keypoints are read from
                (``keypoints_clean``: the synthetic sets' noise-free truth).
            check_files: check that every image file exists (missing ones are counted skips).
            strict: raise :class:`BadInputError` on the first bad record instead of skipping it.
        """
        from posereg.data.coco import load_coco_instances

        skel = resolve_skeleton(skeleton, ann_file, keypoints_field)
        table, report = load_coco_instances(
            ann_file,
            image_root,
            skel,
            skip_unlabelled=False,
            check_files=check_files,
            strict=strict,
            keypoints_field=keypoints_field,
            keep_crowd=True,
        )
        config = transform if transform is not None else MultiPersonTransformConfig()
        ds = cls(
            table,
            skel,
            build_multiperson_transforms(config, skel),
            keep_empty_images=keep_empty_images,
            min_box_size=config.min_box_size,
            report=report,
            check_files=check_files,
            strict=strict,
        )
        report.log()
        return ds

    def _count_unlabelled(self) -> None:
        t = self.table
        for i in np.flatnonzero(~np.any(t.keypoints[:, :, 2] > 0, axis=1)):
            self.report.adjust(
                t.source, t.describe(int(i)), "no labelled keypoint, kept as a box-only target"
            )

    def _select_images(self, keep_empty: bool, check_files: bool, strict: bool) -> np.ndarray:
        """Image indices kept: not incomplete (a person record skipped), file present, and with
        a person unless ``keep_empty``."""
        t = self.table
        by_id = {int(iid): i for i, iid in enumerate(t.image_ids)}
        incomplete: set[int] = set()
        for s in self.report.skipped:
            found = _RECORD_IMAGE_ID.search(s.record)
            if s.reason not in _HARMLESS_SKIPS and found and int(found.group(1)) in by_id:
                incomplete.add(by_id[int(found.group(1))])
        with_people = set(np.unique(t.image_index).tolist())
        keep = []
        for img in range(len(t.image_files)):
            record = f"image id {int(t.image_ids[img])}"
            if img in incomplete:
                self.report.skip(
                    t.source, record, "image left out: a person record of it was skipped"
                )
                continue
            if img not in with_people:
                if not keep_empty:
                    self.report.skip(t.source, record, "image without people left out")
                    continue
                path = t.image_root / t.image_files[img]
                if check_files and not os.path.isfile(path):
                    self.report.skip(
                        path,
                        record,
                        "image file not found",
                        missing_image_detail(t.image_root, t.image_files[img]),
                        strict=strict,
                    )
                    continue
            keep.append(img)
        return np.asarray(keep, dtype=np.int64)

    # ------------------------------------------------------------------ items
    def people(self, index: int) -> np.ndarray:
        """The rows of ``self.table`` that are image ``index``'s people (not its crowd regions),
        in the json's order."""
        return self._people[index]

    def __len__(self) -> int:
        return len(self.image_index)

    def describe(self, index: int) -> str:
        """The record name used in messages: ``image id I (file name)``."""
        img = self.image_index[index]
        return f"image id {int(self.table.image_ids[img])} ({self.table.image_files[img]})"

    def _read_image(self, index: int) -> tv_tensors.Image:
        """(3, H, W) uint8 RGB; BadInputError naming the file for a bad or mis-sized one."""
        t = self.table
        img = self.image_index[index]
        path, record = t.image_root / t.image_files[img], self.describe(index)
        decoded = decode_bgr(read_bytes(path, record), path, record)
        check_image_size(
            decoded, int(t.image_sizes[img, 0]), int(t.image_sizes[img, 1]), path, record
        )
        rgb = np.ascontiguousarray(decoded.pixels[:, :, ::-1])  # BGR -> RGB (image_io's order)
        return tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))

    def sample(self, index: int) -> dict[str, Any]:
        """The untransformed sample dict of image ``index``: people first, then crowd regions.

        Keys: ``image`` (3, H, W) uint8, ``boxes`` (N + C, 4) XYXY, ``keypoints``
        (N + C, K, 2), ``visibility`` (N + C, K), ``is_crowd`` (N + C,) bool, ``labels``
        (N + C,) int64 ones.
        """
        t = self.table
        image = self._read_image(index)
        canvas = (int(image.shape[-2]), int(image.shape[-1]))
        people, crowd = self._people[index], self._crowd[index]
        k = self.skeleton.num_keypoints
        xywh = np.concatenate([t.boxes[people], t.crowd_boxes[crowd]]).reshape(-1, 4)
        keypoints = np.concatenate([t.keypoints[people], np.zeros((len(crowd), k, 3))])
        boxes = torch.as_tensor(xywh, dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x1, y1, x2, y2)
        n = len(people) + len(crowd)
        return {
            "image": image,
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas),
            "keypoints": tv_tensors.KeyPoints(
                torch.as_tensor(keypoints[..., :2], dtype=torch.float32), canvas_size=canvas
            ),
            "visibility": KeypointVisibility(
                torch.as_tensor(keypoints[..., 2], dtype=torch.float32)
            ),
            "is_crowd": torch.arange(n) >= len(people),
            "labels": torch.ones(n, dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        sample = self.sample(index)
        before = sample["is_crowd"].clone()
        if self.transforms is not None:
            sample = self.transforms(sample)
        sample = self.sanitize(sample)
        crowd = sample["is_crowd"]
        self.dropped["people"] += int((~before).sum() - (~crowd).sum())
        self.dropped["crowd regions"] += int(before.sum() - crowd.sum())

        image = sample["image"]
        h, w = int(image.shape[-2]), int(image.shape[-1])
        xy = sample["keypoints"].as_subclass(Tensor)  # (N + C, K, 2)
        vis = sample["visibility"].as_subclass(Tensor)  # (N + C, K)
        keypoints = torch.cat([xy, vis[..., None]], dim=-1)  # (N + C, K, 3)
        # a keypoint moved out of the image is no longer labelled (the loaders' rule)
        flat = keypoints.reshape(-1, 3)
        flat[keypoints_outside_image(flat.numpy(), h, w), 2] = 0.0
        keypoints[keypoints[..., 2] == 0] = 0.0  # unlabelled: x = y = 0, as COCO writes them
        boxes = sample["boxes"].as_subclass(Tensor)
        target = {
            "boxes": boxes[~crowd].float(),
            "labels": torch.ones(int((~crowd).sum()), dtype=torch.int64),
            "keypoints": keypoints[~crowd].float(),
            "crowd_boxes": boxes[crowd].float(),
            "image_id": int(self.table.image_ids[self.image_index[index]]),
        }
        pixels = v2.functional.to_dtype(image, torch.float32, scale=True).as_subclass(Tensor)
        return pixels, target


def collate_fn(
    batch: Sequence[tuple[Tensor, dict[str, Any]]],
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """A list of (image, target) items -> ``(list of images, list of targets)``, what
    torchvision's detection models take (images may differ in size, so nothing is stacked)."""
    return [image for image, _ in batch], [target for _, target in batch]


def build_multiperson_loader(
    config: MultiPersonDataConfig,
    split: Literal["train", "val"],
    batch_size: int,
    *,
    skeleton: Skeleton | str | dict = "coco17",
    shuffle: bool | None = None,
    drop_last: bool = False,
    check_files: bool = True,
    strict: bool = False,
) -> DataLoader:
    """The DataLoader of one split of a :class:`MultiPersonDataConfig`.

    The train split is augmented by ``config.transform``; the val split only resized
    (``max_size``), never augmented. Augmentation draws from torch's random generator, which
    DataLoader seeds per worker and epoch (``torch.manual_seed`` makes a run repeatable).

    Arguments:
        config: the data section.
        split: ``"train"`` or ``"val"``.
        batch_size: images per batch.
        skeleton: keypoint layout (``data.skeleton``).
        shuffle: None: shuffle the train split only.
        drop_last: drop the last incomplete batch.
        check_files, strict: see :meth:`MultiPersonDataset.from_coco`.

    Returns:
        A DataLoader yielding ``(list[Tensor (3, H, W)], list[dict])`` (:func:`collate_fn`).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    ann, images = (
        (config.train_ann, config.train_images)
        if split == "train"
        else (config.val_ann, config.val_images)
    )
    transform = config.transform if split == "train" else replace(config.transform, augment=False)
    ds = MultiPersonDataset.from_coco(
        ann,
        images,
        skeleton=skeleton,
        transform=transform,
        keep_empty_images=config.keep_empty_images,
        keypoints_field=config.keypoints_field,
        check_files=check_files,
        strict=strict,
    )
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=(split == "train") if shuffle is None else shuffle,
        num_workers=config.workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        persistent_workers=config.workers > 0,
    )
