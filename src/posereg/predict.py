"""Inference on images: ``Predictor.from_checkpoint(path)(image, boxes)``.

Top-down: each person box is cropped (box -> centre/scale with the model's aspect ratio and
1.25 padding), the regressor predicts crop-normalized keypoints and sigmas, and they are mapped
back to image pixels. The flow is never run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posereg.data.dataset import image_to_tensor
from posereg.data.image_io import read_image
from posereg.data.transforms import (
    box_to_center_scale,
    crop_to_image,
    flip_test_average,
    get_affine_transform,
    warp_crop,
)
from posereg.skeletons import Skeleton, resolve_skeleton

__all__ = ["Predictor", "PoseResult"]


@dataclass
class PoseResult:
    """Poses of the N people in one image.

    Attributes:
        keypoints: (N, K, 2) image pixels.
        sigma: (N, K, 2) per-axis sigma in image pixels.
        confidence: (N, K) 1 - mean_d sigma_hat (Eq. 9).
        boxes: (N, 4) the (x, y, w, h) boxes used.
        scores: (N,) instance scores: box score + mean_k(c) + max_k(c) (official rule).
    """

    keypoints: np.ndarray
    sigma: np.ndarray
    confidence: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


class Predictor:
    """A trained regressor ready for images.

    Arguments:
        model: a PoseRegressor (its criterion may be None).
        skeleton: keypoint layout (flip pairs for the flip test, limbs for drawing).
        input_size: (h, w) of the model input.
        padding: box context factor (1.25).
        flip_test: average with the prediction on the mirrored crop.
        device: where the model runs.

    Example:
        >>> predictor = Predictor.from_checkpoint("runs/synth_rle/best.pt")  # doctest: +SKIP
        >>> result = predictor("photo.jpg", boxes=[[50, 30, 120, 300]])  # doctest: +SKIP
        >>> result.keypoints.shape  # doctest: +SKIP
        (1, 17, 2)
    """

    def __init__(
        self,
        model: nn.Module,
        skeleton: Skeleton,
        input_size: tuple[int, int],
        padding: float = 1.25,
        flip_test: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.skeleton = skeleton
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.padding = padding
        self.flip_test = flip_test
        self.sigma_scale = 1.0  # what one sigma means in pixels of error (set from a checkpoint)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        flip_test: bool | None = None,
    ) -> Predictor:
        """Build the model a posereg checkpoint was trained with and load its weights."""
        from posereg.engine.train import model_from_checkpoint

        model, cfg, state = model_from_checkpoint(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        predictor = cls(
            model,
            resolve_skeleton(cfg.data.skeleton),
            tuple(cfg.data.input_size),
            cfg.data.transform.padding,
            cfg.eval.flip_test if flip_test is None else flip_test,
            device,
        )
        predictor.sigma_scale = float((state.get("metrics") or {}).get("sigma_calibration", 1.0))
        return predictor

    @torch.no_grad()
    def __call__(
        self,
        image: str | Path | np.ndarray,
        boxes: np.ndarray | list | None = None,
        box_scores: np.ndarray | list | None = None,
    ) -> PoseResult:
        """Predict the poses in ``image``.

        Arguments:
            image: a file path, or an (H, W, 3) uint8 BGR array (OpenCV's order).
            boxes: (N, 4) person boxes (x, y, w, h) in pixels; None: the whole image is one box.
            box_scores: (N,) detection scores (default 1).
        """
        bgr = read_image(image) if isinstance(image, str | Path) else np.asarray(image)
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 BGR, got {bgr.shape} {bgr.dtype}")
        h_img, w_img = bgr.shape[:2]
        box_arr = np.array(
            [[0, 0, w_img, h_img]] if boxes is None else boxes, dtype=np.float64
        ).reshape(-1, 4)
        det = (
            np.ones(len(box_arr))
            if box_scores is None
            else np.asarray(box_scores, dtype=np.float64)
        )
        k = self.skeleton.num_keypoints
        if len(box_arr) == 0:
            empty = np.zeros((0, k, 2))
            return PoseResult(empty, empty.copy(), np.zeros((0, k)), box_arr, np.zeros(0))
        h, w = self.input_size
        center, scale = box_to_center_scale(box_arr, w / h, self.padding)
        crops = [
            image_to_tensor(
                warp_crop(bgr, get_affine_transform(c, s, 0.0, self.input_size), self.input_size)
            )
            for c, s in zip(center, scale, strict=True)
        ]
        images = torch.stack(crops).to(self.device)
        out = self.model(images)
        mu, sigma = out.mu.float(), out.sigma.float()
        if self.flip_test:
            out_f = self.model(images.flip(-1))
            mu, sigma = flip_test_average(
                mu, out_f.mu.float(), self.skeleton, w, sigma, out_f.sigma.float()
            )
        mu_np, sigma_np = mu.cpu().double().numpy(), sigma.cpu().double().numpy()
        confidence = 1.0 - sigma_np.mean(-1)
        scores = det + confidence.mean(1) + confidence.max(1)
        return PoseResult(
            keypoints=crop_to_image(mu_np, center, scale),
            sigma=sigma_np * scale[:, None, :],
            confidence=confidence,
            boxes=box_arr,
            scores=scores,
        )


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _image_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(inputs)}")
    return files


def _image_id(path: Path) -> int | None:
    """COCO's convention: the file name is the zero-padded image id (000000000785.jpg -> 785)."""
    return int(path.stem) if path.stem.isdigit() else None


def _load_boxes(path: str, score_threshold: float) -> dict[int, list[tuple[list[float], float]]]:
    import json

    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"boxes file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a COCO results list of {{image_id, bbox, score}}")
    boxes: dict[int, list[tuple[list[float], float]]] = {}
    for i, e in enumerate(entries):
        try:
            image_id, bbox, score = (
                int(e["image_id"]),
                [float(v) for v in e["bbox"]],
                float(e.get("score", 1.0)),
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}: entry #{i} is not {{image_id, bbox: [x, y, w, h], score}}: {e!r}"
            ) from None
        if len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
            raise ValueError(f"{path}: entry #{i} (image {image_id}) has an invalid box {bbox}")
        if e.get("category_id", 1) == 1 and score >= score_threshold:
            boxes.setdefault(image_id, []).append((bbox, score))
    return boxes


