"""What the demo pages share: where artifacts live, cached sessions, and checked inputs (`read_input`).

Torch-free: imports only `edgepipe.runtime` and the zoo's default names from `edgepipe.specs`. Test hook: a page
that calls `input_ui(key)` reads the file at `st.session_state[key + "_path"]` (when set) instead of an upload,
through the same checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from edgepipe.runtime import EdgepipeError, FaceDetector, FaceEmbedder, InputError, ObjectDetector, decode_image, load
from edgepipe.runtime.video import VIDEO_SUFFIXES, open_video
from edgepipe.specs import FACE_DETECTOR, FACE_EMBEDDER

MAX_UPLOAD_MB = 25
IMAGE_TYPES = ("jpg", "jpeg", "png", "bmp", "webp")
VIDEO_TYPES = tuple(s.lstrip(".") for s in VIDEO_SUFFIXES)
# The default pair first (edgepipe.specs: chosen by measurement), then the others with keypoints / embeddings.
FACE_DETECTORS = (FACE_DETECTOR, "blazeface_back.mediapipe", "blazeface_front.mediapipe")
EMBEDDERS = (FACE_EMBEDDER, "dlib_resnet29.facerec")
OBJECT_DETECTOR = "nanodet_g.coco"


def _flags() -> argparse.Namespace:
    """`streamlit run apps/Home.py -- --artifacts DIR --gallery FILE`: flags after `--` reach the script."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--artifacts")
    parser.add_argument("--gallery")
    return parser.parse_known_args(sys.argv[1:])[0]


def cache_root() -> Path:
    """`$EDGEPIPE_CACHE`, else `$XDG_CACHE_HOME/edgepipe`, else `~/.cache/edgepipe` (as `edgepipe build` uses)."""
    if os.environ.get("EDGEPIPE_CACHE"):
        return Path(os.environ["EDGEPIPE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgepipe"


def artifacts_dir() -> Path:
    """`--artifacts`, else `$EDGEPIPE_ARTIFACTS`, else CACHE/artifacts."""
    chosen = _flags().artifacts or os.environ.get("EDGEPIPE_ARTIFACTS")
    return Path(chosen).expanduser() if chosen else cache_root() / "artifacts"


def gallery_path() -> Path:
    """`--gallery`, else `$EDGEPIPE_GALLERY`, else CACHE/gallery.json."""
    chosen = _flags().gallery or os.environ.get("EDGEPIPE_GALLERY")
    return Path(chosen).expanduser() if chosen else cache_root() / "gallery.json"


def find_artifacts() -> dict[tuple[str, str], Path]:
    """(model, precision) -> ONNX path for every `<model>.<precision>.onnx` in the artifact folder."""
    found = {}
    for path in sorted(artifacts_dir().glob("*.onnx")):
        model, _, precision = path.stem.rpartition(".")
        if model:
            found[(model, precision)] = path
    return found


def artifact(model: str, precision: str = "fp32") -> Path | None:
    return find_artifacts().get((model, precision))


def figures(onnx_path: Path) -> dict:
    """The artifact's JSON of recorded figures ({} when absent or unreadable)."""
    try:
        return json.loads(onnx_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def accuracy(figs: dict) -> tuple[str, float] | None:
    """(metric, value): a quantized copy's measured accuracy, else the first evaluation's headline metric."""
    acc = figs.get("accuracy") or {}
    if acc.get("quantized") is not None:
        return str(acc.get("metric")), float(acc["quantized"])
    for report in (figs.get("evaluations") or {}).values():
        metrics = report.get("metrics") or {}
        for name in ("map_50_95", "ap_50", "accuracy"):
            if metrics.get(name) is not None:
                return name, float(metrics[name])
    return None


def sample_images() -> list[Path]:
    """The sample photos `edgepipe build` fetched into the cache (may be empty)."""
    return sorted((cache_root() / "files").glob("*/package/demo/sample*.jpg"))


@st.cache_resource(show_spinner="Loading model ...")
def model(path: str, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0):
    """One onnxruntime session per (artifact path, providers, threads), shared by every session of the app."""
    return load(path, providers=list(providers), intra_op_threads=threads)


@st.cache_resource(show_spinner=False)
def face_models(detector_path: str, embedder_path: str) -> tuple[FaceDetector, FaceEmbedder]:
    return FaceDetector(model(detector_path)), FaceEmbedder(model(embedder_path))


@st.cache_resource(show_spinner=False)
def object_detector(path: str) -> ObjectDetector:
    return ObjectDetector(model(path))


@dataclass(frozen=True)
class Input:
    """A checked input: an RGB image, or a readable video file on disk."""

    name: str
    image_rgb: np.ndarray | None = None
    video_path: Path | None = None


def read_input(name: str, data: bytes, allow_video: bool = True) -> Input:
    """Check and decode one input; raises EdgepipeError with a one-line message the page shows."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if len(data) > MAX_UPLOAD_MB * 1e6:
        raise InputError(f"{name}: {len(data) / 1e6:.1f} MB is over the {MAX_UPLOAD_MB} MB limit")
    if allow_video and suffix in VIDEO_TYPES:
        folder = Path(tempfile.mkdtemp(prefix="edgepipe-demo-"))
        path = folder / f"input.{suffix}"
        path.write_bytes(data)
        open_video(path)[0].release()  # raises InputError when it is not a readable video
        return Input(name, video_path=path)
    if suffix not in IMAGE_TYPES:
        kinds = ", ".join(IMAGE_TYPES + (VIDEO_TYPES if allow_video else ()))
        raise InputError(f"{name}: unsupported file type {suffix or '(none)'!r}; expected one of {kinds}")
    return Input(name, image_rgb=decode_image(data, name))


def input_ui(key: str, label: str, allow_video: bool = True, camera: bool = False) -> Input | None:
    """An uploader (and optional camera); returns the checked input, or None after showing an error."""
    hook = st.session_state.get(f"{key}_path")
    types = list(IMAGE_TYPES + (VIDEO_TYPES if allow_video else ()))
    upload = st.file_uploader(label, type=types, key=f"{key}_upload")
    shot = st.camera_input("... or take a photo", key=f"{key}_camera") if camera and st.toggle(
        "Use the camera", key=f"{key}_use_camera") else None
    try:
        if hook:
            return read_input(Path(hook).name, Path(hook).read_bytes(), allow_video)
        source = upload or shot
        return read_input(source.name, source.getvalue(), allow_video) if source is not None else None
    except (EdgepipeError, OSError) as e:
        st.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None


def missing_message(what: str) -> None:
    st.warning(f"No {what} artifact in {artifacts_dir()}: build it from the Home page or with `edgepipe build`.")
