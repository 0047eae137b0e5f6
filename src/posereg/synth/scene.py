"""Everything in a synthetic image that is not a person: backgrounds, floor, clutter, distractor
limbs and occluders.

Backgrounds are crops of a bank of procedural textures built once per worker from the dataset
seed (so every worker holds the same bank), optionally mixed with crops of the real photos in
``posereg/samples`` taken away from the people annotated in them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from posereg.samples import SAMPLES_DIR
from posereg.synth.render import OCCLUDER_ID, draw_capsule

__all__ = [
    "TextureBank",
    "DEFAULT_PHOTO_DIR",
    "build_texture_bank",
    "make_background",
    "draw_floor",
    "draw_clutter",
    "draw_distractor_limbs",
    "draw_occluder",
]

DEFAULT_PHOTO_DIR = SAMPLES_DIR


@dataclass
class TextureBank:
    """Background material: procedural textures and person-free photo crops, BGR uint8 squares.

    Arguments:
        textures: (S, S, 3) procedural textures.
        photos: (S, S, 3) crops of real photos (may be empty).
    """

    textures: list[np.ndarray]
    photos: list[np.ndarray] = field(default_factory=list)


def _random_colours(rng: np.random.Generator, n: int) -> list[tuple[float, float, float]]:
    """Colours as found in indoor and outdoor scenes: 80 % muted, 20 % saturated (BGR)."""
    if n == 0:
        return []
    sat = np.where(rng.random(n) < 0.8, rng.uniform(0, 90, n), rng.uniform(90, 230, n))
    hsv = np.stack([rng.uniform(0, 180, n), sat, rng.uniform(35, 235, n)], axis=1)
    bgr = cv2.cvtColor(hsv.astype(np.uint8)[:, None, :], cv2.COLOR_HSV2BGR)[:, 0]
    return [tuple(c) for c in bgr.astype(np.float64).tolist()]


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return _random_colours(rng, 1)[0]


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """Slowly varying colour: a few cells around one muted base colour, upsampled smoothly."""
    g = int(rng.integers(2, 7))
    base = np.array(_random_colour(rng), dtype=np.float32)
    small = np.clip(base + rng.normal(0, 30, (g, g, 3)), 0, 255).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One procedural texture (S, S, 3) uint8: smooth gradients, tiles, blobs, shapes or noise."""
    kind = int(rng.integers(0, 5))
    img = _smooth_field(rng, size)
    if kind == 1:  # tiles or bricks
        step = int(rng.integers(12, 48))
        line = tuple(0.5 * c for c in _random_colour(rng))
        thick = int(rng.integers(1, 4))
        stagger = rng.random() < 0.5
        for r, y in enumerate(range(0, size, step)):
            cv2.line(img, (0, y), (size, y), line, thick)
            off = step // 2 if stagger and r % 2 else 0
            for x in range(off, size, step * (2 if stagger else 1)):
                cv2.line(img, (x, y), (x, y + step), line, thick)
    elif kind == 2:  # blobs (foliage, gravel, crowds of things)
        base = np.array(_random_colour(rng))
        for _ in range(int(rng.integers(150, 400))):
            c = np.clip(base + rng.normal(0, 35, 3), 0, 255)
            centre = tuple(int(x) for x in rng.integers(0, size, 2))
            cv2.circle(
                img, centre, int(rng.integers(2, 14)), tuple(float(x) for x in c), -1, cv2.LINE_AA
            )
        img = cv2.GaussianBlur(img, (3, 3), 0)
    elif kind == 3:  # shapes (shelves, posters, furniture)
        for _ in range(int(rng.integers(10, 40))):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(size // 20, size // 3, 2)
            cv2.rectangle(
                img, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), _random_colour(rng), -1
            )
    elif kind == 4:  # streaks (wood, grass, fabric)
        angle = rng.uniform(0, np.pi)
        for _ in range(int(rng.integers(60, 200))):
            x, y = rng.uniform(0, size, 2)
            length = rng.uniform(5, size / 3)
            dx, dy = length * math.cos(angle), length * math.sin(angle)
            shade = float(rng.uniform(0.6, 1.3))
            c = tuple(float(v) for v in np.clip(img[int(y), int(x)] * shade, 0, 255))
            cv2.line(img, (int(x), int(y)), (int(x + dx), int(y + dy)), c, int(rng.integers(1, 3)))
    noise = rng.normal(0, rng.uniform(1, 6), (size, size, 1)).astype(np.float32)  # sensor grain
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _person_boxes(photo_dir: Path) -> dict[Path, list[tuple[float, float, float, float]]]:
    """Person boxes (x0, y0, x1, y1) in the real photos, from their annotation files."""
    boxes: dict[Path, list[tuple[float, float, float, float]]] = {}
    coco = photo_dir / "coco" / "test_coco.json"
    if coco.is_file():
        data = json.loads(coco.read_text())
        names = {im["id"]: photo_dir / "coco" / im["file_name"] for im in data["images"]}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            boxes.setdefault(names[a["image_id"]], []).append((x, y, x + w, y + h))
    mpii = photo_dir / "mpii" / "test_mpii.json"
    if mpii.is_file():
        for rec in json.loads(mpii.read_text()):
            cx, cy = rec["center"]
            half = 100.0 * rec["scale"] * 1.25  # scale is box height / 200
            boxes.setdefault(photo_dir / "mpii" / rec["image"], []).append(
                (cx - half, cy - half, cx + half, cy + half)
            )
    return boxes


