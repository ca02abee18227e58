"""Drawing one face: a pure function of one row of factors (`render_face`), and its JPEG encoding.

No random numbers are drawn while drawing, so a factor table re-renders to the same pixels. Every
shape is built in canonical coordinates (celeb.synth.geometry) and mapped through the pose
(rotation, scale, shift) before it is drawn, so the only resampling is the final 2x -> 1x box
filter: a PIL affine resample of the finished image would cost more than all the drawing.
"""

from __future__ import annotations

import colorsys
import functools
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from celeb.data.schema import IMAGE_HEIGHT, IMAGE_WIDTH
from celeb.synth.factors import BEARD_STYLES, FACTOR_NAMES, BeardStyle
from celeb.synth.geometry import (
    CX, CY, EYE_Y, MOUTH_Y, NOSE_Y, eye_offset, face_half_height, face_half_width, mouth_corners, pose,
)

JPEG_QUALITY = 90

SUPERSAMPLE = 2  # draw at 2x and downsize: cheap anti-aliasing

SKIN_PALETTE = (  # skin_tone -> RGB
    (0.00, (255, 236, 228)), (0.10, (250, 222, 205)), (0.15, (243, 206, 178)),
    (0.45, (220, 168, 128)), (0.70, (172, 118, 80)), (1.00, (98, 62, 42)),
)
HAIR_RGB = {0: (34, 27, 26), 1: (226, 192, 118), 2: (108, 68, 40), 3: (168, 168, 172), 4: (156, 64, 34)}
EYE_WHITE, IRIS, DARK = (245, 245, 240), (72, 48, 32), (28, 22, 22)
LIPSTICK_RGB, GOLD, FRAME_RGB, MOUTH_RGB, TEETH_RGB = (192, 24, 58), (228, 188, 60), (24, 24, 26), (74, 22, 28), (240, 238, 230)

Color = tuple[int, int, int]
_ANGLES = np.linspace(0, 2 * np.pi, 28, endpoint=False)
_UNIT_CIRCLE = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)  # ellipses are drawn as 28-gons


def _mix(c1: Sequence[float], c2: Sequence[float], t: float) -> Color:
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(c1, c2))  # type: ignore[return-value]


def _hsv(h: float, s: float, v: float) -> Color:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))  # type: ignore[return-value]


def skin_rgb(tone: float) -> Color:
    stops = [t for t, _ in SKIN_PALETTE]
    return tuple(int(round(np.interp(tone, stops, [c[i] for _, c in SKIN_PALETTE]))) for i in range(3))  # type: ignore[return-value]


def hair_rgb(color: int, shade: float) -> Color:
    base = HAIR_RGB[int(color)]
    if color == 0:  # black stays black; shade only lifts it a little
        return tuple(int(c + 16 * (shade + 1)) for c in base)  # type: ignore[return-value]
    return tuple(int(min(255, c * (1 + 0.22 * shade))) for c in base)  # type: ignore[return-value]


@functools.cache
def _steps(k: int) -> np.ndarray:
    """k evenly spaced parameters from 0 to 1 (cached: shapes use the same few counts)."""
    steps = np.linspace(0.0, 1.0, k)
    steps.flags.writeable = False
    return steps


@functools.cache
def _bezier_basis(k: int) -> np.ndarray:
    """(k, 3) weights of a quadratic Bezier curve's three control points at k even steps."""
    t = _steps(k)[:, None]
    basis = np.concatenate([(1 - t) ** 2, 2 * t * (1 - t), t * t], axis=1)
    basis.flags.writeable = False
    return basis


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, k: int, power: float = 2.0) -> np.ndarray:
    """(k, 2) points of the superellipse |x/rx|^p + |y/ry|^p = 1 from angle start to stop (degrees, y down)."""
    t = math.radians(start) + math.radians(stop - start) * _steps(k)
    c, s = np.cos(t), np.sin(t)
    if power != 2.0:
        c, s = np.sign(c) * np.abs(c) ** (2 / power), np.sign(s) * np.abs(s) ** (2 / power)
    return np.stack([cx + rx * c, cy + ry * s], axis=1)


