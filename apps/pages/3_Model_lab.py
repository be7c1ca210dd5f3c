"""Model lab: run any artifact (model x precision x execution provider on this host) on the current input, its
latency beside the figures the build recorded, and the bench report's plots. Test hook: `st.session_state["lab_path"]`."""

from __future__ import annotations

import json
import time

import altair as alt
import numpy as np
import onnxruntime as ort
import pandas as pd
import streamlit as st

from edgepipe.apps import common
from edgepipe.runtime import EdgepipeError
from edgepipe.runtime.preprocess import prepare, read_image

WARM_RUNS = 7


def choice_ui() -> tuple[str, str, str] | None:
    found = common.find_artifacts()
    if not found:
        common.missing_message("model")
        return None
    models = sorted({model for model, _ in found})
    left, middle, right = st.columns(3)
    model = left.selectbox("Model", models, key="lab_model")
    precision = middle.selectbox("Precision", sorted(p for m, p in found if m == model), key="lab_precision")
    providers = [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]  # remote, not local
    provider = right.selectbox("Execution provider", providers, index=providers.index("CPUExecutionProvider"),
                               key="lab_provider")
    return model, precision, provider


def image_ui() -> tuple[str, np.ndarray] | None:
    shown = common.input_ui("lab", "Image to run on (default: the first sample photo)", allow_video=False)
    if shown is not None:
        return shown.name, shown.image_rgb
    samples = common.sample_images()
    if samples:
        return samples[0].name, read_image(samples[0])
    st.info("Upload an image: no sample photos in the cache yet (`edgepipe build` fetches them).")
    return None


def measure(path, provider: str, image_rgb: np.ndarray) -> tuple[float, list[float], list[str]]:
    """(p50 ms, all warm run times, providers the session really uses) for one batch-1 inference."""
    session = common.model(str(path), tuple(dict.fromkeys((provider, "CPUExecutionProvider"))))
    batch, _ = prepare(image_rgb, session.meta.input)
    session.run(batch)  # the first run allocates and is not representative
    times = []
    for _ in range(WARM_RUNS):
        start = time.perf_counter()
        session.run(batch)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times)), times, list(session.providers)


def bench_rows() -> list[dict]:
    """The measured rows of the bench report beside the artifacts (empty when there is none or it is unreadable)."""
    try:
        rows = json.loads((common.artifacts_dir() / "report" / "bench.json").read_text())
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict) and r.get("status") == "ok" and r.get("latency_ms_p50")]


def recorded_p50(figs: dict, model: str, precision: str) -> tuple[float, str] | None:
    """(ms, where from): the bench report's CPU batch-1 cell with the fewest threads, else quantize's timing."""
    cells = sorted((r["threads"], r["latency_ms_p50"]) for r in bench_rows() if r.get("model") == model
                   and r.get("precision") == precision and r.get("ep") == "cpu" and r.get("batch") == 1)
    if cells:
        return cells[0][1], f"bench, cpu, {cells[0][0]} thread(s)"
    speed = figs.get("speed") or {}
    return (speed["ms_p50"], f"quantize, {speed.get('threads')} thread(s)") if "ms_p50" in speed else None


def figures_ui(figs: dict, model: str, precision: str) -> None:
    found = common.accuracy(figs)
    cols = st.columns(3)
    cols[0].metric("Recorded accuracy", f"{100 * found[1]:.2f}%" if found else "n/a", found[0] if found else None,
                   delta_color="off")
    cols[1].metric("Size", f"{figs.get('size_mb', float('nan')):.2f} MB")
    recorded = recorded_p50(figs, model, precision)
    cols[2].metric("Recorded p50", f"{recorded[0]:.1f} ms" if recorded else "n/a", recorded[1] if recorded else None,
                   delta_color="off")
    with st.expander("Parity and evaluations recorded by the build"):
        st.json({"parity_vs": figs.get("parity_vs"), "parity": figs.get("parity"),
                 "evaluations": {k: v.get("metrics") for k, v in (figs.get("evaluations") or {}).items()},
                 "accuracy": {k: v for k, v in (figs.get("accuracy") or {}).items() if k != "rounds"}})


def bench_ui() -> None:
    path = common.artifacts_dir() / "report" / "bench.json"
    st.subheader("Bench report")
    if not path.is_file():
        st.info(f"No bench report at `{path}`: run `edgepipe build` (without --no-bench) or `edgepipe bench`.")
        return
    try:
        rows = pd.DataFrame(json.loads(path.read_text()))
        rows = rows[(rows["status"] == "ok") & rows["latency_ms_p50"].notna()].copy()
    except (ValueError, KeyError) as e:
        st.error(f"{path}: unreadable bench report ({type(e).__name__}: {e})")
        return
    if rows.empty:
        st.info(f"{path}: no measured rows.")
        return
    st.caption(f"`{path}`: {len(rows)} measured cells")
    rows["ep x precision"] = rows["ep"] + " / " + rows["precision"]
    rows["cell"] = rows["ep x precision"] + " / " + rows["threads"].astype(str) + "t"  # one bar per cell, not summed
    bars = alt.Chart(rows).mark_bar().encode(  # labels in full, one 20 px band per cell: none cut or overlapping
        x=alt.X("latency_ms_p50:Q", title="latency p50 (ms)"),
        y=alt.Y("cell:N", title=None, axis=alt.Axis(labelLimit=0)),
        color="precision:N", row=alt.Row("model:N", title=None),
        tooltip=["model", "precision", "ep", "threads", "batch", "latency_ms_p50", "latency_ms_p90"],
    ).transform_filter(alt.datum.batch == 1).resolve_scale(y="independent").properties(  # own cells per model
        height=alt.Step(20))
    st.altair_chart(bars)
    figs = {key: common.figures(path) for key, path in common.find_artifacts().items()}
    rows["accuracy"] = [(common.accuracy(figs.get((m, p), {})) or (None, None))[1]
                        for m, p in zip(rows["model"], rows["precision"])]
    points = rows[rows["accuracy"].notna() & (rows["batch"] == 1)]
    if points.empty:
        st.info("No artifact JSON in the artifact folder records an accuracy for the benched models.")
        return
    scatter = alt.Chart(points).mark_circle(size=90).encode(
        x=alt.X("latency_ms_p50:Q", title="latency p50 (ms)", scale=alt.Scale(type="log")),
        y=alt.Y("accuracy:Q", scale=alt.Scale(zero=False)), color="ep x precision:N",
        facet=alt.Facet("model:N", columns=2, title=None),
        tooltip=["model", "precision", "ep", "threads", "latency_ms_p50", "accuracy"],
    ).resolve_scale(y="independent", x="independent").interactive()
    st.altair_chart(scatter)


def main() -> None:
    st.title("Model lab")
    chosen = choice_ui()
    if chosen is not None:
        model, precision, provider = chosen
        path = common.find_artifacts()[(model, precision)]
        st.caption(f"`{path}`")
        image = image_ui()
        if image is not None:
            name, image_rgb = image
            try:
                p50, times, used = measure(path, provider, image_rgb)
            except EdgepipeError as e:
                st.error(str(e))
            else:
                st.success(f"{model} {precision} on {used[0]}: p50 {p50:.2f} ms over {len(times)} warm runs "
                           f"on {name} ({image_rgb.shape[1]}x{image_rgb.shape[0]})")
        figures_ui(common.figures(path), model, precision)
    bench_ui()


main()
