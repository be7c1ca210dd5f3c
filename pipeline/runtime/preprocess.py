"""Pure numpy/opencv pre-processing shared by the ONNX runtime and the PyTorch reference path.

Images are uint8 HWC **RGB** everywhere in the runtime API; `as_rgb` is how the public functions take what an
OpenCV user has (grey, RGBA) and refuse the rest; `to_input` converts to the colour order and layout the model's
`InputSpec` asks for. Image files are refused above `MAX_PIXELS` (read from the header, before decoding).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from edgepipe.runtime.errors import InputError
from edgepipe.runtime.results import InputMapping
from edgepipe.runtime.specs import Color, InputSpec, Layout, Resize

__all__ = ["read_image", "decode_image", "as_rgb", "to_input", "align_face", "MAX_PIXELS"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Decoding a 30000x30000 PNG of 2.6 MB takes 5.3 GB: a file that claims more pixels than this is refused before it is
# decoded (100 MP is a 12000x8000 photo, beyond any phone's). `edgepipe --max-pixels N` (which sets
# `EDGEPIPE_MAX_PIXELS` for its subprocesses too) or assigning this module attribute raises it.
MAX_PIXELS = int(os.environ.get("EDGEPIPE_MAX_PIXELS", 100_000_000))


def as_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    """The uint8 HWC RGB image the runtime works on, from what an OpenCV/numpy user passes.

    Takes (H, W, 3) RGB as is, (H, W) or (H, W, 1) grey (repeated to three channels) and (H, W, 4) RGBA (alpha
    dropped; a BGRA array from `cv2.imread(..., IMREAD_UNCHANGED)` wants `cv2.cvtColor(a, cv2.COLOR_BGRA2RGB)`
    first, as BGR wants `COLOR_BGR2RGB`).

    Raises:
        InputError: not a numpy array, not uint8, an empty image, or a shape that is no image.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what}: expected a numpy uint8 array (H, W, 3) RGB, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{what}: expected uint8 pixels 0-255, got dtype {image.dtype} (convert with "
                         "np.clip(a, 0, 255).astype(np.uint8))")
    channels = 1 if image.ndim == 2 else image.shape[-1] if image.ndim == 3 else 0
    if channels not in (1, 3, 4):
        raise InputError(f"{what}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{what}: is empty ({image.shape[1]}x{image.shape[0]} pixels)")
    if channels == 3:
        return image
    if channels == 4:
        return np.ascontiguousarray(image[..., :3])
    return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2RGB)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 HWC RGB; raises InputError naming the path if it is not a readable image."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        error = f"{path}: could not be decoded as a {path.suffix.lower()} image (empty, truncated or not an image)"
    else:
        found = path.suffix or "no suffix"
        error = f"{path}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)}, found {found!r})"
    return _decode(np.fromfile(path, dtype=np.uint8), str(path), error)


def decode_image(data: bytes, name: str = "upload") -> np.ndarray:
    """Decode encoded image bytes (e.g. an upload) to uint8 HWC RGB; raises InputError if they are not an image."""
    return _decode(np.frombuffer(data, dtype=np.uint8), name,
                   f"{name}: could not be decoded as an image (empty, truncated or not an image)")


