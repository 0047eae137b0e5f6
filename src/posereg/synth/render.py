"""Rendering people as shaded 3D volumes with a painter's algorithm, plus a part-id buffer.

Each body part is a tapered capsule (limbs, neck, hands, feet), a convex hull of spheres
(chest, abdomen) or an ellipsoid (head), projected with the camera and drawn far-to-near with
OpenCV primitives (three nested fills per part give a cheap shading gradient). The same
primitives are drawn into a uint8 part-id buffer, ``1 + 16 * person + part`` (0 = background,
``OCCLUDER_ID`` = an occluding object), which decides which keypoints are covered and gives each
person's silhouette (area, box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from posereg.synth.body import JOINT_NAMES, NUM_JOINTS, joint_index

__all__ = [
    "PART_NAMES",
    "OCCLUDER_ID",
    "SKIN_TONES_RGB",
    "MAX_PEOPLE",
    "Appearance",
    "PersonView",
    "sample_appearance",
    "part_id",
    "draw_people",
    "draw_shadows",
    "painter_order",
    "draw_capsule",
    "ellipsoid_outline",
    "keypoint_visibility",
    "own_part_ids",
]

PART_NAMES: tuple[str, ...] = (
    "head", "neck", "chest", "abdomen",
    "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm", "left_hand", "right_hand",
    "left_thigh", "right_thigh", "left_shin", "right_shin", "left_foot", "right_foot",
)  # fmt: skip
_P = {name: i for i, name in enumerate(PART_NAMES)}
PARTS_PER_PERSON = 16
OCCLUDER_ID = 255
MAX_PEOPLE = 14  # 1 + 16 * 13 + 15 = 224 < OCCLUDER_ID

# Capsules: part -> (joint a, joint b, radius at a, radius at b (units of H), colour role).
_CAPSULES: dict[str, tuple[str, str, float, float, str]] = {
    "neck": ("thorax", "head", 0.030, 0.027, "skin"),
    "left_upper_arm": ("left_shoulder", "left_elbow", 0.028, 0.022, "shirt"),
    "right_upper_arm": ("right_shoulder", "right_elbow", 0.028, 0.022, "shirt"),
    "left_forearm": ("left_elbow", "left_wrist", 0.021, 0.015, "sleeve"),
    "right_forearm": ("right_elbow", "right_wrist", 0.021, 0.015, "sleeve"),
    "left_hand": ("left_wrist", "left_hand", 0.017, 0.013, "skin"),
    "right_hand": ("right_wrist", "right_hand", 0.017, 0.013, "skin"),
    "left_thigh": ("left_hip", "left_knee", 0.052, 0.033, "pants"),
    "right_thigh": ("right_hip", "right_knee", 0.052, 0.033, "pants"),
    "left_shin": ("left_knee", "left_ankle", 0.032, 0.021, "leg"),
    "right_shin": ("right_knee", "right_ankle", 0.032, 0.021, "leg"),
    "left_foot": ("left_ankle", "left_toe", 0.021, 0.016, "shoes"),
    "right_foot": ("right_ankle", "right_toe", 0.021, 0.016, "shoes"),
}
# Hulls of spheres: part -> ((joint, radius), ...), colour role.
_HULLS: dict[str, tuple[tuple[tuple[str, float], ...], str]] = {
    "chest": (
        (("left_shoulder", 0.046), ("right_shoulder", 0.046), ("thorax", 0.055), ("spine", 0.075)),
        "shirt",
    ),
    "abdomen": (
        (("spine", 0.070), ("pelvis", 0.072), ("left_hip", 0.058), ("right_hip", 0.058)),
        "pants",
    ),
}
# Head ellipsoid semi-axes (units of H) along the head's right, forward and up axes. Every face
# keypoint and the head top lie inside it, so their pixels fall on the head.
_HEAD_AXES = np.array([0.048, 0.062, 0.070])
# Painter's-order bias (units of H, added to the depth): the neck goes behind the head.
_DEPTH_BIAS = {"neck": 0.03}

# The parts a keypoint belongs to: it is visible when its pixel shows one of them.
_OWN_PARTS: dict[str, tuple[str, ...]] = {
    "pelvis": ("abdomen",), "spine": ("chest", "abdomen"), "thorax": ("chest", "neck"),
    "neck": ("neck", "head"), "head": ("head",), "head_top": ("head",), "nose": ("head",),
    "left_eye": ("head",), "right_eye": ("head",), "left_ear": ("head",), "right_ear": ("head",),
}  # fmt: skip
for _s in ("left", "right"):
    _OWN_PARTS |= {
        f"{_s}_shoulder": ("chest", f"{_s}_upper_arm"),
        f"{_s}_elbow": (f"{_s}_upper_arm", f"{_s}_forearm"),
        f"{_s}_wrist": (f"{_s}_forearm", f"{_s}_hand"),
        f"{_s}_hand": (f"{_s}_hand",),
        f"{_s}_hip": ("abdomen", f"{_s}_thigh"),
        f"{_s}_knee": (f"{_s}_thigh", f"{_s}_shin"),
        f"{_s}_ankle": (f"{_s}_shin", f"{_s}_foot"),
        f"{_s}_toe": (f"{_s}_foot",),
    }
# Keypoints on the head's surface: also hidden when on the far side of the head.
SURFACE_JOINTS = np.array(
    [joint_index(n) for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
)

# Realistic skin tones (RGB), light to dark, loosely following the Fitzpatrick scale.
SKIN_TONES_RGB = np.array(
    [(255, 224, 196), (241, 194, 158), (234, 192, 134), (224, 172, 105), (198, 134, 66),
     (170, 112, 70), (141, 85, 36), (110, 68, 40), (92, 51, 23), (62, 38, 22)], dtype=np.float64
)  # fmt: skip
_HAIR_RGB = np.array(
    [(20, 16, 14), (40, 28, 20), (70, 45, 25), (110, 75, 40), (160, 120, 70), (200, 170, 110),
     (150, 150, 150), (220, 220, 215), (120, 30, 25)], dtype=np.float64
)  # fmt: skip


def part_id(person: int, part: int) -> int:
    """Part-id buffer value of part ``part`` (index into ``PART_NAMES``) of person ``person``."""
    return 1 + PARTS_PER_PERSON * person + part


def own_part_ids(person: int) -> list[tuple[int, ...]]:
    """For each model joint (J), the part-id values that count as the joint itself."""
    return [tuple(part_id(person, _P[p]) for p in _OWN_PARTS[name]) for name in JOINT_NAMES]


_OWN_TABLE = np.zeros((NUM_JOINTS, PARTS_PER_PERSON), dtype=bool)
for _j, _name in enumerate(JOINT_NAMES):
    _OWN_TABLE[_j, [_P[p] for p in _OWN_PARTS[_name]]] = True


@dataclass
class Appearance:
    """Colours of one person (BGR, 0-255 floats).

    Arguments:
        skin, hair, shirt, pants, shoes: base colours (3,).
        long_sleeves: forearms covered by the shirt.
        long_pants: shins covered by the trousers.
        stripes: number of stripes across the shirt's chest (0: plain).
        stripe: colour of the stripes (3,), when there are any.
    """

    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    pants: np.ndarray
    shoes: np.ndarray
    long_sleeves: bool
    long_pants: bool
    stripes: int = 0
    stripe: np.ndarray | None = None

    def colour(self, role: str) -> np.ndarray:
        """Base colour (3,) of a colour role (skin, hair, shirt, pants, shoes, sleeve, leg)."""
        if role == "sleeve":
            return self.shirt if self.long_sleeves else self.skin
        if role == "leg":
            return self.pants if self.long_pants else self.skin
        return getattr(self, role)


def _cloth(rng: np.random.Generator) -> np.ndarray:
    """A clothing colour: 40 % neutral greys/black/white, else a random hue (BGR)."""
    if rng.random() < 0.4:
        g = rng.uniform(15, 235)
        return np.full(3, g) + rng.normal(0, 6, 3)
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(60, 255), rng.uniform(50, 240)]]], dtype=np.float32
    )
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Random skin tone, hair and clothing colours; a third of the shirts are striped."""
    skin = SKIN_TONES_RGB[rng.integers(len(SKIN_TONES_RGB))][::-1] * rng.uniform(0.9, 1.05)
    skin = skin + rng.normal(0, 5, 3)
    hair = _HAIR_RGB[rng.integers(len(_HAIR_RGB))][::-1] * rng.uniform(0.8, 1.1)
    if rng.random() < 0.1:  # bald or shaved
        hair = skin * 0.85
    elif rng.random() < 0.12:  # a hat or cap
        hair = _cloth(rng)
    shirt = np.clip(_cloth(rng), 0, 255)
    striped = rng.random() < 0.33
    return Appearance(
        skin=np.clip(skin, 0, 255),
        hair=np.clip(hair, 0, 255),
        shirt=shirt,
        pants=np.clip(_cloth(rng) * (0.6 if rng.random() < 0.5 else 1.0), 0, 255),
        shoes=np.clip(_cloth(rng) * 0.5, 0, 255),
        long_sleeves=bool(rng.random() < 0.5),
        long_pants=bool(rng.random() < 0.75),
        stripes=int(rng.integers(3, 9)) if striped else 0,
        stripe=np.clip(_cloth(rng), 0, 255) if striped else None,
    )


