"""Face recognition: enroll people into a gallery JSON that persists between runs, then name everyone in a photo,
a video or a camera shot. Test hooks: `st.session_state["enroll_path"]` / `["identify_path"]` (see common.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from edgepipe.apps import common
from edgepipe.run_video import video_step
from edgepipe.runtime import EdgepipeError, FaceGallery, FaceRecognizer
from edgepipe.runtime.draw import draw_faces, encode_image
from edgepipe.runtime.video import open_video, read_frames
from edgepipe.video_out import VideoOut


def models_ui():
    """The detector and embedder artifacts (None when one is missing) and the embedder's figures."""
    found = common.find_artifacts()
    detectors = [name for name in common.FACE_DETECTORS if (name, "fp32") in found]
    embedders = [name for name in common.EMBEDDERS if (name, "fp32") in found]
    if not detectors or not embedders:
        common.missing_message("face detector" if not detectors else "face embedder")
        return None, None
    detector = st.sidebar.selectbox("Face detector", detectors, key="face_detector")
    embedder = found[(st.sidebar.selectbox("Face embedder", embedders, key="face_embedder",
                                           help="a gallery holds one embedder's vectors"), "fp32")]
    return common.face_models(str(found[(detector, "fp32")]), str(embedder)), common.figures(embedder)


def default_threshold(embedder, figs: dict) -> tuple[float, str]:
    """The verification threshold measured on LFW pairs when the build recorded one, else the model's own."""
    measured = ((figs.get("evaluations") or {}).get("lfw_10ids") or {}).get("metrics", {}).get("threshold")
    if measured is not None:
        return float(measured), "measured on lfw_10ids pairs"
    return float(embedder.head.match_thresh), "the model's default"


def gallery_ui(embedder) -> FaceGallery | None:
    path = common.gallery_path()
    st.caption(f"Gallery file: `{path}`")
    try:
        return FaceGallery.load(path) if path.is_file() else FaceGallery.for_embedder(embedder)
    except EdgepipeError as e:
        st.error(str(e))
        return None


def enroll_ui(recognizer: FaceRecognizer) -> None:
    st.subheader("Enroll")
    name = st.text_input("Name", key="enroll_name")
    photo = common.input_ui("enroll", "Photo of the person (the largest face is used)", allow_video=False, camera=True)
    if st.button("Enroll", key="enroll", disabled=photo is None or not name.strip()):
        try:  # embed first, then a locked read-modify-write: a CLI enrolling into the same file loses no one
            _, embedding = recognizer.largest_face(photo.image_rgb, source=photo.name)
            recognizer.gallery = FaceGallery.update(common.gallery_path(), lambda g: g.enroll(name, embedding),
                                                    lambda: FaceGallery.for_embedder(recognizer.embedder))
        except EdgepipeError as e:
            st.error(str(e))
            return
        st.success(f"Enrolled {name.strip()} ({recognizer.gallery.count(name.strip())} photo(s))")


def manage_ui(gallery: FaceGallery) -> None:
    st.subheader(f"Gallery: {len(gallery.names)} people")
    if not gallery.names:
        st.info("Nobody is enrolled yet.")
        return
    st.dataframe(pd.DataFrame({"name": gallery.names, "photos": [gallery.count(n) for n in gallery.names]}),
                 hide_index=True)
    person = st.selectbox("Person", gallery.names, key="manage_person")
    new_name = st.text_input("New name", key="manage_new_name")
    rename, remove = st.columns(2)
    if rename.button("Rename", key="rename", disabled=not new_name.strip()):
        change = lambda g: g.rename(person, new_name)  # noqa: E731
    elif remove.button("Remove", key="remove"):
        change = lambda g: g.remove(person)  # noqa: E731
    else:
        return
    try:  # on the file as it is now (another tab or a CLI may have changed it), under its lock
        FaceGallery.update(common.gallery_path(), change, lambda: gallery)
    except EdgepipeError as e:
        st.error(str(e))
        return
    st.rerun()


def labelled(results) -> tuple[list[str], list[bool], pd.DataFrame]:
    labels = [f"{m.name or 'unknown'} {m.distance:.2f}" for _, m in results]
    table = pd.DataFrame([{"name": m.name or "unknown", "distance": round(m.distance, 3), "nearest": m.nearest,
                           "face score": round(f.score, 3)} for f, m in results])
    return labels, [m.name is not None for _, m in results], table


def identify_image(recognizer: FaceRecognizer, image_rgb, threshold: float) -> None:
    results = recognizer.identify(image_rgb, threshold)
    if not results:
        st.warning("No face found in this image.")
        return
    labels, known, table = labelled(results)
    annotated = draw_faces(image_rgb, [f for f, _ in results], labels, known)
    st.image(annotated, caption=", ".join(labels))
    st.dataframe(table, hide_index=True)
    st.download_button("Download annotated image", encode_image(annotated), "faces.jpg", "image/jpeg")


def identify_video(recognizer: FaceRecognizer, video_path: Path, threshold: float) -> None:
    """Faces tracked across frames and named by their track's vote (`edgepipe run`'s step): a face is embedded when
    its track is new, uncertain or every `IdentityVotes.every` frames, not on every frame."""
    capture, fps, frames = open_video(video_path)
    out_path = video_path.with_name("faces.mp4")
    step = video_step(recognizer.detector, None, recognizer.embedder, recognizer.gallery, threshold=threshold)
    bar, tracks, start = st.progress(0.0, text="Identifying ..."), {}, time.perf_counter()
    try:
        with VideoOut(out_path, fps, (int(capture.get(3)), int(capture.get(4)))) as out:
            for i, frame in enumerate(read_frames(capture)):
                annotated, rows = step(frame, i)
                for row in rows:  # a track's name is its latest vote
                    shown = tracks.setdefault(row["track"], {"track": row["track"], "frames": 0})
                    shown.update(name=row.get("name") or "unknown", frames=shown["frames"] + 1)
                out.write(annotated)
                bar.progress(min(1.0, (i + 1) / frames), text=f"frame {i + 1}/{frames}")
    finally:
        capture.release()
    st.caption(f"{(i + 1) / (time.perf_counter() - start):.1f} frames per second")
    st.video(str(out_path))
    st.dataframe(pd.DataFrame(list(tracks.values()), columns=["track", "name", "frames"]), hide_index=True)
    if not tracks:
        st.warning("No face found in this video.")


def main() -> None:
    st.title("Face recognition")
    models, figs = models_ui()
    if models is None:
        return
    detector, embedder = models
    gallery = gallery_ui(embedder)
    if gallery is None:
        return
    try:
        recognizer = FaceRecognizer(detector, embedder, gallery)
    except EdgepipeError as e:
        st.error(str(e))
        return
    default, source = default_threshold(embedder, figs)
    threshold = st.sidebar.slider("Match threshold (distance)", 0.2, 1.2, default, 0.01, key="threshold",
                                  help=f"default {default:.3f}: {source}; a face is known when its distance is below")
    enroll_ui(recognizer)
    manage_ui(recognizer.gallery)
    st.subheader("Identify")
    shown = common.input_ui("identify", "Photo or video to identify", camera=True)
    if shown is None:
        return
    try:
        if shown.video_path is not None:
            identify_video(recognizer, shown.video_path, threshold)
        else:
            identify_image(recognizer, shown.image_rgb, threshold)
    except EdgepipeError as e:
        st.error(str(e))


main()
