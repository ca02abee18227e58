"""Face geometry, shared by the renderer and the bbox/landmark files.

All functions work on scalars and on numpy arrays alike. Coordinates are in the 178x218 frame; the
"canonical" face is upright, centred at (CX, CY), then rotated, scaled and shifted as a whole by
its pose (`pose`, `to_frame`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

CX, CY = 89.0, 118.0
EYE_Y, NOSE_Y, MOUTH_Y = 111.0, 136.0, 152.0


def face_half_width(f: Mapping[str, Any]) -> Any:
    return 36.0 + 12.0 * np.asarray(f["face_width"], dtype=float) + 5.0 * np.asarray(f["chubby"], dtype=float)


def face_half_height(f: Mapping[str, Any]) -> Any:
    return 56.0 + 7.0 * np.asarray(f["oval_face"], dtype=float)


def eye_offset(a: Any) -> Any:
    return 19.0 + 0.15 * (a - 44.0)


def mouth_corners(f: Mapping[str, Any]) -> tuple[Any, Any]:
    """Half-width of the mouth and the height of its corners (a smile widens and lifts them)."""
    smile = np.asarray(f["smile"], dtype=float)
    return 13.0 + 4.0 * smile, MOUTH_Y - 4.0 * smile


def pose(f: Mapping[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    """cos and sin of the rotation, scale, shift_x and shift_y of a face (or of each row)."""
    theta = np.radians(np.asarray(f["rotation"], dtype=float))
    return (np.cos(theta), np.sin(theta), np.asarray(f["scale"], dtype=float),
            np.asarray(f["shift_x"], dtype=float), np.asarray(f["shift_y"], dtype=float))


def to_frame(x: Any, y: Any, f: Mapping[str, Any]) -> tuple[Any, Any]:
    """Canonical face coordinates -> image coordinates (rotation counter-clockwise on screen)."""
    cos, sin, scale, dx, dy = pose(f)
    u, v = x - CX, y - CY
    return CX + scale * (cos * u + sin * v) + dx, CY + scale * (-sin * u + cos * v) + dy


def face_landmarks(factors: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """(n, 10) int landmarks in LANDMARK_COLUMNS order: eye centres, nose tip, mouth corners.

    "left" is the image's left, as in CelebA's aligned landmarks.
    """
    f = _columns(factors)
    a = face_half_width(f)
    ex = eye_offset(a)
    mw, my = mouth_corners(f)
    nose_y = NOSE_Y + 2.0 * np.asarray(f["pointy_nose"], dtype=float)
    points = [(CX - ex, EYE_Y), (CX + ex, EYE_Y), (CX, nose_y), (CX - mw, my), (CX + mw, my)]
    coordinates = [c for x, y in points for c in to_frame(x, y, f)]
    return np.rint(np.stack(np.broadcast_arrays(*coordinates), axis=-1)).astype(np.int32).reshape(-1, 10)


def face_bbox(factors: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """(n, 4) int boxes x_1, y_1, width, height around the face (skull and chin) in the image."""
    f = _columns(factors)
    a, b = face_half_width(f), face_half_height(f)
    cos, sin, scale, _, _ = pose(f)
    cx, cy = to_frame(CX, CY, f)
    half_w = scale * np.sqrt((a * cos) ** 2 + (b * sin) ** 2)
    half_h = scale * np.sqrt((a * sin) ** 2 + (b * cos) ** 2)
    x1, y1 = np.rint(cx - half_w), np.rint(cy - half_h)
    box = np.stack([x1, y1, np.rint(cx + half_w) - x1, np.rint(cy + half_h) - y1], axis=-1)
    return box.astype(np.int32).reshape(-1, 4)


def _columns(factors: pd.DataFrame | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(factors, pd.DataFrame):
        return {name: factors[name].to_numpy() for name in factors.columns}
    return factors
