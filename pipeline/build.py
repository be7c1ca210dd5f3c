"""The main job: `build_models(names, out_dir)` fetches and converts weights, exports every model, checks
parity, evaluates on the data folders given, times the face pipeline, and returns one row per artifact."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

import edgepipe
from edgepipe.artifact import Artifact
from edgepipe.benchmark import BenchOptions, benchmark, time_detector, time_face_pipeline
from edgepipe.errors import EdgepipeError, QuantizeError, SpecError
from edgepipe.evaluate import detect_layout, evaluate
from edgepipe.export import export_onnx
from edgepipe.metrics.coco import read_coco
from edgepipe.models import get_spec, list_models
from edgepipe.pareto import accuracy_points
from edgepipe.quantize import QuantizeOptions, quantize
from edgepipe.report import render_report
from edgepipe.runtime.atomic import atomic_write, check_destination
from edgepipe.runtime.preprocess import read_image
from edgepipe.runtime.specs import ArtifactMeta, Task
from edgepipe.samples import sample_images
from edgepipe.sources import sha256_file
from edgepipe.specs import FACE_DETECTOR

__all__ = ["build_models", "SummaryRow"]

log = logging.getLogger(__name__)

_LAYOUT_TASK = {"lfw": Task.FACE_EMBEDDING, "coco": Task.DETECTION, "widerface": Task.FACE_DETECTION}


@dataclass(frozen=True)
class SummaryRow:
    """One line of the main job's summary table: an artifact and its headline figures, as text for people."""

    model: str
    precision: str
    size_mb: float | None = None
    parity_max_abs: float | None = None  # torch vs onnxruntime (fp32), the gate the export judges
    decoded_parity: str | None = None  # after decoding: faces / boxes / chips compared
    metric: str | None = None  # e.g. "map_50_95 28.76% (coco_val_mini)"; None when no data set fitted
    latency: str | None = None
    onnx: str | None = None  # the artifact's path; None when quantization missed its budget

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_models(names: list[str] | None, out_dir: Path, *, data_dirs: tuple[Path, ...] = (),
                 cache_dir: Path | None = None, calib_dir: Path | None = None, bench: bool = True,
                 weights: Path | None = None, face_detector: str = FACE_DETECTOR, rebuild: bool = False,
                 progress: bool = True) -> list[SummaryRow]:
    """Export, check and evaluate zoo models, then benchmark them and render the report; returns summary rows
    (one per artifact) and updates each artifact's JSON with its evaluations and timings.

    Args:
        names: zoo keys (default: every model).
        out_dir: where `NAME.fp32.onnx/.json` go.
        data_dirs: evaluation folders (LFW, COCO or WIDER FACE layout); each is used for the models whose task
            fits its layout.
        cache_dir: weight and sample cache root.
        calib_dir: real photos to calibrate on: then every model is also quantized to int8 with its family's
            defaults, within the accuracy budget on the data folder of its task (a model over budget gets a row
            saying so, and its JSON keeps the figures).
        bench: finish with a short CPU benchmark (1 thread, batch 1, with the torch and OpenCV baselines) and
            `out_dir/report/report.{md,html}`.
        weights: an `edgepipe train` checkpoint (or a state dict) for the one model named, instead of its zoo
            weights; a detector trained on 'face' is scored on WIDER FACE folders.
        face_detector: the zoo face detector that finds and aligns faces for the embedders (exported too).
        rebuild: export every model again, even one whose artifact in `out_dir` is up to date (same spec sha,
            source weights sha256, edgepipe version, and the file its JSON describes); evaluations always run.
        progress: show progress on stderr.

    Raises:
        SpecError: an unknown model, or `weights` with other than one model.
    """
    names = list(names or list_models())
    if weights is not None and len(names) != 1:
        raise SpecError(f"--weights belongs to one model; name exactly one MODEL (got {len(names)})")
    for name in names:
        get_spec(name)  # fail on an unknown name before any work
    if get_spec(face_detector).task != Task.FACE_DETECTION:
        raise SpecError(f"{face_detector} is not a face detector; the embedders need one to align faces")
    check_destination(out_dir, folder=True)
    layouts = {Path(d): detect_layout(Path(d)) for d in data_dirs}
    artifacts: dict[str, Artifact] = {}
    # disable=None: a bar on a terminal only; a log would get its last line twice, and every redraw
    for name in tqdm(names, desc="export", unit="model", disable=None if progress else True):
        kept = None if rebuild or weights is not None else _up_to_date(name, Path(out_dir))
        if kept is not None:
            log.info("%s: %s is up to date (same spec, weights and edgepipe version): kept", name, kept.onnx_path)
        artifacts[name] = kept or export_onnx(name, out_dir, cache_dir=cache_dir, weights=weights)
    detector = _face_detector(face_detector, artifacts, out_dir, cache_dir, names)
    scored_on = {name: [d for d, layout in layouts.items() if _fits(artifact, layout, d)]
                 for name, artifact in artifacts.items()}  # the data folders each artifact is evaluated on
    for data_dir in layouts:
        for name, artifact in artifacts.items():
            if data_dir in scored_on[name]:
                report = evaluate(artifact.onnx_path, data_dir, detector=detector, progress=progress)
                artifact.figures.setdefault("evaluations", {})[data_dir.name] = json.loads(report.to_json())
    photos = [read_image(p) for p in sample_images(cache_dir)]
    for artifact in artifacts.values():
        if artifact.meta.task == Task.FACE_EMBEDDING and detector is not None:
            artifact.figures["face_pipeline_latency"] = time_face_pipeline(detector, artifact.onnx_path, photos)
        elif artifact.meta.task in (Task.DETECTION, Task.FACE_DETECTION):
            artifact.figures["detector_latency"] = time_detector(artifact.onnx_path, photos)
    for artifact in artifacts.values():
        atomic_write(artifact.json_path, json.dumps(artifact.figures, indent=1).encode())
    quantized = _quantize_all(artifacts, calib_dir, scored_on, detector, out_dir) if calib_dir else []
    built = [*artifacts.values(), *(q for q in quantized if isinstance(q, Artifact))]
    if bench:
        options = BenchOptions(threads=(1,), batch=(1,), warmup=3, runs=10, cache_dir=cache_dir)
        rows = [r.to_dict() for r in benchmark([a.onnx_path for a in built], options)]
        atomic_write(Path(out_dir) / "report" / "bench.json", json.dumps(rows, indent=1).encode())
        render_report(rows, accuracy_points(rows, [a.figures for a in built]), Path(out_dir) / "report")
    return [_row(a) for a in artifacts.values()] + [_quant_row(q) for q in quantized]


