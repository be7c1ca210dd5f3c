"""In-process latency of the runtime's whole detect/embed paths, as `edgepipe build` records them:
`time_face_pipeline(detector, embedder, images)`, `time_detector(artifact, images)` and `machine_info()`.
The per-cell, per-provider benchmark is `edgepipe.benchmark`."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import numpy as np

from edgepipe.flops import cpu_flags
from edgepipe.runtime import FaceDetector, FaceEmbedder, ObjectDetector, load
from edgepipe.runtime.specs import Task

__all__ = ["time_face_pipeline", "time_detector", "machine_info"]


def machine_info() -> dict:
    """CPU model, ISA flags that matter for inference, core count, onnxruntime version."""
    import os

    import onnxruntime

    model = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "fma", "sse4", "amx")) or f == "f16c")
    return {"cpu": model, "isa": flags, "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


def time_face_pipeline(detector_path: Path, embedder_path: Path, images_rgb: list[np.ndarray], *,
                       warm_runs: int = 5, threads: int = 0) -> dict:
    """Cold start (sessions + first image) and the median warm latency of detect + align + embed.

    Returns:
        {"cold_start_ms", "detect_ms_p50", "per_face_ms_p50" (keypoint refinement + align + embed of one face),
        "pipeline_ms_p50"
        (whole image), "faces", "images", "threads", "machine"}.
    """
    started = time.perf_counter()
    detector = FaceDetector.from_path(detector_path, intra_op_threads=threads)
    embedder = FaceEmbedder.from_path(embedder_path, intra_op_threads=threads)
    embedder.embed(images_rgb[0], [detector.refine(images_rgb[0], f) for f in detector.detect(images_rgb[0])])
    cold_ms = (time.perf_counter() - started) * 1e3
    detect_ms, per_face_ms, pipeline_ms, n_faces = [], [], [], 0
    for image in images_rgb:
        for _ in range(warm_runs):
            t0 = time.perf_counter()
            faces = detector.detect(image)
            t1 = time.perf_counter()
            embedder.embed(image, [detector.refine(image, face) for face in faces])
            t2 = time.perf_counter()
            detect_ms.append((t1 - t0) * 1e3)
            pipeline_ms.append((t2 - t0) * 1e3)
            if faces:
                per_face_ms.append((t2 - t1) * 1e3 / len(faces))
        n_faces += len(faces)
    return {
        "cold_start_ms": round(cold_ms, 1), "detect_ms_p50": round(statistics.median(detect_ms), 2),
        "per_face_ms_p50": round(statistics.median(per_face_ms), 2) if per_face_ms else None,
        "pipeline_ms_p50": round(statistics.median(pipeline_ms), 2), "faces": n_faces, "images": len(images_rgb),
        "warm_runs": warm_runs, "threads": threads, "machine": machine_info(),
    }


def time_detector(artifact: Path, images_rgb: list[np.ndarray], *, warm_runs: int = 5, threads: int = 0) -> dict:
    """Cold start (session + first image) and the median warm latency of one image through a detector
    (preprocess + inference + decode + NMS).

    Returns:
        {"cold_start_ms", "image_ms_p50", "image_ms_p90", "images", "warm_runs", "threads", "machine"}.
    """
    started = time.perf_counter()
    model = load(artifact, intra_op_threads=threads)
    detector = ObjectDetector(model) if model.meta.head.task == Task.DETECTION else FaceDetector(model)
    detector.detect(images_rgb[0])
    cold_ms = (time.perf_counter() - started) * 1e3
    timings = []
    for image in images_rgb:
        for _ in range(warm_runs):
            t0 = time.perf_counter()
            detector.detect(image)
            timings.append((time.perf_counter() - t0) * 1e3)
    timings.sort()
    return {"cold_start_ms": round(cold_ms, 1), "image_ms_p50": round(statistics.median(timings), 2),
            "image_ms_p90": round(timings[int(0.9 * (len(timings) - 1))], 2), "images": len(images_rgb),
            "warm_runs": warm_runs, "threads": threads, "machine": machine_info()}
