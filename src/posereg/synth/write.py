"""Rendering and writing: one planned scene drawn into an image and a part-id buffer, its
annotations, and :func:`generate`, which writes a COCO person_keypoints split (images, json,
then the settings record) with worker processes.

Image i's rendering and label noise draw from ``np.random.default_rng([seed, crc32(split), i,
1])``, so the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from posereg.skeletons import H36M17, MPII16, get_skeleton
from posereg.synth.body import (
    POSE_CLASSES,
    KeypointMap,
    skeleton_joint_indices,
    skeleton_keypoint_map,
)
from posereg.synth.camera import Cameras, H36MCalibrations, load_h36m_calibrations, project
from posereg.synth.noise import apply_label_noise
from posereg.synth.placement import _sample_chunk, _ScenePlan
from posereg.synth.render import (
    PARTS_PER_PERSON,
    SKIN_TONES_RGB,
    PersonView,
    draw_people,
    draw_shadows,
    keypoint_visibility,
    part_id,
    sample_appearance,
)
from posereg.synth.scene import (
    TextureBank,
    build_texture_bank,
    draw_clutter,
    draw_distractor_limbs,
    draw_floor,
    draw_occluder,
    make_background,
)
from posereg.synth.settings import (
    CHUNK_SIZE,
    SplitRecord,
    SynthConfig,
    _check_counts,
    _check_split,
    _check_writable,
    _dumps,
    _photo_dir,
    _split_key,
    split_record_path,
)

__all__ = ["RenderedScene", "render_scene", "render_index", "generate"]


# ----------------------------------------------------------------------------------------------
# Rendering one image


@dataclass
class RenderedScene:
    """One rendered image with its people (all model joints) and the part-id buffer.

    Arguments:
        image: (H, W, 3) uint8 BGR.
        part_ids: (H, W) uint8 part-id buffer (``render.part_id``; 255 = occluder).
        views: the people as seen by the camera.
        visibility: COCO codes of every model joint (P, J).
        area: visible silhouette pixels per person (P,).
        bbox: silhouette box [x, y, w, h] per person (P, 4) (zeros when area = 0).
        camera: the image's camera (1 camera).
        pose_class: pose class name per person.
    """

    image: np.ndarray
    part_ids: np.ndarray
    views: list[PersonView]
    visibility: np.ndarray
    area: np.ndarray
    bbox: np.ndarray
    camera: Cameras
    pose_class: list[str]


_CLASS_NAMES = tuple(POSE_CLASSES)
_SKIN_BGR = [c[::-1].copy() for c in SKIN_TONES_RGB]


def render_scene(
    plan: _ScenePlan, config: SynthConfig, bank: TextureBank, rng: np.random.Generator
) -> RenderedScene:
    """Render a planned scene: background, floor, clutter, distractors, people, occluders."""
    h, w = config.image_size
    cam = plan.camera
    img = make_background(rng, bank, config.image_size, config.photo_background_prob)
    if rng.random() < config.floor_prob:
        draw_floor(img, rng, bank, cam.K[0], cam.R[0])
    draw_clutter(
        img, rng, int(rng.integers(config.clutter_shapes[0], config.clutter_shapes[1] + 1))
    )

    joints_cam = cam.to_camera(plan.bodies.joints[None].reshape(1, -1, 3)).reshape(
        plan.bodies.joints.shape
    )
    joints_2d = project(joints_cam.reshape(1, -1, 3), cam.K).reshape(*joints_cam.shape[:2], 2)
    views = [
        PersonView(
            joints_2d=joints_2d[p],
            joints_cam=joints_cam[p],
            head_axes=cam.R[0] @ plan.bodies.head_rot[p],
            K=cam.K[0],
            height=float(plan.bodies.height[p]),
            girth=float(plan.bodies.girth[p]),
            appearance=sample_appearance(rng),
        )
        for p in range(len(plan.bodies))
    ]
    main_px = float(np.ptp(joints_2d[0], axis=0).max()) if views else 0.0
    n_limbs = int(rng.integers(config.distractor_limbs[0], config.distractor_limbs[1] + 1))
    draw_distractor_limbs(img, rng, n_limbs, max(main_px, 0.3 * h), _SKIN_BGR)

    draw_shadows(img, views, cam.R[0], cam.t[0])
    ids = np.zeros((h, w), np.uint8)
    angle = rng.uniform(-160.0, -20.0) * np.pi / 180.0  # light from above, left or right
    draw_people(img, ids, views, (math.cos(angle), math.sin(angle)))
    for p in range(len(views)):
        if rng.random() < config.occluder_prob:
            pts = joints_2d[p]
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            if inside.any():
                anchor = pts[rng.choice(np.flatnonzero(inside))]
                size = float(np.ptp(np.clip(pts, 0, [w, h]), axis=0).max())  # in-image extent
                draw_occluder(img, ids, rng, (float(anchor[0]), float(anchor[1])), size)

    # A slight blur, as any camera lens gives: softens the flat shading steps and hard edges.
    cv2.GaussianBlur(img, (3, 3), 0.6, dst=img)
    hist = cv2.calcHist([ids], [0], None, [256], [0, 256]).ravel()
    area = np.zeros(len(views))
    bbox = np.zeros((len(views), 4))
    for p in range(len(views)):
        lo = part_id(p, 0)
        area[p] = hist[lo : lo + PARTS_PER_PERSON].sum()
        if area[p] > 0:
            bbox[p] = cv2.boundingRect(cv2.inRange(ids, lo, lo + PARTS_PER_PERSON - 1))
    visibility = np.stack([keypoint_visibility(ids, p, v) for p, v in enumerate(views)])
    classes = [_CLASS_NAMES[c] for c in plan.bodies.pose_class]
    return RenderedScene(img, ids, views, visibility, area, bbox, cam, classes)


# ----------------------------------------------------------------------------------------------
# Annotations


def _r(x: np.ndarray, nd: int) -> list:
    return np.round(np.asarray(x, dtype=np.float64), nd).tolist()


def _coco_triplets(xy: np.ndarray, v: np.ndarray) -> list[float]:
    out = np.zeros((len(v), 3))
    out[:, :2] = np.where(v[:, None] > 0, np.round(xy, 3), 0.0)
    out[:, 2] = v
    return out.ravel().tolist()


def _derived_keypoints(
    scene: RenderedScene, keep: np.ndarray, kmap: KeypointMap, clean: np.ndarray, vis: np.ndarray
) -> None:
    """Fill the derived keypoints of ``clean`` (P, K, 2) and ``vis`` (P, K) in place: pixels by
    projecting their camera-frame position, visibility that of their joint (``kmap.joint``) and
    0 when the point itself falls outside the image or behind the camera."""
    d = kmap.derived
    points = np.stack([kmap.points(scene.views[p].joints_cam)[d] for p in keep])  # (P, D, 3)
    uv = project(points, np.repeat(scene.camera.K[:1], len(keep), axis=0))  # (P, D, 2)
    h, w = scene.part_ids.shape
    inside = (
        (uv[..., 0] >= 0)
        & (uv[..., 0] <= w - 1)
        & (uv[..., 1] >= 0)
        & (uv[..., 1] <= h - 1)
        & (points[..., 2] > 0)
    )
    clean[:, d] = uv
    vis[:, d] = np.where(inside, vis[:, d], 0)


def _annotate(
    scene: RenderedScene, config: SynthConfig, rng: np.random.Generator, image_id: int
) -> list[dict]:
    skel = get_skeleton(config.keypoint_set)
    kmap = skeleton_keypoint_map(skel)
    idx = kmap.joint
    keep = np.flatnonzero(scene.area >= max(config.min_person_area, 1))
    if len(keep) == 0:
        return []
    clean = np.stack([scene.views[p].joints_2d[idx] for p in keep])  # (P, K, 2)
    vis = scene.visibility[keep][:, idx]
    if kmap.derived.any():  # points between joints (Halpe's hip, feet): project their 3D position
        _derived_keypoints(scene, keep, kmap, clean, vis)
    noisy = apply_label_noise(
        rng, clean, vis, scene.area[keep], skel.oks_k, skel.flip_pairs, config.noise
    )
    # Annotators click inside the image: a noisy label that falls outside is clipped to it.
    h, w = scene.part_ids.shape
    labels = np.clip(noisy.keypoints, 0.0, [w - 1.0, h - 1.0])
    cam = scene.camera
    camera = {"K": _r(cam.K[0], 6), "R": _r(cam.R[0], 9), "t": _r(cam.t[0], 3)}
    h36m, mpii = skeleton_joint_indices(H36M17), skeleton_joint_indices(MPII16)
    anns = []
    for q, p in enumerate(keep):
        view = scene.views[p]
        v = vis[q]
        pairs = np.asarray(skel.flip_pairs)[noisy.swapped[q]]
        anns.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "keypoints": _coco_triplets(labels[q], v),
                "num_keypoints": int((v > 0).sum()),
                "bbox": scene.bbox[p].tolist(),
                "area": float(scene.area[p]),
                "iscrowd": 0,
                "keypoints_clean": _coco_triplets(clean[q], v),
                "joints_3d": _r(kmap.points(view.joints_cam), 2),
                "camera": camera,
                "noise": {
                    "outlier": np.flatnonzero(noisy.outlier[q]).tolist(),
                    "swap": pairs.tolist(),
                },
                "joints_3d_h36m": _r(view.joints_cam[h36m], 2),
                "joints_3d_mpii": _r(view.joints_cam[mpii], 2),
                "pose_class": scene.pose_class[p],
            }
        )
    return anns


def _categories(config: SynthConfig) -> list[dict]:
    skel = get_skeleton(config.keypoint_set)
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(skel.keypoint_names),
            "skeleton": [[a + 1, b + 1] for a, b in skel.limbs],
        }
    ]


# ----------------------------------------------------------------------------------------------
# Workers


@dataclass
class _Worker:
    config: SynthConfig
    seed: int
    split: str
    image_dir: Path
    num_images: int
    bank: TextureBank
    calib: H36MCalibrations | None


_STATE: _Worker | None = None


def _init_worker(
    config: SynthConfig, seed: int, split: str, image_dir: Path, num_images: int
) -> None:
    global _STATE
    cv2.setNumThreads(1)
    calib = load_h36m_calibrations(config.camera_file) if config.camera == "h36m" else None
    _STATE = _Worker(config, seed, split, image_dir, num_images, _bank(config, seed), calib)


@functools.lru_cache(maxsize=2)
def _bank(config: SynthConfig, seed: int) -> TextureBank:
    size = int(1.5 * max(config.image_size))
    photo_dir = _photo_dir(config) if config.photo_background_prob > 0 else None
    return build_texture_bank(seed, size, config.texture_bank_size, photo_dir)


def _image_name(image_id: int, config: SynthConfig) -> str:
    return f"{image_id:012d}.{config.image_format}"


def _run_chunk(chunk: int) -> list[tuple[dict, list[dict]]]:
    st = _STATE
    assert st is not None, "worker not initialised"
    cfg = st.config
    plans = _sample_chunk(cfg, st.seed, st.split, chunk, st.calib)
    out = []
    for i, plan in enumerate(plans):
        index = chunk * CHUNK_SIZE + i
        if index >= st.num_images:
            break
        rng = np.random.default_rng([st.seed, _split_key(st.split), index, 1])
        scene = render_scene(plan, cfg, st.bank, rng)
        image_id = index + 1
        name = _image_name(image_id, cfg)
        params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.image_format == "jpg" else []
        ok, buf = cv2.imencode(f".{cfg.image_format}", scene.image, params)
        if not ok:
            raise RuntimeError(f"could not encode image {name}")
        (st.image_dir / name).write_bytes(buf.tobytes())
        h, w = cfg.image_size
        record = {"id": image_id, "file_name": name, "width": w, "height": h}
        out.append((record, _annotate(scene, cfg, rng, image_id)))
    return out


def render_index(
    index: int, seed: int = 0, split: str = "train", config: SynthConfig | None = None
) -> RenderedScene:
    """Re-render image ``index`` (0-based; image id ``index + 1``) of a ``generate`` run.

    Gives exactly the scene behind that image, with what the json does not store: the part-id
    buffer (per-part segmentation) and all model joints. The image itself is the array before
    encoding.
    """
    config = config if config is not None else SynthConfig()
    config.validate()
    chunk, i = divmod(index, CHUNK_SIZE)
    calib = load_h36m_calibrations(config.camera_file) if config.camera == "h36m" else None
    plan = _sample_chunk(config, seed, split, chunk, calib)[i]
    rng = np.random.default_rng([seed, _split_key(split), index, 1])
    return render_scene(plan, config, _bank(config, seed), rng)


class _Progress:
    """A one-line progress report on stderr (updated at most twice a second)."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.start = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.5 and done < self.total):
            return
        if not self.tty and done < self.total and now - self.last < 10.0:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        end = "\n" if done >= self.total or not self.tty else ""
        print(
            f"\r{self.label}: {done}/{self.total} ({rate:.0f}/s)",
            end=end,
            file=sys.stderr,
            flush=True,
        )


