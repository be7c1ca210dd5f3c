"""Object detection: boxes, labels and scores on an uploaded image or video, with a score threshold, a class
filter and the annotated result to download. Test hook: `st.session_state["detect_path"]` (see common.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from edgepipe.apps import common
from edgepipe.run_video import video_step
from edgepipe.runtime import EdgepipeError, ObjectDetector
from edgepipe.runtime.draw import draw_detections, encode_image
from edgepipe.runtime.video import open_video, read_frames
from edgepipe.video_out import VideoOut


def detector_ui() -> ObjectDetector | None:
    found = common.find_artifacts()
    precisions = [precision for model, precision in found if model == common.OBJECT_DETECTOR]
    if not precisions:
        common.missing_message(common.OBJECT_DETECTOR)
        return None
    default = precisions.index("fp32") if "fp32" in precisions else 0
    precision = st.sidebar.selectbox("Precision", precisions, index=default, key="precision")
    return common.object_detector(str(found[(common.OBJECT_DETECTOR, precision)]))


def settings_ui(detector: ObjectDetector) -> tuple[float, set[str] | None]:
    default = float(detector.model.meta.head.score_thresh)
    thresh = st.sidebar.slider("Score threshold", 0.05, 0.95, max(0.05, default), 0.05, key="score_thresh")
    chosen = st.sidebar.multiselect("Only these classes (empty: all)", list(detector.labels), key="classes")
    return thresh, set(chosen) or None


def table(detections) -> pd.DataFrame:
    return pd.DataFrame([{"label": d.label, "score": round(d.score, 3),
                          **dict(zip(("x1", "y1", "x2", "y2"), (round(float(v), 1) for v in d.box_xyxy)))}
                         for d in detections], columns=["label", "score", "x1", "y1", "x2", "y2"])


def detect_image(detector: ObjectDetector, image_rgb, thresh: float, classes: set[str] | None) -> None:
    start = time.perf_counter()
    detections = detector.detect(image_rgb, thresh, classes)
    elapsed_ms = (time.perf_counter() - start) * 1000
    annotated = draw_detections(image_rgb, detections)
    counts = pd.Series([d.label for d in detections], dtype=str).value_counts()
    summary = ", ".join(f"{n} {label}" for label, n in counts.items()) or "nothing above the threshold"
    st.success(f"{len(detections)} detections in {elapsed_ms:.0f} ms: {summary}")
    st.image(annotated, caption="detections")
    st.dataframe(table(detections), hide_index=True)
    st.download_button("Download annotated image", encode_image(annotated), "detections.jpg", "image/jpeg",
                       key="download")


def detect_video(detector: ObjectDetector, video_path: Path, thresh: float, classes: set[str] | None) -> None:
    """Detections tracked across frames (`edgepipe run`'s step): each box drawn with its track id."""
    capture, fps, frames = open_video(video_path)
    out_path = video_path.with_name("detections.mp4")
    step = video_step(detector, thresh, classes=classes)
    bar, rate = st.progress(0.0, text="Detecting ..."), st.empty()
    counts: dict[str, int] = {}
    tracks: dict[str, set[int]] = {}
    start, done = time.perf_counter(), 0
    try:
        with VideoOut(out_path, fps, (int(capture.get(3)), int(capture.get(4)))) as out:
            for done, frame in enumerate(read_frames(capture), 1):
                annotated, rows = step(frame, done - 1)
                for row in rows:
                    counts[row["label"]] = counts.get(row["label"], 0) + 1
                    tracks.setdefault(row["label"], set()).add(row["track"])
                out.write(annotated)
                speed = done / (time.perf_counter() - start)
                bar.progress(min(1.0, done / frames), text=f"frame {done}/{frames}")
                rate.caption(f"{speed:.1f} frames per second")
    finally:
        capture.release()
    st.success(f"{done} frames at {done / (time.perf_counter() - start):.1f} frames per second: "
               f"{sum(counts.values())} detections")
    st.video(str(out_path))
    st.dataframe(pd.DataFrame({"label": list(counts), "tracks": [len(tracks[label]) for label in counts],
                               "detections": list(counts.values())}), hide_index=True)
    st.download_button("Download annotated video", out_path.read_bytes(), "detections.mp4", "video/mp4",
                       key="download")


def main() -> None:
    st.title("Object detection")
    detector = detector_ui()
    if detector is None:
        return
    thresh, classes = settings_ui(detector)
    shown = common.input_ui("detect", "Image or video")
    if shown is None:
        st.info(f"Upload an image ({', '.join(common.IMAGE_TYPES)}) or a video ({', '.join(common.VIDEO_TYPES)}), "
                f"up to {common.MAX_UPLOAD_MB} MB.")
        return
    try:
        if shown.video_path is not None:
            detect_video(detector, shown.video_path, thresh, classes)
        else:
            detect_image(detector, shown.image_rgb, thresh, classes)
    except EdgepipeError as e:
        st.error(str(e))


main()
