"""Deterministic drawn faces with seven expressions, for demos and tests.

Each example is a pure function of its index: the label is ``index % 7``, the subject comes
from blocks of 70 indices (7 subjects per block, each with all seven expressions), and every
random choice comes from an rng seeded with (a fixed constant, index). A subject has its own
face shape, skin tone, eye spacing and feature sizes; each example adds jitter in position,
scale, rotation, expression intensity, brightness and noise. The expressions differ in
brows, eyes and mouth the way the CK+ peak frames do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ferqueue.data.emotions import CK_CLASSES
from ferqueue.data.preprocess import preprocess_image

SYNTHETIC_CLASSES = CK_CLASSES
SYNTHETIC_VERSION = "synthetic-faces-v1"  # part of the fingerprint: bump when the drawing changes
_SEED = 20240516
_WORK = 96  # drawing resolution in pixels; the result is resized like a real image
_STROKE = 3  # line width in pixels at the drawing resolution
_SUBJECTS_PER_BLOCK = 7
_BLOCK = 10 * _SUBJECTS_PER_BLOCK  # 70 indices -> 7 subjects with 10 faces each
# Per-example jitter, in working-resolution pixels, degrees and multipliers.
_JITTER = {
    "shift": 3.5,
    "scale": 0.07,
    "rotation": 4.0,
    "intensity": (0.85, 1.15),
    "brightness": (0.82, 1.15),
    "noise": (2.0, 7.0),
}


def synthetic_label(index: int) -> int:
    return index % len(SYNTHETIC_CLASSES)


def synthetic_subject(index: int) -> int:
    """Subject number of an example: about one subject per 10 examples, at least 7."""
    block, j = divmod(index, _BLOCK)
    # Rotating by j // 7 gives each subject of the block every label (10 faces, 7 classes).
    return block * _SUBJECTS_PER_BLOCK + (j % 7 + j // 7) % _SUBJECTS_PER_BLOCK


def subject_name(subject: int) -> str:
    return f"S{subject + 1:03d}"


@dataclass(frozen=True)
class _Subject:
    skin: tuple[float, float, float]
    background: float
    hair: float
    face_w: float  # half-width of the face as a fraction of the image
    face_h: float
    eye_dx: float  # the remaining lengths are in face units (half-width / half-height)
    eye_y: float
    eye_w: float
    eye_h: float
    brow_gap: float
    brow_w: float
    nose_len: float
    mouth_y: float
    mouth_w: float
    hairline: float


def _subject(subject: int) -> _Subject:
    rng = np.random.default_rng([_SEED, 1, subject])
    tone = rng.uniform(105, 215)
    warmth = rng.uniform(0.0, 0.18)
    return _Subject(
        skin=(tone * (1 + warmth), tone, tone * (1 - warmth)),
        background=rng.uniform(15, 110),
        hair=rng.uniform(10, 80),
        face_w=rng.uniform(0.56, 0.62),
        face_h=rng.uniform(0.72, 0.78),
        eye_dx=rng.uniform(0.37, 0.43),
        eye_y=rng.uniform(-0.19, -0.15),
        eye_w=rng.uniform(0.15, 0.20),
        eye_h=rng.uniform(0.06, 0.08),
        brow_gap=rng.uniform(0.12, 0.15),
        brow_w=rng.uniform(0.17, 0.23),
        nose_len=rng.uniform(0.22, 0.32),
        mouth_y=rng.uniform(0.47, 0.51),
        mouth_w=rng.uniform(0.32, 0.40),
        hairline=rng.uniform(-0.95, -0.70),
    )


@dataclass(frozen=True)
class _Expression:
    brow_raise: float  # up is positive
    brow_inner: float  # inner ends up (+, sad/fear) or down (-, anger's V)
    brow_arch: float
    eye_open: float  # multiplies the subject's eye height
    mouth_width: float  # multiplies the subject's mouth width
    corner_lift: tuple[float, float]  # left, right mouth corner lift (up is positive)
    upper_lip: float  # centre of the upper lip below the corners (+) or above them (-)
    opening: float  # lower lip below the upper lip: 0 is a closed mouth
    lip_press: int = 0  # extra stroke width for pressed lips
    teeth: bool = False
    round_mouth: bool = False
    nose_wrinkles: bool = False
    brow_furrow: bool = False
    forehead_lines: bool = False
    cheek_lines: bool = False


# Facial action units of the CK+ peaks, drawn: AU1+2 raise the brows, AU4 lowers and draws
# them together, AU5 widens the eyes, AU6/7 narrow them, AU9/10 wrinkle the nose and raise
# the upper lip, AU12 pulls the corners up, AU15 pulls them down, AU20 stretches the mouth,
# AU23/24 press the lips, AU25-27 open the mouth, unilateral AU14 is contempt's smirk.
_EXPRESSIONS = {
    "anger": _Expression(
        brow_raise=-0.07,
        brow_inner=-0.16,
        brow_arch=0.0,
        eye_open=0.65,
        mouth_width=0.75,
        corner_lift=(-0.01, -0.01),
        upper_lip=0.0,
        opening=0.0,
        lip_press=3,
        brow_furrow=True,
    ),
    "contempt": _Expression(
        brow_raise=0.0,
        brow_inner=0.0,
        brow_arch=0.02,
        eye_open=0.90,
        mouth_width=0.95,
        corner_lift=(-0.02, 0.18),
        upper_lip=-0.03,
        opening=0.0,
        lip_press=1,
    ),
    "disgust": _Expression(
        brow_raise=-0.06,
        brow_inner=-0.02,
        brow_arch=0.0,
        eye_open=0.45,
        mouth_width=0.90,
        corner_lift=(-0.07, -0.07),
        upper_lip=-0.14,
        opening=0.12,
        teeth=True,
        nose_wrinkles=True,
    ),
    "fear": _Expression(
        brow_raise=0.11,
        brow_inner=0.08,
        brow_arch=0.0,
        eye_open=1.80,
        mouth_width=1.30,
        corner_lift=(-0.04, -0.04),
        upper_lip=0.0,
        opening=0.09,
        teeth=True,
        forehead_lines=True,
    ),
    "happy": _Expression(
        brow_raise=0.02,
        brow_inner=0.0,
        brow_arch=0.03,
        eye_open=0.50,
        mouth_width=1.25,
        corner_lift=(0.15, 0.15),
        upper_lip=0.03,
        opening=0.18,
        teeth=True,
        cheek_lines=True,
    ),
    "sadness": _Expression(
        brow_raise=0.0,
        brow_inner=0.17,
        brow_arch=-0.03,
        eye_open=0.70,
        mouth_width=0.80,
        corner_lift=(-0.14, -0.14),
        upper_lip=-0.05,
        opening=0.0,
        lip_press=1,
    ),
    "surprise": _Expression(
        brow_raise=0.16,
        brow_inner=0.0,
        brow_arch=0.06,
        eye_open=1.90,
        mouth_width=0.45,
        corner_lift=(0.0, 0.0),
        upper_lip=-0.10,
        opening=0.34,
        round_mouth=True,
        forehead_lines=True,
    ),
}


def _parabola(p0, p1, p2, n: int = 12) -> list[tuple[float, float]]:
    """Points of the quadratic curve through p0 and p2 that passes p1 at its midpoint."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, m, b = (np.asarray(p, dtype=float) for p in (p0, p1, p2))
    control = 2 * m - (a + b) / 2  # Bezier control point that puts the curve through m
    pts = (1 - t) ** 2 * a + 2 * (1 - t) * t * control + t**2 * b
    return list(map(tuple, pts.tolist()))