def predict_files(
    checkpoint: str | Path,
    inputs: list[str],
    out_dir: str | Path,
    boxes: str | None = None,
    score_threshold: float = 0.0,
    draw: bool = True,
    device: str | None = None,
) -> Path:
    """``posereg predict``: poses for image files; writes predictions.json (+ overlay PNGs).

    predictions.json is a COCO results list (``image_id``, ``category_id``, ``keypoints`` with the
    confidence as third value, ``score``) with ``file_name``, ``bbox`` and ``sigma`` (K x 2 pixels)
    added. With ``boxes`` (COCO results json) each image's boxes are looked up by its id (the
    file name's number, as in COCO); images without boxes there are skipped and counted.
    """
    import json

    import cv2

    from posereg.viz import draw_pose

    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    files = _image_files(inputs)
    box_map = _load_boxes(boxes, score_threshold) if boxes else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    for n, path in enumerate(files):
        image_id = _image_id(path)
        if box_map is not None:
            entries = box_map.get(image_id, []) if image_id is not None else []
            if not entries:
                skipped.append(path.name)
                continue
            result = predictor(path, [b for b, _ in entries], [s for _, s in entries])
        else:
            result = predictor(path)
        for i in range(len(result.boxes)):
            flat = np.concatenate([result.keypoints[i], result.confidence[i][:, None]], axis=1)
            results.append(
                {
                    "image_id": image_id if image_id is not None else n,
                    "file_name": path.name,
                    "category_id": 1,
                    "bbox": result.boxes[i].round(2).tolist(),
                    "keypoints": flat.round(3).reshape(-1).tolist(),
                    "score": float(result.scores[i]),
                    "sigma": result.sigma[i].round(3).tolist(),
                }
            )
        if draw:
            canvas = read_image(path)
            thickness = max(1, round(max(canvas.shape[:2]) / 300))
            for i in range(len(result.boxes)):
                x, y, bw, bh = result.boxes[i]
                cv2.rectangle(
                    canvas, (int(x), int(y)), (int(x + bw), int(y + bh)), (200, 200, 200), 1
                )
                canvas = draw_pose(
                    canvas, result.keypoints[i], predictor.skeleton, result.confidence[i],
                    result.sigma[i], predictor.sigma_scale, thickness=thickness,
                )  # fmt: skip
            cv2.imwrite(str(out / f"{path.stem}_pose.png"), canvas)
    (out / "predictions.json").write_text(json.dumps(results))
    if skipped:
        print(f"skipped {len(skipped)} image(s) with no box in {boxes}: {', '.join(skipped[:10])}")
    return out / "predictions.json"