def _curve(p0: Sequence[float], mid: Sequence[float], p2: Sequence[float], k: int = 7) -> np.ndarray:
    """(k, 2) points of the parabola from p0 through mid (at t = 0.5) to p2."""
    (x0, y0), (xm, ym), (x2, y2) = p0, mid, p2
    control = (2 * xm - (x0 + x2) / 2, 2 * ym - (y0 + y2) / 2)
    return _bezier_basis(k) @ np.array([(x0, y0), control, (x2, y2)], dtype=float)


def _points(*parts: Any) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=float).reshape(-1, 2) for p in parts])


def _ellipse_x(a: float, b: float, y: float) -> float:
    """Half-width of the face ellipse at height y."""
    return a * math.sqrt(max(0.0, 1 - ((y - CY) / b) ** 2))


class _Pen:
    """Draws canonical-coordinate shapes on a SUPERSAMPLE x canvas through one face's pose."""

    def __init__(self, image: Image.Image, f: Mapping[str, Any]) -> None:
        self.draw = ImageDraw.Draw(image)
        cos, sin, scale, dx, dy = (float(v) for v in pose(f))
        k = SUPERSAMPLE
        # canonical (x, y) -> canvas: k * (C + scale * R (p - C) + shift)
        self.matrix = k * scale * np.array([[cos, -sin], [sin, cos]])
        self.offset = k * (np.array([CX + dx, CY + dy]) - scale * np.array([cos * CX + sin * CY, -sin * CX + cos * CY]))
        self.unit = k * scale  # canonical length -> canvas pixels

    def _xy(self, points: np.ndarray) -> list[float]:
        return (np.asarray(points, dtype=float) @ self.matrix + self.offset).ravel().tolist()

    def polygon(self, points: np.ndarray, fill: Color) -> None:
        self.draw.polygon(self._xy(points), fill=fill)

    def line(self, points: np.ndarray, fill: Color, width: float) -> None:
        self.draw.line(self._xy(points), fill=fill, width=max(1, round(width * self.unit)), joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Color) -> None:
        if rx == ry:  # a circle stays a circle under the pose
            (m00, m01), (m10, m11) = self.matrix.tolist()
            x = cx * m00 + cy * m10 + self.offset[0]
            y = cx * m01 + cy * m11 + self.offset[1]
            r = rx * self.unit
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        else:
            self.polygon(_UNIT_CIRCLE * (rx, ry) + (cx, cy), fill)


@dataclass
class _Look:
    """The colours and sizes one face is drawn with, worked out once from its factors."""

    a: float  # face half-width
    b: float  # face half-height
    male: bool
    skin: Color
    shadow: Color
    hair: Color
    hair_dark: Color
    beard: Color
    background: Color
    volume: float  # hair volume beyond the skull
    style: BeardStyle


def _look(f: Mapping[str, Any]) -> _Look:
    skin = skin_rgb(float(f["skin_tone"]))
    hair = hair_rgb(int(f["hair_color"]), float(f["hair_shade"]))
    return _Look(
        a=float(face_half_width(f)), b=float(face_half_height(f)), male=bool(f["male"]), skin=skin,
        shadow=_mix(skin, (60, 30, 20), 0.18), hair=hair,
        hair_dark=_mix(hair, (0, 0, 0), 0.3) if int(f["hair_color"]) else _mix(hair, (255, 255, 255), 0.15),
        beard=_mix(hair, (0, 0, 0), 0.15),
        background=_hsv(float(f["background_hue"]), 0.3, float(f["background_value"])),
        volume=3.0 + 11.0 * float(f["hair_thickness"]), style=BEARD_STYLES[int(f["beard_style"])],
    )