def _quantize_all(artifacts, calib_dir: Path, scored_on: dict[str, list[Path]], detector, out_dir) -> list:
    """int8 of every fp32 artifact: an Artifact, or a SummaryRow saying so when the budget could not be met."""
    results = []
    for name, artifact in artifacts.items():
        eval_data = next(iter(scored_on[name]), None)
        options = QuantizeOptions(calib_dir=Path(calib_dir), eval_data=eval_data,
                                  detector=detector if artifact.meta.task == Task.FACE_EMBEDDING else None)
        try:
            results.append(quantize(artifact.onnx_path, "int8", out_dir, options))
        except QuantizeError as e:
            log.warning("%s", e)
            results.append(SummaryRow(name, "int8", metric=f"over the accuracy budget: no .onnx; figures in "
                                                           f"{name}.int8.json"))
    return results


def _fits(artifact: Artifact, layout: str, data_dir: Path) -> bool:
    """Whether a data folder scores this artifact: its task's layout (for COCO, with a class in common), or WIDER
    FACE for a box detector with a 'face' class (a fine-tuned one)."""
    if layout == "coco" and artifact.meta.task == Task.DETECTION:
        return bool(set(artifact.meta.labels) & set(read_coco(data_dir).categories.values()))
    return artifact.meta.task == _LAYOUT_TASK.get(layout) or (
        layout == "widerface" and artifact.meta.task == Task.DETECTION and "face" in artifact.meta.labels)


