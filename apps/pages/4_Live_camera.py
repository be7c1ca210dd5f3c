"""Live camera: the browser's camera streamed to the app over WebRTC (streamlit-webrtc), every face tracked and
named from the gallery file (or objects boxed), drawn back onto the stream at its own rate; the newest frame wins.

No STUN server is asked for (the app and the browser meet on this machine or its network); a browser on another
network needs `--server.address` and a TURN/STUN setup of your own.
"""

from __future__ import annotations

import threading
import time

import av
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from edgepipe.apps import common
from edgepipe.run_video import capped, video_step
from edgepipe.runtime import EdgepipeError, FaceGallery

MAX_SIDE = 640  # detect on frames shrunk to this (720p at camera rate on two cores)


class Live:
    """The per-stream state the WebRTC thread updates and the page reads: the step, frames done, rate."""

    def __init__(self, step):
        self.step, self.lock = step, threading.Lock()
        self.frames, self.started, self.last_rows = 0, time.perf_counter(), []

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        image = frame.to_ndarray(format="rgb24")
        with self.lock:  # one frame at a time through the tracker
            if self.frames == 0:  # the rate counts from the first frame, not from the page load before START
                self.started = time.perf_counter()
            annotated, rows = self.step(image, self.frames)
            self.frames += 1
            self.last_rows = rows
        out = av.VideoFrame.from_ndarray(annotated, format="rgb24")
        out.pts, out.time_base = frame.pts, frame.time_base
        return out


def main() -> None:
    st.title("Live camera")
    found = common.find_artifacts()
    mode = st.sidebar.radio("Show", ["Faces and names", "Objects"], key="live_mode")
    if mode == "Objects":
        path = found.get((common.OBJECT_DETECTOR, "fp32"))
        if path is None:
            common.missing_message(common.OBJECT_DETECTOR)
            return
        make_step = lambda: video_step(common.object_detector(str(path)))  # noqa: E731
    else:
        detector, embedder = (found.get((name, "fp32")) for name in (common.FACE_DETECTORS[0], common.EMBEDDERS[0]))
        if detector is None or embedder is None:
            common.missing_message("face detector" if detector is None else "face embedder")
            return
        faces, embeddings = common.face_models(str(detector), str(embedder))
        try:
            path = common.gallery_path()
            gallery = FaceGallery.load(path) if path.is_file() else FaceGallery.for_embedder(embeddings)
        except EdgepipeError as e:
            st.error(str(e))
            return
        st.caption(f"{len(gallery.names)} people in `{common.gallery_path()}` (enroll them on the Face recognition page)")
        make_step = lambda: video_step(capped(faces, MAX_SIDE), None, embeddings, gallery)  # noqa: E731
    key = f"live-{mode}"
    if f"{key}-state" not in st.session_state:  # one tracker per browser session and mode, kept across reruns
        st.session_state[f"{key}-state"] = Live(make_step())  # (webrtc_streamer keeps its own under `key`)
    live = st.session_state[f"{key}-state"]
    context = webrtc_streamer(key=key, mode=WebRtcMode.SENDRECV, rtc_configuration={"iceServers": []},
                              media_stream_constraints={"video": True, "audio": False},
                              video_frame_callback=live, async_processing=True)
    status = st.empty()
    while context.state.playing:
        with live.lock:
            frames, rows = live.frames, live.last_rows
        rate = frames / max(1e-6, time.perf_counter() - live.started)
        names = sorted({r.get("name") or "unknown" if r["label"] == "face" else r["label"] for r in rows})
        status.markdown(f"**{frames} frames** processed, {rate:.1f} per second; now: {', '.join(names) or 'nothing'}")
        time.sleep(0.5)


main()