def render_face(factors: Mapping[str, Any]) -> Image.Image:
    """Draw one face (178x218 RGB) from a mapping of FACTOR_NAMES to values. Deterministic."""
    f = {name: factors[name] for name in FACTOR_NAMES}
    look = _look(f)
    image = Image.new("RGB", (IMAGE_WIDTH * SUPERSAMPLE, IMAGE_HEIGHT * SUPERSAMPLE), look.background)
    pen = _Pen(image, f)
    # Back to front.
    _draw_body(pen, f, look)
    _draw_back_hair(pen, f, look)
    outline = _draw_head(pen, f, look)
    _draw_beard(pen, look, outline)
    _draw_front_hair(pen, f, look)
    _draw_eyes(pen, f, look)
    _draw_nose(pen, f, look)
    _draw_mouth(pen, f, look)
    _draw_accessories(pen, f, look)
    image = image.reduce(SUPERSAMPLE)
    if f["blurry"]:
        image = image.filter(ImageFilter.GaussianBlur(1.8))
    return image


def _draw_body(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Shoulders, neck, necktie, necklace."""
    a, b = look.a, look.b
    neck = (0.6 if look.male else 0.48) * a
    pen.ellipse(CX, 262, 96, 62, fill=_hsv(float(f["shirt_hue"]), 0.55, 0.55))
    if int(f["hairline"]) != 2 and float(f["hair_length"]) > 0.3:
        _draw_long_hair(pen, f, look)
    pen.polygon(_points((CX - neck, CY + 0.4 * b), (CX + neck, CY + 0.4 * b), (CX + neck, 202), (CX, 214),
                        (CX - neck, 202)), fill=look.shadow)
    if f["necktie"]:
        tie = _hsv(float(f["shirt_hue"]) + 0.5, 0.7, 0.4)
        pen.polygon(_points((CX - 4, 205), (CX + 4, 205), (CX + 3, 211), (CX - 3, 211)), fill=tie)
        pen.polygon(_points((CX - 3, 211), (CX + 3, 211), (CX + 6, 230), (CX - 6, 230)), fill=tie)
    if f["necklace"]:
        pen.line(_curve((CX - neck, 186), (CX, 198), (CX + neck, 186)), fill=GOLD, width=1.6)
        pen.ellipse(CX, 199.5, 2.2, 2.2, fill=GOLD)


def _draw_long_hair(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Hair hanging behind the neck, down to CY + 10 + 90 * hair_length, with its texture."""
    half = look.a + look.volume
    bottom = CY + 10 + 90 * float(f["hair_length"])
    corners = [_arc(CX + side * (half - 8), bottom - 8, 8, 8, start, start + 90, 5)
               for side, start in ((1, 0), (-1, 90))]
    pen.polygon(_points((CX - half, CY), (CX + half, CY), *corners), fill=look.hair)
    texture = int(f["hair_texture"])
    if texture == 2:  # wavy: scalloped edges
        for y in np.arange(CY + 4, bottom - 4, 8.0):
            for side in (-1, 1):
                pen.ellipse(CX + side * half, float(y), 4, 4, fill=look.hair)
    elif texture == 1:  # straight: long vertical strands
        for side in (-1, 1):
            for inset in (3.0, 7.0):
                x = CX + side * (half - inset)
                pen.line(_points((x, CY), (x, bottom - 3)), fill=look.hair_dark, width=1.2)


def _draw_back_hair(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Hair around the skull: down to the ears (or just above them when cropped short)."""
    if int(f["hairline"]) == 2:
        return
    length = min(float(f["hair_length"]), 0.3) / 0.3
    reach = -20 + 30 * length  # degrees below the horizontal at which the sides end (temples .. ears)
    top = _arc(CX, CY, look.a + look.volume, look.b + look.volume * 1.1, 180 - reach, 360 + reach, 21)
    pen.polygon(top, fill=look.hair)
    if int(f["hair_texture"]) == 2:
        r = 1.5 + 0.35 * look.volume
        for x, y in top[::2]:
            pen.ellipse(float(x), float(y), r, r, fill=look.hair)


def _draw_head(pen: _Pen, f: Mapping[str, Any], look: _Look) -> np.ndarray:
    """Ears, face (a squarer jaw for men), double chin, earrings. Returns the face outline."""
    a, b = look.a, look.b
    for side in (-1, 1):
        pen.ellipse(CX + side * (a - 1), EYE_Y + 6, 5.5, 10, fill=look.shadow)
    jaw = 3.0 if look.male else 2.0
    outline = _points(_arc(CX, CY, a, b, 180, 360, 19), _arc(CX, CY, a, b, 0, 180, 19, power=jaw)[1:-1])
    pen.polygon(outline, fill=look.skin)
    if f["double_chin"]:  # a second, lower chin below a crease
        pen.polygon(_curve((CX - 0.42 * a, CY + b - 6), (CX, CY + b + 6), (CX + 0.42 * a, CY + b - 6)), fill=look.skin)
        pen.line(_curve((CX - 0.3 * a, CY + b - 3), (CX, CY + b + 0.5), (CX + 0.3 * a, CY + b - 3)),
                 fill=look.shadow, width=1.6)
    if f["earrings"]:
        for side in (-1, 1):
            pen.ellipse(CX + side * (a + 0.5), EYE_Y + 16, 2.6, 2.6, fill=GOLD)
    return outline


def _draw_beard(pen: _Pen, look: _Look, outline: np.ndarray) -> None:
    """Stubble or full beard over the lower face, goatee, sideburns (the mustache goes with the mouth)."""
    a, b, style = look.a, look.b, look.style
    if style.stubble or style.full:
        cut = NOSE_Y + 4
        half = _ellipse_x(a, b, cut)
        region = _points((CX + half, cut), outline[outline[:, 1] >= cut], (CX - half, cut))
        if style.full:  # a little fuller than the jaw
            region = np.stack([CX + 1.06 * (region[:, 0] - CX),
                               region[:, 1] + np.where(region[:, 1] > CY + 0.8 * b, 2.5, 0)], axis=1)
        tint = 1.0 if style.full else (0.35 if style.stubble == 1 else 0.6)
        pen.polygon(region, fill=_mix(look.skin, look.beard, tint))
    if style.goatee:
        pen.ellipse(CX, MOUTH_Y + 13, 9, 8.5, fill=look.beard)
    if style.sideburns:
        top, bottom = CY - 0.5 * b, EYE_Y + 18
        for side in (-1, 1):
            edge = [(CX + side * (_ellipse_x(a, b, y) + 1), y) for y in (top, EYE_Y, bottom)]
            inner = [(x - side * 6, y) for x, y in reversed(edge)]
            pen.polygon(_points(*edge, *inner), fill=look.beard)


def _draw_front_hair(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """The hair over the forehead down to the hairline, straight strands, bangs; tufts when bald."""
    a, b = look.a, look.b
    hairline = int(f["hairline"])
    if hairline == 2:
        for side in (-1, 1):
            pen.ellipse(CX + side * (a - 1.5), EYE_Y - 6, 4.2, 10, fill=look.hair)
        return
    side_y, centre_y = (CY - 0.45 * b, CY - 0.6 * b) if hairline == 0 else (CY - 0.86 * b, CY - 0.72 * b)
    start = math.degrees(math.asin((side_y - CY) / (b + 1)))
    cap = _arc(CX, CY, a + 1, b + 1, 180 - start, 360 + start, 17)
    pen.polygon(_points(cap, _curve(cap[-1], (CX, centre_y), cap[0])[1:-1]), fill=look.hair)
    if int(f["hair_texture"]) == 1:
        for dx in (-0.5, -0.25, 0.0, 0.25, 0.5):
            x = CX + dx * a
            y_top = CY - (b + look.volume) * math.sqrt(1 - (dx * a / (a + look.volume)) ** 2)
            y_end = centre_y - 2 + abs(dx) * 2 * (side_y - centre_y) * 0.5
            pen.line(_points((x, y_top + 2), (x + dx * 4, y_end)), fill=look.hair_dark, width=1.2)
    if f["bangs"]:
        fringe_y = EYE_Y - 15
        half = _ellipse_x(a, b, fringe_y)
        start = math.degrees(math.asin((fringe_y - CY) / (b + 1)))
        teeth = np.linspace(CX + half, CX - half, 10)
        fringe = np.stack([teeth, fringe_y - 5.0 * (np.arange(10) % 2)], axis=1)
        pen.polygon(_points(_arc(CX, CY, a + 1, b + 1, 180 - start, 360 + start, 13), fringe), fill=look.hair)


def _draw_eyes(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Eye shadow, eyes, lids, bags, eyebrows."""
    ex = eye_offset(look.a)
    narrow = bool(f["narrow_eyes"])
    half_h = 2.0 if narrow else 3.8
    brow = _mix(look.hair, (0, 0, 0), 0.35)
    brow_width = (3.4 if f["bushy_eyebrows"] else 1.8) + (0.6 if look.male else 0.0)
    arched = bool(f["arched_eyebrows"])
    for side in (-1, 1):
        x = CX + side * ex
        if f["makeup"]:
            pen.ellipse(x, EYE_Y - 3, 8.5, 5, fill=_mix(look.skin, (130, 70, 140), 0.55))
        pen.ellipse(x, EYE_Y, 6.5, half_h, fill=EYE_WHITE)
        iris = min(3.0, half_h)
        pen.ellipse(x, EYE_Y, iris, iris, fill=IRIS)
        pen.ellipse(x, EYE_Y, 1.3, 1.3, fill=DARK)
        pen.line(_curve((x - 6.8, EYE_Y + 0.5), (x, EYE_Y - half_h - 0.3), (x + 6.8, EYE_Y + 0.5), 5), fill=DARK,
                 width=1.8 if f["makeup"] else 1.0)
        if f["bags_under_eyes"]:
            pen.line(_curve((x - 5.5, EYE_Y + half_h + 1.5), (x, EYE_Y + half_h + 4), (x + 5.5, EYE_Y + half_h + 1.5), 5),
                     fill=_mix(look.skin, (90, 50, 60), 0.4), width=1.7)
        brow_y = EYE_Y - (8.5 if narrow else 10)
        peak = (x + side * 1.5, brow_y - 3.5) if arched else (x, brow_y - 0.8)
        pen.line(_points((x - side * 8, brow_y + 0.5), peak, (x + side * 8, brow_y + (2.0 if arched else 0.5))),
                 fill=brow, width=brow_width)


def _draw_nose(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """A shaded wedge ending in a round tip, or in a sharp point lower down when pointy."""
    half = 8.0 if f["big_nose"] else 5.0
    shade = _mix(look.skin, (70, 35, 25), 0.16)
    if f["pointy_nose"]:
        pen.polygon(_points((CX, EYE_Y + 4), (CX + 0.45 * half, NOSE_Y - 6), (CX + 0.7 * half, NOSE_Y - 1),
                            (CX, NOSE_Y + 4), (CX - 0.7 * half, NOSE_Y - 1), (CX - 0.45 * half, NOSE_Y - 6)), fill=shade)
    else:
        pen.polygon(_points((CX, EYE_Y + 4), (CX + 0.45 * half, NOSE_Y - 6), (CX + half, NOSE_Y), (CX - half, NOSE_Y),
                            (CX - 0.45 * half, NOSE_Y - 6)), fill=shade)
        pen.ellipse(CX, NOSE_Y - 0.5, 0.55 * half, 3.0, fill=shade)
    nostril = _mix(look.skin, (40, 15, 10), 0.55)
    for side in (-1, 1):
        pen.ellipse(CX + side * 0.5 * half, NOSE_Y - 0.5, 1.4 + 0.1 * half, 1.1, fill=nostril)


def _draw_mouth(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Mustache, lips (red with lipstick), the opening with teeth when smiling, rosy cheeks."""
    smile = float(f["smile"])
    mw, my = (float(v) for v in mouth_corners(f))
    mid = MOUTH_Y + 2.5 * smile
    upper, lower = (4.2, 5.6) if f["big_lips"] else (2.6, 3.6)
    opening = (3.0 + 4.0 * smile) if f["mouth_open"] else 0.0
    lips = LIPSTICK_RGB if f["lipstick"] else _mix(look.skin, (165, 55, 65), 0.45)
    left, right = (CX - mw, my), (CX + mw, my)
    inner_top = _curve(left, (CX, mid), right)
    inner_bottom = _curve(right, (CX, mid + opening), left)
    if look.style.mustache:
        top = mid - upper
        pen.polygon(_points((CX - mw - 2, my - 1), (CX - 4, top - 6), (CX, top - 4.5), (CX + 4, top - 6),
                            (CX + mw + 2, my - 1), (CX + mw - 1, my - 2.5), (CX, top - 1.5), (CX - mw + 1, my - 2.5)),
                    fill=look.beard)
    bow = mid - upper - 0.6 * (1 - smile)
    top_lip = _points(_curve(left, (CX - 0.5 * mw, bow), (CX, mid - upper + 0.8), 4),
                      _curve((CX, mid - upper + 0.8), (CX + 0.5 * mw, bow), right, 4)[1:])
    pen.polygon(_points(top_lip, inner_top[::-1][1:-1]), fill=lips)
    if opening:
        pen.polygon(_points(inner_top, inner_bottom[1:-1]), fill=MOUTH_RGB)
        if smile >= 0.5:
            teeth = inner_top[::-1] + np.array([0.0, min(2.6, 0.45 * opening)])
            pen.polygon(_points(inner_top[1:-1], teeth[1:-1]), fill=TEETH_RGB)
    pen.polygon(_points(inner_bottom, _curve(left, (CX, mid + opening + lower), right)[1:-1]), fill=lips)
    if not opening:
        pen.line(inner_top, fill=_mix(lips, (0, 0, 0), 0.5), width=1.0)
    if f["rosy_cheeks"]:
        for side in (-1, 1):
            pen.ellipse(CX + side * 0.55 * look.a, MOUTH_Y - 13, 7, 4.5, fill=_mix(look.skin, (232, 92, 108), 0.45))


def _draw_accessories(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Eyeglasses and hat, over everything else."""
    a, b = look.a, look.b
    if f["eyeglasses"]:
        ex = eye_offset(a)
        for side in (-1, 1):
            x = CX + side * ex
            pen.line(_arc(x, EYE_Y - 0.3, 9.5, 7.3, 0, 360, 25, power=3.0), fill=FRAME_RGB, width=1.7)
            pen.line(_points((CX + side * (ex + 9.5), EYE_Y - 2), (CX + side * (a + 1), EYE_Y - 1)), fill=FRAME_RGB, width=1.6)
        pen.line(_points((CX - ex + 9.5, EYE_Y - 2), (CX, EYE_Y - 4), (CX + ex - 9.5, EYE_Y - 2)), fill=FRAME_RGB, width=1.6)
    if f["hat"]:
        brim_y = CY - 0.72 * b
        crown_top = CY - b - look.volume - 4
        color = _hsv(float(f["hat_hue"]), 0.6, 0.62)
        half = a + look.volume
        pen.polygon(_arc(CX, brim_y, half - 1, brim_y - crown_top, 180, 360, 15), fill=color)
        pen.polygon(_points((CX - half, brim_y - 6), (CX + half, brim_y - 6), (CX + half, brim_y - 2),
                            (CX - half, brim_y - 2)), fill=_mix(color, (0, 0, 0), 0.35))
        pen.ellipse(CX, brim_y, half + 10, 4.5, fill=color)


def encode_jpeg(image: Image.Image) -> bytes:
    """A rendered face as the JPEG bytes `celeb synth` writes (quality JPEG_QUALITY)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
