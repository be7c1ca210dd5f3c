"""Argument helpers shared by the CLI's command modules: where artifacts are by default, and argparse types that
refuse bad numbers where they enter."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgepipe import specs

__all__ = ["FACE_DETECTOR", "EMBEDDER", "artifact_dir", "face_detector", "score", "distance", "ints", "positive_int",
           "positive_float", "count", "images"]


def artifact_dir(args) -> Path:
    """CACHE/artifacts: where `build` writes by default and the face commands look for their models."""
    from edgepipe.sources import default_cache_dir

    return Path(args.cache_dir or default_cache_dir()) / "artifacts"


FACE_DETECTOR = f"{specs.FACE_DETECTOR}.fp32.onnx"  # aligns faces for an embedder
EMBEDDER = f"{specs.FACE_EMBEDDER}.fp32.onnx"


def face_detector(args, beside: str | Path | None) -> Path | None:
    """--detector, else the face detector beside the artifact that needs it (the folder `build`/`export --out`
    wrote both into), else the one in CACHE/artifacts; None when there is none."""
    if args.detector:
        return Path(args.detector)
    folders = ([Path(beside).parent] if beside else []) + [artifact_dir(args)]
    return next((folder / FACE_DETECTOR for folder in folders if (folder / FACE_DETECTOR).is_file()), None)


def _number(text: str, kind, ok, expected: str):
    """`text` as `kind` (float or int) if `ok(value)`, else argparse's error saying what was `expected`."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):  # NaN fails every comparison in `ok`
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def score(text: str) -> float:
    """A score threshold: a finite number in [0, 1]."""
    return _number(text, float, lambda v: 0.0 <= v <= 1.0, "a score in [0, 1]")


def distance(text: str) -> float:
    """A match threshold: a finite distance > 0."""
    return _number(text, float, lambda v: 0.0 < v < float("inf"), "a finite distance > 0")


def positive_float(text: str) -> float:
    """A length of time: a finite number > 0."""
    return _number(text, float, lambda v: 0.0 < v < float("inf"), "a finite number > 0")


def positive_int(text: str) -> int:
    """A count: a whole number > 0."""
    return _number(text, int, lambda v: v > 0, "a whole number > 0")


def count(text: str) -> int:
    """A count that may be zero: a whole number >= 0."""
    return _number(text, int, lambda v: v >= 0, "a whole number >= 0")


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def shares(text: str) -> tuple[float, ...]:
    """Comma-separated shares of a whole: numbers in (0, 1]."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 1], got {text!r}")
    return values


def images(folder: str | None) -> list[Path] | None:
    """Every image under an --images folder (None when the flag is not given)."""
    if folder is None:
        return None
    from edgepipe.engine import images_under

    return images_under(Path(folder))


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters, with "..." where it was cut."""
    return text if len(text) <= width else text[:width - 3] + "..."