def generate(
    out_dir: str | Path,
    split: str = "train",
    num_images: int = 1000,
    seed: int = 0,
    config: SynthConfig | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    preset: str | None = None,
) -> Path:
    """Render a synthetic COCO person-keypoints split.

    Writes ``out_dir/images/<split>/<id:012d>.jpg``,
    ``out_dir/annotations/person_keypoints_<split>.json`` and then the settings record
    (:class:`SplitRecord`, :func:`split_record_path`). Every setting is checked before any work
    starts; an existing record of the split is deleted first, so an interrupted run leaves none.

    Arguments:
        out_dir: dataset folder (created if needed).
        split: split name ("train", "val", ...); also mixed into the random stream.
        num_images: number of images.
        seed: base random seed.
        config: generator settings (None: the medium preset).
        num_workers: worker processes (None: all cores; 0: in this process).
        progress: report progress on stderr.
        preset: the preset ``config`` started from, kept in the record for information.

    Returns:
        Path of the annotation json.

    Example:
        >>> generate("data/synth", "val", 100, seed=1, config=SynthConfig.preset("easy"))  # doctest: +SKIP
    """
    config = config if config is not None else SynthConfig()
    config.validate()
    _check_split(split)
    _check_counts(num_images, seed, num_workers, "num_images")
    out = Path(out_dir)
    image_dir = out / "images" / split
    ann_dir = out / "annotations"
    _check_writable(image_dir)
    _check_writable(ann_dir)
    record_path = split_record_path(out, split)
    record_path.unlink(missing_ok=True)

    num_chunks = math.ceil(num_images / CHUNK_SIZE)
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    workers = min(workers, num_chunks)
    bar = _Progress(f"synth {split}", num_images, progress)
    args = (config, int(seed), split, image_dir, int(num_images))
    path = ann_dir / f"person_keypoints_{split}.json"
    # Annotations stream to a side file as chunks arrive (in order), so memory stays small.
    side = path.with_suffix(".annotations.tmp")
    images: list[dict] = []
    num_anns = 0
    with side.open("w") as f:

        def collect(part: list[tuple[dict, list[dict]]]) -> None:
            nonlocal num_anns
            for record, anns in part:
                images.append(record)
                for a in anns:
                    num_anns += 1
                    f.write(("," if num_anns > 1 else "") + _dumps({"id": num_anns, **a}))
            bar.update(len(images))

        if workers <= 1:
            _init_worker(*args)
            for chunk in range(num_chunks):
                collect(_run_chunk(chunk))
        else:
            ctx = get_context("spawn")  # no fork: safe with threads and torch in the parent
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=args
            ) as pool:
                for part in pool.map(_run_chunk, range(num_chunks)):
                    collect(part)
    _write_coco(path, side, images, config, seed, split)
    record = SplitRecord(split, int(num_images), int(seed), config, preset)
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=2))
    tmp.replace(record_path)
    return path


def _write_coco(
    path: Path, side: Path, images: list[dict], config: SynthConfig, seed: int, split: str
) -> None:
    """Assemble the COCO json from the image records and the streamed annotations."""
    from posereg import __version__

    info = {
        "description": "posereg synthetic people (posereg.synth)",
        "version": __version__,
        "split": split,
        "seed": int(seed),
        "config": config.to_dict(),
    }
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w") as out, side.open() as anns:
        out.write(f'{{"info":{_dumps(info)},"images":{_dumps(images)},"annotations":[')
        while block := anns.read(1 << 20):
            out.write(block)
        out.write(f'],"categories":{_dumps(_categories(config))}}}')
    side.unlink()
    tmp.replace(path)
