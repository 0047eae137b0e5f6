"""Dense one-stage targets (RLE paper Tab. 2d): people -> per-location targets, and back.

The codec of the one-stage dense model (:mod:`posereg.models.dense`): every location of every
FPN level predicts an objectness logit, a box and, per keypoint, a location mu and a scale
sigma. ``encode`` assigns the people of one image to locations (FCOS centre sampling) and
writes their targets; ``decode_boxes`` / ``decode_keypoints`` map network outputs back to
image pixels; ``mirror`` maps the outputs of a horizontally flipped image back (flip test).

Coordinate conventions (torchvision's ``tv_tensors``, which the multi-person data uses):

- boxes (N, 4) x1 y1 x2 y2 are pixel *edges* (``BoundingBoxes``: a flip maps x -> W - x);
- keypoints (N, K, 3) x, y, v have integer values at pixel *centres* (``KeyPoints``: a flip maps
  x -> W - 1 - x), as everywhere in posereg (:mod:`posereg.data.transforms`);
- location a of level l, column i, row j is the point ``p_a = ((i + 0.5) s_l, (j + 0.5) s_l)``
  in edge coordinates (s_l the level's stride), the centre of its s_l x s_l cell; a keypoint
  is compared with ``p_a - 0.5`` (the same point in centre coordinates). With an image width
  that is a multiple of every stride the grid is its own mirror image, so the encoding is
  exactly flip-equivariant.

Targets of location a assigned to person n (box b_n, keypoints x_nk):

- box (FCOS, Tian et al. 2019): ``t_a = (p_x - x1, p_y - y1, x2 - p_x, y2 - p_y) / s_l``, and
  FCOS's centerness ``sqrt(min(l, r) / max(l, r) x min(t, b) / max(t, b))``;
- person scale: ``S_n = sqrt(w_n h_n)``, the square root of the box area (the scale of OKS,
  whose ``s^2`` is the object area), at least 1 px;
- keypoint k: ``mu_ak = (x_nk - (p_a - 0.5)) / S_n``, an offset from the location in units of
  the person's scale, weight 1 if labelled (v > 0), else 0; the predicted ``sigma_ak`` is in the
  same units (a sigmoid output, as the official RLE heads), so ``sigma_px = sigma S``.

Decoding inverts these with the *predicted* box's scale ``S = sqrt(w h)``, as a top-down model
normalises by the ground-truth box in training and by the detected box at test time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DenseGrid",
    "DenseTargets",
    "DenseCodec",
    "centerness",
    "make_grid",
    "person_scale",
    "flip_targets",
]

#: The smallest person scale S in pixels: a degenerate (zero-area) box still decodes.
MIN_PERSON_SCALE = 1.0


def person_scale(boxes: Tensor) -> Tensor:
    """The person scale S = sqrt(w h) of boxes (..., 4) x1 y1 x2 y2 -> (...), at least 1 px."""
    w = (boxes[..., 2] - boxes[..., 0]).clamp_min(0)
    h = (boxes[..., 3] - boxes[..., 1]).clamp_min(0)
    return (w * h).sqrt().clamp_min(MIN_PERSON_SCALE)


def centerness(box_distances: Tensor) -> Tensor:
    """FCOS's centerness of box distances (..., 4) (l, t, r, b) -> (...), in [0, 1]: 1 at the
    box centre, 0 on its edge (torchvision's ``FCOS.compute_loss``)."""
    lr, tb = box_distances[..., 0::2], box_distances[..., 1::2]
    ratio = lr.amin(-1) / lr.amax(-1).clamp_min(1e-12) * tb.amin(-1) / tb.amax(-1).clamp_min(1e-12)
    return ratio.clamp_min(0).sqrt()


@dataclass(frozen=True)
class DenseGrid:
    """The locations of all FPN levels, concatenated level by level, row-major within a level.

    Attributes:
        points: (A, 2) location centres (x, y) in edge coordinates, image pixels.
        strides: (A,) the stride s_l of each location's level.
        size_ranges: (A, 2) FCOS's (lower, upper) bound on max(l, t, r, b) in pixels of the
            people assigned to the location's level.
        level_shapes: (h_l, w_l) of each level.
    """

    points: Tensor
    strides: Tensor
    size_ranges: Tensor
    level_shapes: tuple[tuple[int, int], ...]

    @property
    def num_locations(self) -> int:
        return int(self.points.shape[0])


def make_grid(
    level_shapes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> DenseGrid:
    """The grid of locations of feature maps of shapes (h_l, w_l) with strides s_l.

    Size ranges follow torchvision's FCOS (``FCOS.compute_loss``): level l takes the people
    whose largest box distance max(l, t, r, b) lies in (4 s_l, 8 s_l), the first level from 0
    and the last to infinity.
    """
    if len(level_shapes) != len(strides):
        raise ValueError(f"{len(level_shapes)} levels but {len(strides)} strides")
    points, stride_list, ranges = [], [], []
    for index, ((h, w), s) in enumerate(zip(level_shapes, strides, strict=True)):
        # tensor ops on h and w only (no Python arithmetic): traced with a feature map's
        # shape, the grid follows the input's size in an ONNX export (as torchvision's anchors)
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        x, y = x.reshape(-1), y.reshape(-1)
        points.append(torch.stack([x, y], dim=1))  # (h w, 2)
        stride_list.append(torch.full_like(x, float(s)))
        lower = 0.0 if index == 0 else 4.0 * s
        upper = math.inf if index == len(strides) - 1 else 8.0 * s
        ranges.append(torch.stack([torch.full_like(x, lower), torch.full_like(x, upper)], dim=1))
    return DenseGrid(
        torch.cat(points),
        torch.cat(stride_list),
        torch.cat(ranges),
        # kept as traced sizes in a trace (mirror's reshapes then follow the input's size)
        tuple(
            (h, w) if torch.jit.is_tracing() else (int(h), int(w))  # type: ignore[misc]
            for h, w in level_shapes
        ),
    )


@dataclass(frozen=True)
class DenseTargets:
    """The encoded targets of one image over the A locations of a :class:`DenseGrid`.

    Attributes:
        matched: (A,) index of the person assigned to each location, -1 for background.
        labels: (A,) 1.0 for an assigned location, else 0.0 (the objectness target).
        boxes: (A, 4) box distances (l, t, r, b) / stride (0 for background).
        centerness: (A,) FCOS's centerness of those distances (0 for background).
        keypoints: (A, K, 2) keypoint offsets mu in person-scale units (0 for background).
        keypoint_weight: (A, K) 1 for a labelled keypoint of an assigned person, else 0.
    """

    matched: Tensor
    labels: Tensor
    boxes: Tensor
    centerness: Tensor
    keypoints: Tensor
    keypoint_weight: Tensor

    @property
    def positive(self) -> Tensor:
        """(A,) bool: the assigned locations."""
        return self.matched >= 0


def flip_targets(
    target: Mapping[str, Tensor], image_width: int, flip_index: Sequence[int] | Tensor
) -> dict[str, Tensor]:
    """One image's people mirrored horizontally (what ``torchvision.transforms.v2`` does to
    ``BoundingBoxes`` and ``KeyPoints``, plus the left/right swap of the keypoints).

    Boxes: x -> W - x (edges); keypoints: x -> W - 1 - x (centres), then
    ``out[:, i] = keypoints[:, flip_index[i]]`` (:meth:`posereg.skeletons.Skeleton.flip_index`).
    """
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = image_width - target["boxes"][:, [2, 0]]
    keypoints = target["keypoints"].clone()
    keypoints[..., 0] = image_width - 1 - keypoints[..., 0]
    keypoints = keypoints[:, torch.as_tensor(flip_index, dtype=torch.long)]
    return {**target, "boxes": boxes, "keypoints": keypoints}


class DenseCodec:
    """Encode people to dense per-location targets and decode dense outputs (module docstring).

    Arguments:
        strides: the FPN levels' strides, finest first (8, 16, 32 for P3-P5).
        num_keypoints: K.
        center_radius: FCOS centre sampling radius in strides (torchvision's default 1.5): a
            location may take a person when it lies within ``center_radius x s_l`` of the box
            centre in x and in y, inside the box, on the level whose size range holds the box.

    Example:
        >>> codec = DenseCodec(strides=(8, 16, 32), num_keypoints=1)
        >>> grid = codec.grid((64, 64))
        >>> person = {"boxes": torch.tensor([[16.0, 8.0, 40.0, 56.0]]),
        ...           "keypoints": torch.tensor([[[27.5, 20.5, 2.0]]])}
        >>> enc = codec.encode(person, grid)
        >>> int(enc.positive.sum()), grid.points[enc.positive][0].tolist()
        (6, [20.0, 28.0])
        >>> # (27.5 - 19.5, 20.5 - 27.5) / sqrt(24 * 48)
        >>> [round(v, 4) for v in enc.keypoints[enc.positive][0, 0].tolist()]
        [0.2357, -0.2062]
    """

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32),
        num_keypoints: int = 17,
        center_radius: float = 1.5,
    ) -> None:
        if list(strides) != sorted(strides) or len(set(strides)) != len(strides):
            raise ValueError(f"strides must increase, got {tuple(strides)}")
        self.strides = tuple(int(s) for s in strides)
        self.num_keypoints = int(num_keypoints)
        self.center_radius = float(center_radius)

    def level_shapes(self, image_size: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        """(h_l, w_l) per level of an (H, W) input: ceil(H / s_l), ceil(W / s_l)."""
        h, w = image_size
        return tuple((math.ceil(h / s), math.ceil(w / s)) for s in self.strides)

    def grid(
        self,
        image_size: tuple[int, int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> DenseGrid:
        """The :class:`DenseGrid` of an (H, W) input."""
        return make_grid(self.level_shapes(image_size), self.strides, device, dtype)

    def encode(self, target: Mapping[str, Tensor], grid: DenseGrid) -> DenseTargets:
        """One image's people -> per-location targets (the assignment of torchvision's
        ``FCOS.compute_loss``: centre sampling, inside the box, the level's size range, and the
        smallest box where several people qualify).

        Arguments:
            target: ``boxes`` (N, 4) x1 y1 x2 y2 and ``keypoints`` (N, K, 3) x, y, v, image
                pixels (N may be 0).
            grid: the locations (:meth:`grid`).

        Returns:
            :class:`DenseTargets` over the A locations, in the grid's dtype.
        """
        points, strides = grid.points, grid.strides
        a, k = grid.num_locations, self.num_keypoints
        boxes = target["boxes"].to(points)
        keypoints = target["keypoints"].to(points)
        if keypoints.dim() != 3 or keypoints.shape[1:] != (k, 3) or len(keypoints) != len(boxes):
            raise ValueError(
                f"target keypoints must be (N, {k}, 3) for the N = {len(boxes)} boxes, got "
                f"{tuple(keypoints.shape)}"
            )
        if len(boxes) == 0:
            matched = torch.full((a,), -1, dtype=torch.long, device=points.device)
        else:
            centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
            match = (points[:, None, :] - centers[None]).abs().amax(dim=2) < (
                self.center_radius * strides[:, None]
            )  # (A, N): centre sampling
            x, y = points[:, :1], points[:, 1:]  # (A, 1)
            dist = torch.stack(
                [x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2
            )  # (A, N, 4)
            match &= dist.amin(dim=2) > 0  # inside the box
            largest = dist.amax(dim=2)
            ranges = grid.size_ranges
            match &= (largest > ranges[:, :1]) & (largest < ranges[:, 1:])  # the level's range
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            # the smallest box wins where several match (torchvision: 1e8 - area)
            cost = torch.where(match, area[None, :], torch.full_like(largest, math.inf))
            best, matched = cost.min(dim=1)
            matched = torch.where(torch.isfinite(best), matched, -1)
        positive = matched >= 0
        index = matched.clamp_min(0)
        labels = positive.to(points.dtype)
        box_targets = torch.zeros(a, 4, dtype=points.dtype, device=points.device)
        keypoint_targets = torch.zeros(a, k, 2, dtype=points.dtype, device=points.device)
        keypoint_weight = torch.zeros(a, k, dtype=points.dtype, device=points.device)
        if positive.any():
            p, s = points[positive], strides[positive]
            b = boxes[index[positive]]
            box_targets[positive] = torch.cat([p - b[:, :2], b[:, 2:] - p], dim=1) / s[:, None]
            scale = person_scale(b)[:, None, None]  # (P, 1, 1)
            kp = keypoints[index[positive]]  # (P, K, 3)
            keypoint_targets[positive] = (kp[..., :2] - (p[:, None, :] - 0.5)) / scale
            keypoint_weight[positive] = (kp[..., 2] > 0).to(points.dtype)
        return DenseTargets(
            matched,
            labels,
            box_targets,
            centerness(box_targets),
            keypoint_targets,
            keypoint_weight,
        )

    @staticmethod
    def decode_boxes(box_distances: Tensor, grid: DenseGrid) -> Tensor:
        """Box distances (..., A, 4) (l, t, r, b) / stride -> boxes (..., A, 4) x1 y1 x2 y2 px."""
        ltrb = box_distances * grid.strides[:, None]
        return torch.cat([grid.points - ltrb[..., :2], grid.points + ltrb[..., 2:]], dim=-1)

    @staticmethod
    def decode_keypoints(
        mu: Tensor, sigma: Tensor | None, boxes: Tensor, points: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Offsets and scales in person-scale units -> image pixels.

        Arguments:
            mu: (N, K, 2) offsets of N locations.
            sigma: (N, K, 2) in (0, 1), or None.
            boxes: (N, 4) the locations' decoded boxes x1 y1 x2 y2 (their scale S = sqrt(w h)).
            points: (N, 2) the locations (edge coordinates).

        Returns:
            keypoints (N, K, 2) ``p - 0.5 + mu S`` and sigma (N, K, 2) ``sigma S`` in pixels.
        """
        scale = person_scale(boxes)[:, None, None]  # (N, 1, 1)
        keypoints = points[:, None, :] - 0.5 + mu * scale
        return keypoints, None if sigma is None else sigma * scale

    @staticmethod
    def mirror(maps: Tensor, grid: DenseGrid) -> Tensor:
        """Per-location values (B, A, ...) of a flipped image -> the same values at the
        mirrored locations (each level's columns reversed). Only the spatial order changes;
        what the values mean is for :meth:`mirror_outputs` to fix."""
        out, start = [], 0
        for h, w in grid.level_shapes:
            level = maps[:, start : start + h * w]
            shape = level.shape
            out.append(level.reshape(shape[0], h, w, *shape[2:]).flip(2).reshape(shape))
            start += h * w
        return torch.cat(out, dim=1)

    def mirror_outputs(
        self,
        logits: Tensor,
        box_distances: Tensor,
        mu: Tensor,
        sigma: Tensor,
        grid: DenseGrid,
        flip_index: Sequence[int] | Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Outputs for a horizontally flipped image -> outputs for the image itself.

        Locations are mirrored (:meth:`mirror`); the box distances swap l and r; the keypoint
        offsets change the sign of x and the keypoints swap left and right with ``flip_index``;
        sigma swaps with its keypoint. Exact under :func:`flip_targets` when the image width is
        a multiple of every stride.

        Arguments:
            logits: (B, A, ...) per-location scores (objectness, centerness), any trailing shape;
            box_distances: (B, A, 4); mu, sigma: (B, A, K, 2).
        """
        perm = torch.as_tensor(flip_index, dtype=torch.long, device=mu.device)
        logits = self.mirror(logits, grid)
        box_distances = self.mirror(box_distances, grid)[..., [2, 1, 0, 3]]
        mu = self.mirror(mu, grid)[:, :, perm] * mu.new_tensor([-1.0, 1.0])
        sigma = self.mirror(sigma, grid)[:, :, perm]
        return logits, box_distances, mu, sigma