@dataclass
class PersonView:
    """One person as seen by the camera (all model joints).

    Arguments:
        joints_2d: pixel coordinates (J, 2).
        joints_cam: camera-frame coordinates (J, 3), mm.
        head_axes: the head's right, forward and up axes in camera coordinates (3, 3), as columns.
        K: the camera intrinsics (3, 3).
        height: standing height, mm.
        girth: limb thickness factor.
        appearance: colours.
    """

    joints_2d: np.ndarray
    joints_cam: np.ndarray
    head_axes: np.ndarray
    K: np.ndarray
    height: float
    girth: float
    appearance: Appearance


# ----------------------------------------------------------------------------------------------
# Primitives (fixed point: 4 fractional bits, so sub-pixel positions are honoured)

_SHIFT = 4
_ONE = 1 << _SHIFT
# Pixels. A joint's pixel centre is at most sqrt(2)/2 px from the joint, so parts at least this
# thick always cover the pixels of their own joints.
_MIN_RADIUS = 1.0
# Shading: (colour factor, size factor, shift toward the light in units of the radius).
_LEVELS = ((0.62, 1.0, 0.0), (0.86, 0.72, 0.18), (1.06, 0.38, 0.38))
_MIN_SHADED = 1.2  # pixels: inner shading levels thinner than this are not drawn
_CIRCLE = np.stack(
    [
        np.cos(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
        np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
    ],
    axis=1,
)


def draw_capsule(
    img: np.ndarray,
    a: tuple[float, float],
    b: tuple[float, float],
    ra: float,
    rb: float,
    color: float | tuple[float, ...],
    line_type: int = cv2.LINE_8,
) -> None:
    """Fill a tapered capsule: circles of radius ra at a and rb at b (pixels) and the band between."""
    ax, ay, bx, by = a[0] * _ONE, a[1] * _ONE, b[0] * _ONE, b[1] * _ONE  # fixed point
    ra, rb = ra * _ONE, rb * _ONE
    dx, dy = bx - ax, by - ay
    length = math.hypot(dx, dy)
    if length > 0.01:
        nx, ny = -dy / length, dx / length
        quad = np.array(
            [ax + nx * ra, ay + ny * ra, bx + nx * rb, by + ny * rb,
             bx - nx * rb, by - ny * rb, ax - nx * ra, ay - ny * ra]
        )  # fmt: skip
        quad += 0.5
        cv2.fillConvexPoly(
            img, np.floor(quad).astype(np.int32).reshape(4, 2), color, line_type, _SHIFT
        )
    floor = math.floor
    cv2.circle(
        img, (floor(ax + 0.5), floor(ay + 0.5)), floor(ra + 0.5), color, -1, line_type, _SHIFT
    )
    cv2.circle(
        img, (floor(bx + 0.5), floor(by + 0.5)), floor(rb + 0.5), color, -1, line_type, _SHIFT
    )


def _fill_hull(
    img: np.ndarray, pts: np.ndarray, color: float | tuple[float, ...], line_type: int
) -> None:
    hull = cv2.convexHull(np.round(pts * _ONE).astype(np.int32))
    cv2.fillConvexPoly(img, hull, color, line_type, _SHIFT)


def _ellipse(
    img: np.ndarray,
    c: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    color: float | tuple[float, ...],
    line_type: int,
) -> None:
    cv2.ellipse(
        img,
        (round(c[0] * _ONE), round(c[1] * _ONE)),
        (round(axes[0] * _ONE), round(axes[1] * _ONE)),
        angle, 0, 360, color, -1, line_type, _SHIFT,
    )  # fmt: skip


_ROLES = ("skin", "hair", "shirt", "pants", "shoes", "sleeve", "leg")


_LEVEL_GAIN = np.array([k for k, _, _ in _LEVELS])[:, None]
_LEVEL_BIAS = np.array([8.0 if k > 1 else 0.0 for k, _, _ in _LEVELS])[:, None]


def _shade(base: np.ndarray) -> list[tuple[float, float, float]]:
    """The colour (BGR) of each shading level for a base colour."""
    return [tuple(c) for c in np.minimum(255.0, base * _LEVEL_GAIN + _LEVEL_BIAS).tolist()]


def ellipsoid_outline(
    centre: np.ndarray, axes: np.ndarray, K: np.ndarray
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Exact perspective outline of an ellipsoid (an ellipse in the image).

    The ellipsoid is ``{centre + axes @ y : |y| <= 1}``, i.e. ``(X - c)^T Q (X - c) <= 1`` with
    ``Q = (axes axes^T)^-1``; the rays d tangent to it satisfy ``(d^T Q c)^2 = (d^T Q d)(c^T Q c - 1)``,
    the cone ``d^T (Q c c^T Q - (c^T Q c - 1) Q) d = 0``; with ``d = K^-1 x`` this is the image
    conic, positive inside. The camera must be outside the ellipsoid.

    Arguments:
        centre: ellipsoid centre (3,), camera frame.
        axes: semi-axes as columns (3, 3), camera frame.
        K: intrinsics (3, 3).

    Returns:
        (centre (u, v), (major, minor) semi-axes in pixels, angle of the major axis in degrees).
    """
    q = np.linalg.inv(axes @ axes.T)
    qc = q @ centre
    cone = np.outer(qc, qc) - (centre @ qc - 1.0) * q
    (fx, s, cx), (_, fy, cy) = K[0], K[1]
    k_inv = np.array(
        [[1 / fx, -s / (fx * fy), (s * cy - cx * fy) / (fx * fy)], [0, 1 / fy, -cy / fy], [0, 0, 1]]
    )
    (a, b, d), (_, c, e), (_, _, f) = (k_inv.T @ cone @ k_inv).tolist()
    # Centre p0 solves [[a, b], [b, c]] p0 = -(d, e); inside: (p - p0)^T (-A) (p - p0) <= g.
    det = a * c - b * b
    u0, v0 = (b * e - c * d) / det, (b * d - a * e) / det
    g = f + d * u0 + e * v0
    # Eigenvalues of A (both negative for an ellipse); the major axis has the smaller |lambda|.
    half_tr, disc = 0.5 * (a + c), math.hypot(0.5 * (a - c), b)
    lam_small, lam_big = half_tr + disc, half_tr - disc  # |lam_small| <= |lam_big|
    major = math.sqrt(max(g / -lam_small, 0.0))
    minor = math.sqrt(max(g / -lam_big, 0.0))
    angle = 0.5 * math.degrees(math.atan2(2 * b, a - c))  # eigenvector of the larger eigenvalue
    return (u0, v0), (major, minor), angle


# ----------------------------------------------------------------------------------------------
# People


def _person_items(
    p: int, view: PersonView, light: tuple[float, float]
) -> list[tuple[float, int, int, tuple]]:
    """Draw items (depth, person, part, geometry) of one person."""
    pts = view.joints_2d
    z = view.joints_cam[:, 2]
    scale_h = float(view.K[0, 0]) * view.height  # pixels per unit of H at depth 1 mm
    app = view.appearance
    shades = {role: _shade(app.colour(role)) for role in _ROLES}
    items = []
    for name, (ja, jb, ra, rb, role) in _CAPSULES.items():
        ia, ib = joint_index(ja), joint_index(jb)
        g = view.girth if role in ("shirt", "pants", "sleeve", "leg") else 1.0
        geom = (
            "capsule",
            (float(pts[ia, 0]), float(pts[ia, 1])),
            (float(pts[ib, 0]), float(pts[ib, 1])),
            max(_MIN_RADIUS, scale_h * ra * g / z[ia]),
            max(_MIN_RADIUS, scale_h * rb * g / z[ib]),
            shades[role],
        )
        depth = 0.5 * (z[ia] + z[ib]) + _DEPTH_BIAS.get(name, 0.0) * view.height
        items.append((depth, p, _P[name], geom))
    for name, (spheres, role) in _HULLS.items():
        idx = [joint_index(j) for j, _ in spheres]
        radii = np.array(
            [scale_h * r * view.girth / z[i] for (_, r), i in zip(spheres, idx, strict=True)]
        )
        centres = pts[idx]
        outline = (
            centres[:, None, :] + np.maximum(radii, _MIN_RADIUS)[:, None, None] * _CIRCLE[None]
        ).reshape(-1, 2)
        bands = _stripes(view, app) if name == "chest" else None
        items.append((float(z[idx].mean()), p, _P[name], ("hull", outline, shades[role], bands)))
    h = joint_index("head")
    centre_cam = view.joints_cam[h]
    axes = view.head_axes * (_HEAD_AXES * view.height)  # scaled semi-axes as columns
    c, (major, minor), angle = ellipsoid_outline(centre_cam, axes, view.K)
    fwd = view.head_axes[:, 1]
    facing = -float(fwd @ centre_cam) / float(np.linalg.norm(centre_cam))  # 1: faces the camera
    # The face: a smaller ellipsoid shifted forward and down, visible unless seen from behind.
    face_c = centre_cam + view.head_axes @ (np.array([0.0, 0.016, -0.012]) * view.height)
    face = ellipsoid_outline(face_c, 0.8 * axes, view.K)
    eyes = [
        (float(pts[j, 0]), float(pts[j, 1]))
        for j in (joint_index("left_eye"), joint_index("right_eye"))
    ]
    # One pixel more than the exact outline, so every face point's pixel lies on the head.
    geom = ("head", c, (major + _MIN_RADIUS, minor + _MIN_RADIUS), angle, face, facing, eyes, app)
    items.append((float(centre_cam[2]), p, _P["head"], geom))
    return items


def _stripes(view: PersonView, app: Appearance) -> tuple[list[np.ndarray], tuple] | None:
    """Bands across the torso (perpendicular to thorax-pelvis in the image), or None."""
    if app.stripes == 0 or app.stripe is None:
        return None
    top = view.joints_2d[joint_index("thorax")]
    axis = view.joints_2d[joint_index("pelvis")] - top
    length = float(np.hypot(*axis))
    if length < 2.0 * app.stripes:
        return None  # too small to see stripes
    down = axis / length
    across = np.array([-down[1], down[0]]) * 4.0 * length
    step = 1.3 * length / app.stripes
    bands = []
    for k in range(app.stripes):
        a = top + down * (-0.3 * length + k * step)
        b = a + down * 0.5 * step
        bands.append(np.array([a - across, a + across, b + across, b - across], dtype=np.float32))
    return bands, tuple(float(c) for c in 0.8 * app.stripe)


def _draw_item(
    img: np.ndarray, ids: np.ndarray, pid: int, geom: tuple, light: tuple[float, float]
) -> None:
    kind = geom[0]
    lx, ly = light
    if kind == "capsule":
        _, a, b, ra, rb, shades = geom
        draw_capsule(ids, a, b, ra, rb, pid)
        for k, (color, (_, size, shift)) in enumerate(zip(shades, _LEVELS, strict=True)):
            sa, sb = ra * size, rb * size
            if k > 0 and max(sa, sb) < _MIN_SHADED:
                break  # too thin to show shading
            oa, ob = shift * ra, shift * rb
            draw_capsule(
                img, (a[0] + lx * oa, a[1] + ly * oa), (b[0] + lx * ob, b[1] + ly * ob), sa, sb, color,
                cv2.LINE_AA if k == 0 else cv2.LINE_8,
            )  # fmt: skip
    elif kind == "hull":
        _, outline, shades, bands = geom
        _fill_hull(ids, outline, pid, cv2.LINE_8)
        centroid = outline.mean(axis=0)
        radius = float(np.abs(outline - centroid).max())
        for k, (color, (_, size, shift)) in enumerate(zip(shades, _LEVELS, strict=True)):
            if k > 0 and radius * size < _MIN_SHADED:
                break
            pts = (
                centroid + (outline - centroid) * size + np.array([lx, ly]) * (shift * 0.5 * radius)
            )
            _fill_hull(img, pts, color, cv2.LINE_AA if k == 0 else cv2.LINE_8)
        if bands is not None:
            polys, color = bands
            hull = cv2.convexHull(outline.astype(np.float32))
            for band in polys:  # the stripes, clipped to the part's outline
                area, inter = cv2.intersectConvexConvex(band, hull)
                if area > 0 and inter is not None:
                    pts = np.floor(inter.reshape(-1, 2) * _ONE + 0.5).astype(np.int32)
                    cv2.fillConvexPoly(img, pts, color, cv2.LINE_AA, _SHIFT)
    else:
        _, c, axes, angle, face, facing, eyes, app = geom
        _ellipse(ids, c, axes, angle, pid, cv2.LINE_8)
        hair = _shade(app.hair)
        skin = _shade(app.skin)
        _ellipse(img, c, axes, angle, hair[0], cv2.LINE_AA)
        hc = (c[0] + lx * 0.2 * axes[1], c[1] + ly * 0.2 * axes[1])
        _ellipse(img, hc, (0.7 * axes[0], 0.7 * axes[1]), angle, hair[1], cv2.LINE_8)
        if facing > -0.35:
            fc, fa, fangle = face
            _ellipse(img, fc, fa, fangle, skin[1], cv2.LINE_AA)
            hl = (fc[0] + lx * 0.25 * fa[1], fc[1] + ly * 0.25 * fa[1])
            _ellipse(img, hl, (0.45 * fa[0], 0.45 * fa[1]), fangle, skin[2], cv2.LINE_8)
            if facing > 0.3 and axes[1] > 5.0:
                r = round(max(0.7, 0.09 * axes[1]) * _ONE)
                for e in eyes:
                    centre = (round(e[0] * _ONE), round(e[1] * _ONE))
                    cv2.circle(img, centre, r, (25, 20, 20), -1, cv2.LINE_AA, _SHIFT)


def draw_people(
    img: np.ndarray, ids: np.ndarray, people: list[PersonView], light: tuple[float, float]
) -> None:
    """Draw people far-to-near into ``img`` (H, W, 3) BGR and their part ids into ``ids`` (H, W).

    Arguments:
        img: image to draw on, modified in place.
        ids: uint8 part-id buffer, modified in place.
        people: the people; person p gets ids ``part_id(p, part)``.
        light: unit vector (2,) in image coordinates pointing toward the light (for shading).
    """
    for _, p, part, geom in _sorted_items(people, light):
        _draw_item(img, ids, part_id(p, part), geom, light)


def _sorted_items(people: list[PersonView], light: tuple[float, float]) -> list[tuple]:
    if len(people) > MAX_PEOPLE:
        raise ValueError(f"at most {MAX_PEOPLE} people per image, got {len(people)}")
    items = []
    for p, view in enumerate(people):
        items.extend(_person_items(p, view, light))
    # Far to near; ties broken by person and part so the order is fully determined.
    items.sort(key=lambda it: (-it[0], it[1], it[2]))
    return items


def painter_order(people: list[PersonView]) -> list[tuple[int, int]]:
    """The (person, part) pairs in the order ``draw_people`` paints them (far to near)."""
    return [(p, part) for _, p, part, _ in _sorted_items(people, (0.0, -1.0))]


_SHADOW_JOINTS = [joint_index(n) for n in ("pelvis", "thorax", "left_ankle", "right_ankle")]


def draw_shadows(img: np.ndarray, people: list[PersonView], R: np.ndarray, t: np.ndarray) -> None:
    """Darken the floor (world z = 0) under each person with an elliptical shadow, in place.

    Arguments:
        img: (H, W, 3) image.
        people: the people.
        R, t: the camera's world-to-camera rotation (3, 3) and translation (3,), mm.
    """
    h, w = img.shape[:2]
    up = R[:, 2]  # world z in camera coordinates; the floor is {X : up . X = up . t}
    level = float(up @ t)
    side = np.cross(up, [0.0, 0.0, 1.0])
    if np.linalg.norm(side) < 1e-6:
        side = np.array([1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    depth = np.cross(up, side)
    for view in people:
        body = view.joints_cam[_SHADOW_JOINTS].mean(axis=0)  # under the body, standing or lying
        spot = body - (up @ body - level) * up
        if spot[2] < 100.0:
            continue
        axes = np.stack([side * 0.22 * view.height, depth * 0.16 * view.height, up], axis=1)
        (cu, cv), (major, minor), angle = ellipsoid_outline(spot, axes, view.K)
        x0, y0 = max(int(cu - major) - 1, 0), max(int(cv - major) - 1, 0)
        x1, y1 = min(int(cu + major) + 2, w), min(int(cv + major) + 2, h)
        if x1 <= x0 or y1 <= y0 or minor < 1.0:
            continue
        roi = img[y0:y1, x0:x1]
        dark = roi.copy()
        _ellipse(dark, (cu - x0, cv - y0), (major, minor), angle, (0, 0, 0), cv2.LINE_AA)
        cv2.addWeighted(dark, 0.35, roi, 0.65, 0.0, dst=roi)


def keypoint_visibility(ids: np.ndarray, person: int, view: PersonView) -> np.ndarray:
    """COCO visibility of every model joint of one person from the part-id buffer.

    A joint is 0 when it lies outside the image, i.e. outside [0, W - 1] x [0, H - 1] (the span
    of the pixel centres: labelled keypoints are never negative, as COCO's); otherwise 2 when
    that pixel shows one of the joint's own parts of this person (``own_part_ids``) and, for the
    nose, eyes and ears, the point faces the camera; otherwise 1 (covered by another part, person
    or occluder, or on the far side of the head).

    Returns:
        v (J,) int, values in {0, 1, 2}.
    """
    h, w = ids.shape
    cols = np.floor(view.joints_2d[:, 0] + 0.5).astype(np.int64)
    rows = np.floor(view.joints_2d[:, 1] + 0.5).astype(np.int64)
    u, vv = view.joints_2d[:, 0], view.joints_2d[:, 1]
    inside = (u >= 0) & (u <= w - 1) & (vv >= 0) & (vv <= h - 1) & (view.joints_cam[:, 2] > 0)
    v = np.zeros(NUM_JOINTS, dtype=np.int64)
    seen = ids[rows.clip(0, h - 1), cols.clip(0, w - 1)].astype(np.int64) - part_id(person, 0)
    mine = (seen >= 0) & (seen < PARTS_PER_PERSON)
    own = np.zeros(NUM_JOINTS, dtype=bool)
    own[mine] = _OWN_TABLE[np.flatnonzero(mine), seen[mine]]
    # Face points: the outward normal must point toward the camera.
    centre = view.joints_cam[joint_index("head")]
    normal = view.joints_cam[SURFACE_JOINTS] - centre
    faces = np.einsum("ij,ij->i", normal, -view.joints_cam[SURFACE_JOINTS]) > 0
    own[SURFACE_JOINTS] &= faces
    v[inside] = np.where(own[inside], 2, 1)
    return v