def _draw_face(subject: _Subject, expr: _Expression, rng: np.random.Generator) -> Image.Image:
    intensity = rng.uniform(*_JITTER["intensity"])  # CK+ peaks vary in strength
    scale = 1 + rng.uniform(-1, 1) * _JITTER["scale"]
    a = subject.face_w * _WORK * scale
    b = subject.face_h * _WORK * scale
    # A tight crop like CK+48's: brows to chin fill the frame, so the face centre sits low.
    cx = _WORK / 2 + rng.uniform(-1, 1) * _JITTER["shift"]
    cy = _WORK / 2 - 0.12 * b + rng.uniform(-1, 1) * _JITTER["shift"]

    def p(x: float, y: float) -> tuple[float, float]:
        return (cx + x * a, cy + y * b)

    bg = subject.background
    image = Image.new("RGB", (_WORK, _WORK), (int(bg), int(bg), int(bg)))
    draw = ImageDraw.Draw(image)
    skin = tuple(int(min(255, c)) for c in subject.skin)
    dark = tuple(int(c * 0.35) for c in skin)
    mid = tuple(int(c * 0.7) for c in skin)
    line = _STROKE

    hair = int(subject.hair)
    draw.ellipse([p(-1.08, -1.25), p(1.08, 0.2)], fill=(hair, hair, hair))
    draw.ellipse([p(-1.0, subject.hairline), p(1.0, 1.0)], fill=skin)
    draw.ellipse([p(-0.95, -0.45), p(0.95, 1.0)], fill=skin)  # cheeks and jaw below the hair

    # Eyes: sclera, iris and lids; open wider for surprise/fear, narrowed for happy/disgust.
    open_ = 1 + (expr.eye_open - 1) * intensity
    eh = max(0.012, subject.eye_h * open_)
    for side in (-1, 1):
        ex, ey = side * subject.eye_dx, subject.eye_y
        box = [p(ex - subject.eye_w, ey - eh * 2), p(ex + subject.eye_w, ey + eh * 2)]
        draw.ellipse(box, fill=(235, 235, 235), outline=dark, width=max(1, line - 1))
        ir = min(subject.eye_w * 0.45, eh * 2.4)
        draw.ellipse(
            [p(ex - ir * 0.75, ey - min(ir, eh * 2)), p(ex + ir * 0.75, ey + min(ir, eh * 2))], fill=dark
        )
        if expr.cheek_lines:  # AU6 raises the cheek under the eye
            draw.line(
                _parabola(
                    p(ex - subject.eye_w, ey + eh * 2 + 0.05),
                    p(ex, ey + eh * 2 + 0.02),
                    p(ex + subject.eye_w, ey + eh * 2 + 0.05),
                ),
                fill=mid,
                width=line - 1,
            )

        # Brows: raise, inner-end slant (V for anger, /\ for sadness and fear) and arch.
        base = ey - eh * 2 - subject.brow_gap
        inner_x, outer_x = ex - side * subject.brow_w * 0.45, ex + side * subject.brow_w * 1.05
        raise_ = expr.brow_raise * intensity
        inner_y = base - raise_ - expr.brow_inner * intensity
        outer_y = base - raise_ + 0.02
        mid_y = (inner_y + outer_y) / 2 - expr.brow_arch * intensity - 0.02
        brow_width = line + 2 + (1 if expr.brow_furrow else 0)
        draw.line(
            _parabola(p(inner_x, inner_y), p((inner_x + outer_x) / 2, mid_y), p(outer_x, outer_y)),
            fill=dark,
            width=brow_width,
            joint="curve",
        )

    if expr.brow_furrow:  # AU4 draws vertical lines between the brows
        for dx in (-0.06, 0.06):
            draw.line(
                [p(dx, subject.eye_y - 0.22), p(dx * 0.6, subject.eye_y - 0.06)],
                fill=mid,
                width=max(1, line - 1),
            )
    if expr.forehead_lines:  # raised brows fold the forehead
        for k in range(2):
            y = subject.eye_y - 0.36 - 0.08 * k
            draw.line(_parabola(p(-0.4, y + 0.02), p(0, y), p(0.4, y + 0.02)), fill=mid, width=1)

    # Nose.
    top, tip = subject.eye_y + 0.05, subject.eye_y + 0.05 + subject.nose_len
    draw.line([p(0.02, top), p(0.05, tip)], fill=mid, width=max(1, line - 1))
    draw.line(_parabola(p(-0.12, tip - 0.02), p(0, tip + 0.04), p(0.12, tip - 0.02)), fill=dark, width=line)
    if expr.nose_wrinkles:  # AU9 wrinkles the bridge of the nose
        for k in range(3):
            y = top + 0.04 + 0.05 * k
            draw.line([p(-0.14, y + 0.02), p(0, y), p(0.14, y + 0.02)], fill=dark, width=max(1, line - 1))

    # Mouth: two curves through the corners (upper and lower lip) or an O for surprise.
    my = subject.mouth_y
    w = subject.mouth_w * (1 + (expr.mouth_width - 1) * intensity)
    if expr.round_mouth:
        mw, mh = w, expr.opening * intensity / 2 + 0.04
        draw.ellipse(
            [p(-mw, my - mh * 0.8), p(mw, my + mh * 1.2)], fill=(35, 20, 20), outline=dark, width=line
        )
        return image
    lift_l, lift_r = (c * intensity for c in expr.corner_lift)
    left, right = p(-w, my - lift_l), p(w, my - lift_r)
    upper = my + expr.upper_lip * intensity - (lift_l + lift_r) / 4
    lower = upper + expr.opening * intensity
    upper_curve = _parabola(left, p(0, upper), right)
    if expr.opening > 0:
        lower_curve = _parabola(right, p(0, lower), left)
        draw.polygon(upper_curve + lower_curve, fill=(40, 20, 20))
        if expr.teeth:
            teeth_curve = _parabola(right, p(0, upper + (lower - upper) * 0.4), left)
            draw.polygon(upper_curve + teeth_curve, fill=(230, 230, 225))
        draw.line(upper_curve + lower_curve + [upper_curve[0]], fill=dark, width=line, joint="curve")
    else:
        draw.line(upper_curve, fill=dark, width=line + expr.lip_press, joint="curve")
    if expr.corner_lift[0] != expr.corner_lift[1]:  # the smirk's dimple on the raised side
        x, y = right
        draw.line([(x + a * 0.02, y - b * 0.06), (x + a * 0.06, y + b * 0.02)], fill=mid, width=line)
    return image


def synthetic_face(index: int, image_size: int) -> tuple[np.ndarray, int, str]:
    """Example ``index``: (float32 image_size x image_size x 3 in [0, 1], label, subject id)."""
    label = synthetic_label(index)
    subject = synthetic_subject(index)
    rng = np.random.default_rng([_SEED, index])
    image = _draw_face(_subject(subject), _EXPRESSIONS[SYNTHETIC_CLASSES[label]], rng)
    image = image.rotate(
        rng.uniform(-1, 1) * _JITTER["rotation"],
        resample=Image.Resampling.BILINEAR,
        fillcolor=image.getpixel((0, 0)),
    )
    pixels = np.asarray(image, dtype=np.float32) * np.float32(rng.uniform(*_JITTER["brightness"]))
    sigma = np.float32(rng.uniform(*_JITTER["noise"]))
    pixels += sigma * rng.standard_normal((_WORK, _WORK, 1), dtype=np.float32)  # sensor noise, gray
    noisy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return preprocess_image(noisy, image_size), label, subject_name(subject)
