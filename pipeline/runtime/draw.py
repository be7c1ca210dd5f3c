"""Draw results on images (opencv): `draw_faces(image_rgb, faces, labels) -> image_rgb`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgepipe.runtime.atomic import check_destination
from edgepipe.runtime.errors import InputError

__all__ = ["draw_faces"]

_KNOWN = (40, 200, 40)
_UNKNOWN = (230, 60, 60)


def draw_faces(image_rgb: np.ndarray, faces, labels: list[str] | None = None, known: list[bool] | None = None) -> np.ndarray:
    """A copy of `image_rgb` with each face's box, keypoints and label; known faces green, unknown red."""
    out = image_rgb.copy()
    thickness = max(1, round(max(out.shape[:2]) / 500))
    for i, face in enumerate(faces):
        colour = _KNOWN if (known is None or known[i]) else _UNKNOWN
        x1, y1, x2, y2 = (int(round(v)) for v in face.box_xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        for x, y in face.keypoints_xy:
            cv2.circle(out, (int(round(x)), int(round(y))), thickness + 1, (255, 220, 0), -1)
        if labels:
            _draw_label(out, labels[i], (x1, y1), colour, 0.5 * thickness, thickness, (255, 255, 255))
    return out


def _draw_label(out: np.ndarray, text: str, corner_xy: tuple[int, int], colour, scale: float, thickness: int,
                text_colour) -> None:
    """A filled tag with `text` sitting on a box's top-left corner (pushed inside the image at the top edge)."""
    x1, y1 = corner_xy
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    top = max(0, y1 - th - base - 2)
    cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), colour, -1)
    cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, text_colour, thickness,
                cv2.LINE_AA)


def draw_identities(image_rgb: np.ndarray, results) -> tuple[np.ndarray, list[str]]:
    """`draw_faces` for `FaceRecognizer.identify` results: (annotated copy, labels 'name distance' or 'unknown ...')."""
    labels = [f"{match.name or 'unknown'} {match.distance:.2f}" for _, match in results]
    known = [match.name is not None for _, match in results]
    return draw_faces(image_rgb, [face for face, _ in results], labels, known), labels


ENCODABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what OpenCV writes here


def check_image_path(path: Path) -> None:
    """Refuse, before any work, an output image path this module cannot write (no suffix: written as JPEG).

    Raises:
        InputError: a suffix OpenCV cannot encode, a path that is a directory, or a folder that cannot be written.
    """
    if path.suffix and path.suffix.lower() not in ENCODABLE_SUFFIXES:
        raise InputError(f"{path}: cannot write an image as {path.suffix!r}; expected one of "
                         f"{', '.join(ENCODABLE_SUFFIXES)}")
    check_destination(path)


def encode_image(image_rgb: np.ndarray, suffix: str = ".jpg") -> bytes:
    """Encode an RGB image to bytes in the format the suffix names (one of `ENCODABLE_SUFFIXES`).

    Raises:
        InputError: a suffix OpenCV cannot encode.
    """
    if suffix.lower() not in ENCODABLE_SUFFIXES:
        raise InputError(f"cannot write an image as {suffix!r}; expected one of {', '.join(ENCODABLE_SUFFIXES)}")
    ok, buffer = cv2.imencode(suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"OpenCV could not encode the image as {suffix!r}")
    return buffer.tobytes()


def _colour(class_id: int) -> tuple[int, int, int]:
    """A stable, distinct colour per class (golden-ratio hue steps)."""
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 230]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(image_rgb: np.ndarray, detections, texts: list[str] | None = None) -> np.ndarray:
    """A copy of `image_rgb` with each detection's box and 'label score' (or its entry of `texts`)."""
    out = image_rgb.copy()
    thickness = max(1, round(max(out.shape[:2]) / 600))
    for k, det in enumerate(detections):
        colour = _colour(det.class_id)
        x1, y1, x2, y2 = (int(round(v)) for v in det.box_xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        text = texts[k] if texts is not None else f"{det.label} {det.score:.2f}"
        _draw_label(out, text, (x1, y1), colour, 0.4 * thickness, thickness, (0, 0, 0))
    return out