def _quant_row(result) -> SummaryRow:
    if isinstance(result, SummaryRow):
        return result
    figures = result.figures
    speed, accuracy = figures.get("speed", {}), figures.get("accuracy")
    decoded = figures.get("parity", {}).get("decoded", {})
    return SummaryRow(
        figures["model"], figures["precision"], size_mb=figures["size_mb"],
        decoded_parity=(f"{decoded['matched_fraction']:.0%} of fp32 detections matched"
                        if "matched_fraction" in decoded else None),
        metric=(f"{accuracy['metric']} {100 * accuracy['quantized']:.2f}% (drop {accuracy['drop_points']:.2f} "
                f"points, {Path(str(accuracy['data'])).name})" if accuracy else None),
        latency=f"{speed.get('speedup')}x fp32 ({speed.get('threads')} threads)", onnx=str(result.onnx_path))


def _up_to_date(name: str, out_dir: Path) -> Artifact | None:
    """The fp32 artifact an earlier build left in `out_dir`, if it is whole and is what this build would export."""
    onnx_path = out_dir / f"{name}.fp32.onnx"
    json_path = onnx_path.with_suffix(".json")
    try:
        figures = json.loads(json_path.read_bytes())
        meta = ArtifactMeta.from_json(json.dumps(figures["meta"]))
        whole = onnx_path.is_file() and figures["sha256"] == sha256_file(onnx_path)
    except (OSError, ValueError, KeyError, TypeError, EdgepipeError):
        return None
    spec = get_spec(name)
    same = (meta.spec_sha == spec.sha256 and meta.edgepipe_version == edgepipe.__version__
            and meta.source_sha256 == (spec.weights.member_sha256 if spec.weights else "")
            and meta.source_package == (spec.weights.pin if spec.weights else ""))
    return Artifact(onnx_path, json_path, meta, figures) if whole and same else None


def _face_detector(name: str, artifacts, out_dir, cache_dir, names) -> Path | None:
    """The detector artifact that aligns faces for embedders (exported if the job did not include it)."""
    if not any(get_spec(n).task == Task.FACE_EMBEDDING for n in names):
        return None
    if name not in artifacts:
        path = Path(out_dir) / f"{name}.fp32.onnx"
        if not path.is_file():
            export_onnx(name, out_dir, cache_dir=cache_dir)
        return path
    return artifacts[name].onnx_path


def _row(artifact: Artifact) -> SummaryRow:
    figures = artifact.figures
    parity = figures["parity"]
    decoded = None
    if "n_faces_torch" in parity:
        decoded = f"{parity['n_faces_torch']} faces, box {parity['box_max_abs_diff_px']:.2g} px"
    if "n_detections_torch" in parity:
        decoded = (f"{parity['n_detections_torch']} boxes, {parity['detection_mismatches']} differ, "
                   f"box {parity['box_max_abs_diff_px']:.2g} px")
    if "cosine_min" in parity:
        decoded = f"{parity['n_chips']} chips, cos {parity['cosine_min']:.6f}"
    metric = "; ".join(f"{next(iter(r['metrics']))} {100 * next(iter(r['metrics'].values())):.2f}% ({name})"
                       for name, r in figures.get("evaluations", {}).items()) or None
    latency = None
    if figures.get("face_pipeline_latency"):
        found = figures["face_pipeline_latency"]
        latency = f"cold {found['cold_start_ms']:.0f} ms, {found['per_face_ms_p50']} ms/face"
    if figures.get("detector_latency"):
        found = figures["detector_latency"]
        latency = f"cold {found['cold_start_ms']:.0f} ms, {found['image_ms_p50']} ms/image"
    return SummaryRow(figures["model"], figures["precision"], figures["size_mb"], parity["gate_max_abs_diff"], decoded,
                      metric, latency, str(artifact.onnx_path))