def _photo_crops(
    rng: np.random.Generator, photo_dir: Path, size: int, per_photo: int = 4
) -> list[np.ndarray]:
    """Square crops of the real photos that do not overlap any annotated person (+25 % margin).

    People that the source datasets did not annotate can still appear; see docs/synth.md.
    """
    crops = []
    for path, people in sorted(_person_boxes(photo_dir).items()):
        img = cv2.imread(str(path))
        if img is None:
            continue
        h, w = img.shape[:2]
        grown = [
            (
                x0 - 0.25 * (x1 - x0),
                y0 - 0.25 * (y1 - y0),
                x1 + 0.25 * (x1 - x0),
                y1 + 0.25 * (y1 - y0),
            )
            for x0, y0, x1, y1 in people
        ]
        found = 0
        for _ in range(200):
            s = int(rng.integers(min(h, w) // 5, min(h, w) // 2 + 1))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            if any(x < b[2] and x + s > b[0] and y < b[3] and y + s > b[1] for b in grown):
                continue
            crops.append(
                cv2.resize(img[y : y + s, x : x + s], (size, size), interpolation=cv2.INTER_LINEAR)
            )
            found += 1
            if found == per_photo:
                break
    return crops


def build_texture_bank(
    seed: int, size: int, count: int, photo_dir: Path | None = None
) -> TextureBank:
    """Build the background bank, identical for a given (seed, size, count, photo_dir).

    Arguments:
        seed: dataset seed.
        size: side S of each square texture, pixels.
        count: number of procedural textures.
        photo_dir: folder with the real photos (``coco/``, ``mpii/``), or None for none.
    """
    rng = np.random.default_rng([seed, 0xBA4C])
    textures = [_texture(rng, size) for _ in range(count)]
    photos = _photo_crops(rng, photo_dir, size) if photo_dir is not None else []
    return TextureBank(textures=textures, photos=photos)


def _crop(rng: np.random.Generator, tex: np.ndarray, h: int, w: int) -> np.ndarray:
    s = tex.shape[0]
    if s < h or s < w:
        tex = cv2.resize(tex, (max(w, h), max(w, h)))
        s = tex.shape[0]
    y, x = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
    out = tex[y : y + h, x : x + w]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain, bias = float(rng.uniform(0.6, 1.25)), float(rng.uniform(-25, 25))
    return cv2.convertScaleAbs(out, alpha=gain, beta=bias)


def make_background(
    rng: np.random.Generator, bank: TextureBank, image_size: tuple[int, int], photo_prob: float
) -> np.ndarray:
    """A fresh (H, W, 3) uint8 background: a jittered crop of a bank texture or photo."""
    h, w = image_size
    use_photo = bool(bank.photos) and rng.random() < photo_prob
    source = bank.photos if use_photo else bank.textures
    return _crop(rng, source[int(rng.integers(len(source)))], h, w)


def draw_floor(
    img: np.ndarray, rng: np.random.Generator, bank: TextureBank, K: np.ndarray, R: np.ndarray
) -> None:
    """Paint the floor (world plane z = 0, below the horizon) with another texture, in place.

    A pixel x sees the floor when its ray ``K^-1 x`` points downward, ``(R e_z) . K^-1 x < 0``:
    a half-plane of the image bounded by the horizon line.
    """
    h, w = img.shape[:2]
    line = np.linalg.inv(K).T @ (R @ np.array([0.0, 0.0, 1.0]))  # a u + b v + c < 0 on the floor
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64) - 0.5
    side = corners @ line[:2] + line[2]
    poly = []
    for i in range(4):
        j = (i + 1) % 4
        if side[i] < 0:
            poly.append(corners[i])
        if (side[i] < 0) != (side[j] < 0):
            s = side[i] / (side[i] - side[j])
            poly.append(corners[i] + s * (corners[j] - corners[i]))
    if len(poly) < 3:
        return
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(
        mask, np.round((np.array(poly) + 0.5) * 16).astype(np.int32), 255, cv2.LINE_8, 4
    )
    floor = _crop(rng, bank.textures[int(rng.integers(len(bank.textures)))], h, w)
    cv2.copyTo(floor, mask, img)


def draw_clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Draw ``count`` random shapes (rectangles, ellipses, thick lines, polygons) in place."""
    h, w = img.shape[:2]
    size = min(h, w)
    for colour in _random_colours(rng, count):
        kind = int(rng.integers(0, 4))
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        r = float(rng.uniform(0.03, 0.25)) * size
        if kind == 0:
            box = (
                (cx, cy),
                (r * float(rng.uniform(0.3, 2)), r * float(rng.uniform(0.3, 2))),
                float(rng.uniform(0, 180)),
            )
            cv2.fillConvexPoly(
                img, np.round(cv2.boxPoints(box)).astype(np.int32), colour, cv2.LINE_AA
            )
        elif kind == 1:
            axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.3, 1))))
            cv2.ellipse(
                img,
                (int(cx), int(cy)),
                axes,
                float(rng.uniform(0, 180)),
                0,
                360,
                colour,
                -1,
                cv2.LINE_AA,
            )
        elif kind == 2:
            a = float(rng.uniform(0, np.pi))
            p1 = (int(cx - r * math.cos(a)), int(cy - r * math.sin(a)))
            p2 = (int(cx + r * math.cos(a)), int(cy + r * math.sin(a)))
            cv2.line(img, p1, p2, colour, int(rng.integers(1, max(2, size // 40))), cv2.LINE_AA)
        else:
            k = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.4, 1.0, k)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour, cv2.LINE_AA)


def _shaded_capsule(
    img: np.ndarray,
    a: tuple[float, float],
    b: tuple[float, float],
    ra: float,
    rb: float,
    colour: np.ndarray,
    ids: np.ndarray | None = None,
    pid: int = 0,
) -> None:
    if ids is not None:
        draw_capsule(ids, a, b, ra, rb, pid)
    for k, (f, s) in enumerate(((0.65, 1.0), (0.9, 0.7), (1.05, 0.35))):
        c = tuple(float(min(255.0, v * f)) for v in colour)
        draw_capsule(
            img, a, b, max(0.6, ra * s), max(0.6, rb * s), c, cv2.LINE_AA if k == 0 else cv2.LINE_8
        )


def draw_distractor_limbs(
    img: np.ndarray,
    rng: np.random.Generator,
    count: int,
    person_px: float,
    skin_tones: list[np.ndarray],
) -> None:
    """Draw ``count`` limb-like shaded capsules (skin or cloth coloured) into the background, in place.

    Arguments:
        img: (H, W, 3) image.
        rng: random generator.
        count: number of capsules.
        person_px: typical person height in pixels (sets limb sizes).
        skin_tones: BGR colours to draw skin-coloured limbs from.
    """
    h, w = img.shape[:2]
    for _ in range(count):
        length = float(rng.uniform(0.12, 0.3)) * person_px
        ang = float(rng.uniform(0, 2 * np.pi))
        a = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
        b = (a[0] + length * math.cos(ang), a[1] + length * math.sin(ang))
        ra = float(rng.uniform(0.02, 0.05)) * person_px
        if skin_tones and rng.random() < 0.5:
            colour = skin_tones[int(rng.integers(len(skin_tones)))]
        else:
            colour = np.array(_random_colour(rng))
        _shaded_capsule(img, a, b, ra, ra * float(rng.uniform(0.6, 1.0)), colour)


def draw_occluder(
    img: np.ndarray,
    ids: np.ndarray,
    rng: np.random.Generator,
    anchor: tuple[float, float],
    person_px: float,
) -> None:
    """Draw one object in front of everything, over ``anchor`` (a point on a person), in place.

    Bars (poles, railings), boxes, round objects and polygons, sized relative to the person's
    height in pixels; their pixels get ``OCCLUDER_ID`` in the part-id buffer.
    """
    kind = int(rng.integers(0, 4))
    colour = np.array(_random_colour(rng))
    cx, cy = anchor
    if kind == 0:  # bar
        length = float(rng.uniform(0.5, 1.5)) * person_px
        width = float(rng.uniform(0.04, 0.1)) * person_px
        ang = float(rng.choice([0.5 * np.pi, 0.0, rng.uniform(0, np.pi)]))
        dx, dy = 0.5 * length * math.cos(ang), 0.5 * length * math.sin(ang)
        _shaded_capsule(
            img, (cx - dx, cy - dy), (cx + dx, cy + dy), width, width, colour, ids, OCCLUDER_ID
        )
        return
    size = float(rng.uniform(0.12, 0.4)) * person_px
    if kind == 1:  # box
        box = (
            (cx, cy),
            (size * float(rng.uniform(0.6, 1.6)), size * float(rng.uniform(0.6, 1.6))),
            float(rng.uniform(-20, 20)),
        )
        pts = cv2.boxPoints(box)
    elif kind == 2:  # round object
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack(
            [
                cx + 0.5 * size * np.cos(ang),
                cy + 0.5 * size * float(rng.uniform(0.6, 1.0)) * np.sin(ang),
            ],
            axis=1,
        )
    else:  # irregular convex polygon
        ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(4, 8))))
        rad = 0.5 * size * rng.uniform(0.6, 1.0, len(ang))
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
    hull = cv2.convexHull(np.round(np.asarray(pts) * 16).astype(np.int32))
    cv2.fillConvexPoly(ids, hull, OCCLUDER_ID, cv2.LINE_8, 4)
    dark = tuple(float(v * 0.7) for v in colour)
    cv2.fillConvexPoly(img, hull, dark, cv2.LINE_AA, 4)
    centre = hull.reshape(-1, 2).mean(axis=0)
    inner = np.round(
        centre + (hull.reshape(-1, 2) - centre) * 0.8 - np.array([0.02, 0.03]) * size * 16
    ).astype(np.int32)
    cv2.fillConvexPoly(img, inner, tuple(float(v) for v in colour), cv2.LINE_8, 4)