def _header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF, BMP, WebP or JPEG header, or None if the format is not one of these."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:2] == b"BM" and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        if head[12:16] == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if head[12:16] == b"VP8 ":
            width, height = struct.unpack("<HH", head[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if head[12:16] == b"VP8L" and len(head) >= 25:
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first start-of-frame marker, or None if it is not in `data`."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _decode(buffer: np.ndarray, name: str, error: str) -> np.ndarray:
    """Encoded bytes -> uint8 HWC RGB, or InputError(error); refuses images over MAX_PIXELS before decoding."""
    size = _header_size(buffer[:1 << 18].tobytes())
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise InputError(f"{name}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.0f} megapixels, over the "
                         f"{MAX_PIXELS / 1e6:g} MP limit (a decompression bomb?); raise it with --max-pixels")
    try:
        image_bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    except cv2.error:  # e.g. over OpenCV's own pixel limit, in a format whose header is not read above
        image_bgr = None
    if image_bgr is None:
        raise InputError(error)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


_CV2_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST,
                      "cubic": cv2.INTER_CUBIC}


def _interpolation(name: str, scale: float) -> int:
    if name == "auto":  # area averaging avoids aliasing when shrinking
        return cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return _CV2_INTERPOLATION[name]


def letterbox(image_hwc: np.ndarray, out_hw: tuple[int, int], pad_value: float = 0.0,
              interpolation: str = "auto", center: bool = False) -> tuple[np.ndarray, InputMapping]:
    """Scale to fit `out_hw` keeping the aspect ratio, then pad right/bottom (or both sides equally, `center`);
    return (image, mapping from source to output pixels)."""
    h, w = image_hwc.shape[:2]
    out_h, out_w = out_hw
    scale = min(out_h / h, out_w / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(image_hwc, (new_w, new_h), interpolation=_interpolation(interpolation, scale))
    top, left = ((out_h - new_h) // 2, (out_w - new_w) // 2) if center else (0, 0)
    out = np.full((out_h, out_w, image_hwc.shape[2]), pad_value, dtype=image_hwc.dtype)
    out[top:top + new_h, left:left + new_w] = resized
    return out, InputMapping((scale, scale), (float(left), float(top)))


def resize_to_input(image_hwc: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, InputMapping]:
    """Resize as the spec says; return (image of the input size, mapping from source to input pixels)."""
    out_h, out_w = spec.input_hw
    if spec.resize == Resize.PAD:
        return _fit_and_pad(image_hwc, spec)
    if spec.resize in (Resize.LETTERBOX, Resize.LETTERBOX_CENTER):
        return letterbox(image_hwc, (out_h, out_w), spec.pad_value, spec.interpolation,
                         center=spec.resize == Resize.LETTERBOX_CENTER)
    h, w = image_hwc.shape[:2]
    if (h, w) != (out_h, out_w):
        interp = _interpolation(spec.interpolation, min(out_h / h, out_w / w))
        image_hwc = cv2.resize(image_hwc, (out_w, out_h), interpolation=interp)
    return image_hwc, InputMapping((out_w / w, out_h / h))


def _fit_and_pad(image_hwc: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, InputMapping]:
    """Resize.PAD: the image at its own size (shrunk to fit the input size if larger), padded right/bottom up to the
    next multiple of `size_multiple`."""
    h, w = image_hwc.shape[:2]
    max_h, max_w = spec.input_hw
    scale = min(1.0, max_h / h, max_w / w)
    if scale < 1.0:
        image_hwc = cv2.resize(image_hwc, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=_interpolation(spec.interpolation, scale))
    new_h, new_w = image_hwc.shape[:2]
    m = spec.size_multiple
    out_h, out_w = -(-new_h // m) * m, -(-new_w // m) * m
    out = np.full((out_h, out_w, image_hwc.shape[2]), spec.pad_value, dtype=image_hwc.dtype)
    out[:new_h, :new_w] = image_hwc
    return out, InputMapping((new_w / w, new_h / h), input_hw=(out_h, out_w))


def _fits(hw: tuple[int, int], spec: InputSpec) -> bool:
    """Whether an image of size `hw` is a valid input: the input size, or with Resize.PAD any multiple up to it."""
    if spec.resize != Resize.PAD:
        return tuple(hw) == spec.input_hw
    m = spec.size_multiple
    return all(0 < v <= top and v % m == 0 for v, top in zip(hw, spec.input_hw))


def to_input(images_hwc_rgb: list[np.ndarray] | np.ndarray, spec: InputSpec) -> np.ndarray:
    """Stack already-resized RGB uint8 images into the model's float32 input batch.

    Args:
        images_hwc_rgb: N images (or an (N, H, W, 3) array) of exactly the spec's input size.
        spec: the model's input contract.

    Returns:
        (N, C, H, W) or (N, H, W, C) of the spec's dtype, in its colour order: `(pixel - mean) / std` in float32,
        or the pixels themselves for a uint8 input.
    """
    images = [np.asarray(im) for im in images_hwc_rgb]
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise InputError(f"input images must all be HxWx3 of one size, found {sorted(shapes)}")
    height, width = next(iter(shapes))[:2]
    if not _fits((height, width), spec):
        expected = (f"multiples of {spec.size_multiple} up to {spec.input_hw}" if spec.resize == Resize.PAD
                    else f"{spec.input_hw}")
        raise InputError(f"input images are {(height, width)}, the model expects {expected}")
    order = (2, 1, 0) if spec.color == Color.BGR else (0, 1, 2)  # model channel c <- RGB channel order[c]
    if spec.dtype == "uint8":  # mean 0 and std 1 (the spec checks it): the values are still whole pixels
        batch = np.stack(images)[..., order]
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if spec.layout == Layout.NCHW else batch, np.uint8)
    # One float32 pass per channel plane, written straight into the output: on a 1920x1376 photo this is ~10x faster
    # than stacking, converting, normalising and transposing whole arrays (each a copy), and gives the same values.
    nchw = spec.layout == Layout.NCHW
    batch = np.empty((len(images), 3, height, width) if nchw else (len(images), height, width, 3), np.float32)
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    for image, out in zip(images, batch):
        for channel, source in enumerate(order):
            plane = out[channel] if nchw else out[..., channel]
            np.subtract(image[..., source], mean[channel], out=plane, dtype=np.float32)
            if std[channel] != 1:
                np.divide(plane, std[channel], out=plane)
    return batch


def estimate_similarity(src_xy: np.ndarray, dst_xy: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src onto dst (Umeyama).

    Args:
        src_xy: (N, 2) points, N >= 2.
        dst_xy: (N, 2) points.

    Returns:
        (2, 3) float64 affine matrix M with dst ~= M @ [x, y, 1].
    """
    src = np.asarray(src_xy, np.float64)
    dst = np.asarray(dst_xy, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)  # (2, 2)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # forbid reflections
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    src_var = (src_c ** 2).sum() / len(src)
    scale = np.trace(np.diag(d) @ sign) / src_var if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image_hwc: np.ndarray, keypoints_xy: np.ndarray, template_xy: np.ndarray, chip_size: int) -> np.ndarray:
    """Warp the face whose keypoints are `keypoints_xy` so they land on `template_xy` in a square chip.

    Args:
        image_hwc: uint8 source image.
        keypoints_xy: (N, 2) keypoints in source pixels, same order as `template_xy`.
        template_xy: (N, 2) target positions in chip pixels.
        chip_size: side of the output chip.

    Returns:
        (chip_size, chip_size, C) uint8 chip.
    """
    matrix = estimate_similarity(keypoints_xy, template_xy)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    source = image_hwc
    # Shrinking by more than 2x with one bilinear warp aliases; pre-blur by halving first, as an image pyramid would.
    while scale < 0.5 and min(source.shape[:2]) > 2 * chip_size:
        source = cv2.pyrDown(source)
        matrix = matrix @ np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])  # pixel x' of the half image is 2x'+0.5
        scale *= 2
    return cv2.warpAffine(source, matrix, (chip_size, chip_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def prepare(image_rgb: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, InputMapping]:
    """One image (anything `as_rgb` takes) -> ((1, ...) model input, the mapping from source to input pixels)."""
    resized, mapping = resize_to_input(as_rgb(image_rgb), spec)
    return to_input([resized], spec), mapping
