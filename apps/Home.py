"""The edgepipe demo's landing page: what it shows, which artifacts it found, and a button that builds missing ones.

Run with `edgepipe demo` or `streamlit run apps/Home.py [-- --artifacts DIR --gallery FILE]`. The build runs
`python -m edgepipe.cli build --no-bench` in a subprocess, so this app never imports torch.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import streamlit as st

from edgepipe.apps import common

NEEDED = (  # (model, what the demo uses it for)
    (common.FACE_DETECTORS[0], "face detection (Face recognition page)"),
    (common.EMBEDDERS[0], "face embeddings (Face recognition page)"),
    (common.OBJECT_DETECTOR, "object detection, 80 COCO classes (Object detection page)"),
)
PAGES = (
    ("pages/1_Face_recognition.py", "Face recognition", "enroll people from photos or the camera into a gallery "
     "that persists; name everyone in a photo, video or camera shot"),
    ("pages/2_Object_detection.py", "Object detection", "boxes, labels and scores on an image or video; threshold, "
     "class filter, annotated download"),
    ("pages/3_Model_lab.py", "Model lab", "any artifact x precision x execution provider: live latency beside the "
     "recorded accuracy and parity, and the bench report's plots"),
)


def artifacts_ui() -> list[str]:
    """The table of needed artifacts; returns the missing models."""
    found = common.find_artifacts()
    rows = []
    for model, use in NEEDED:
        precisions = sorted(p for m, p in found if m == model)
        rows.append({"model": model, "used for": use, "found": ", ".join(precisions) or "missing"})
    st.subheader("Artifacts")
    st.caption(f"Looking in `{common.artifacts_dir()}` (set `EDGEPIPE_ARTIFACTS` or `--artifacts` to change it)")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    others = sorted(f"{m}.{p}" for m, p in found if m not in {n for n, _ in NEEDED})
    if others:
        st.caption("Also found: " + ", ".join(others))
    return [row["model"] for row in rows if row["found"] == "missing"]


def build_command(models: list[str]) -> list[str]:
    return [sys.executable, "-m", "edgepipe.cli", "build", *models, "--no-bench", "--out", str(common.artifacts_dir())]


def build_ui(missing: list[str]) -> None:
    """A button that builds the missing artifacts in a subprocess, streaming its log into a status box."""
    st.warning(f"Missing: {', '.join(missing)}. Building fetches the weights, exports, checks parity and evaluates "
               "(needs the `edgepipe[torch]` extra; a few minutes).")
    command = build_command(missing)
    st.code(" ".join(command), language="bash")
    if not st.button("Build missing artifacts", key="build"):
        return
    with st.status("Building artifacts ...", expanded=True) as status:
        log = st.empty()
        lines: list[str] = []
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as e:
            status.update(label=f"Cannot start the build: {e}", state="error")
            return
        for line in process.stdout:
            lines.append(line.rstrip())
            log.code("\n".join(lines[-20:]))
        code = process.wait()
        if code == 0:
            status.update(label="Build finished", state="complete", expanded=False)
            st.rerun()
        last = next((line for line in reversed(lines) if line.strip()), "no output")
        status.update(label=f"Build failed (exit code {code}): {last}", state="error")


def main() -> None:
    st.set_page_config(page_title="edgepipe demo", layout="wide")
    st.title("edgepipe demo")
    st.markdown("PyTorch vision models exported to ONNX and run here with **onnxruntime + numpy only** "
                "(`edgepipe.runtime`, no torch), exactly as an edge device would run them.")
    for page, title, text in PAGES:
        st.page_link(page, label=f"**{title}**: {text}")
    missing = artifacts_ui()
    if missing:
        build_ui(missing)
    else:
        st.success("All the artifacts the demo needs are here.")
    st.caption(f"Face gallery: `{common.gallery_path()}`. Uploads up to {common.MAX_UPLOAD_MB} MB.")


main()
