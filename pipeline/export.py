"""torch -> ONNX for zoo models, with the contract in the file and parity measured on real images:
`export_onnx(name, out_dir) -> Artifact` writes `NAME.fp32.onnx` and `NAME.fp32.json`."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

import edgepipe
from edgepipe.artifact import Artifact, write_contract
from edgepipe.errors import ArtifactError, ExportError
from edgepipe.export_nms import NMS_OUTPUTS, GFLDecoded, with_nms
from edgepipe.models import build, get_spec
from edgepipe.models.registry import spec_of
from edgepipe.parity import Parity, chips_for_parity, measure_parity
from edgepipe.runtime.atomic import atomic_write, check_destination, scratch_dir
from edgepipe.runtime.preprocess import read_image
from edgepipe.runtime.specs import ArtifactMeta, Precision, Resize, Task
from edgepipe.samples import sample_images
from edgepipe.sources import sha256_file
from edgepipe.specs import FACE_DETECTOR, ModelSpec

__all__ = ["export_onnx", "export_module", "artifact_meta"]

log = logging.getLogger(__name__)

PARITY_DETECTOR = FACE_DETECTOR  # finds the faces whose chips test an embedder's parity


def artifact_meta(spec: ModelSpec, precision: Precision = Precision.FP32, *, opset: int = 18,
                  input_name: str = "x") -> ArtifactMeta:
    """The contract an artifact of `spec` carries."""
    weights = spec.weights
    return ArtifactMeta(
        model_name=spec.name, task=spec.task, precision=precision, input=spec.input, head=spec.head,
        labels=spec.labels, input_name=input_name, opset=opset, edgepipe_version=edgepipe.__version__,
        spec_sha=spec.sha256, source_package=weights.pin if weights else "",
        source_file=weights.member if weights else "", source_sha256=weights.member_sha256 if weights else "",
        license=spec.license,
    )


def export_onnx(
    name: str,
    out_dir: str | Path,
    *,
    opset: int = 18,
    cache_dir: Path | None = None,
    weights: Path | None = None,
    images: list[Path] | None = None,
    parity_atol: float = 1e-4,
    nms_in_graph: bool = False,
) -> Artifact:
    """Export a zoo model to `out_dir/NAME.fp32.onnx` and measure torch vs ONNX Runtime parity.

    Args:
        name: zoo key.
        out_dir: output directory (created).
        opset: ONNX opset, >= 18 (torch 2.13's exporter builds at 18 and cannot convert Pad down to 17).
        cache_dir: weight cache root.
        weights: a safetensors state dict to export instead of the zoo weights.
        images: real photos for the parity check (default: the package sample photos).
        parity_atol: the largest raw-output difference accepted.
        nms_in_graph: detectors only: decode boxes and run ONNX NonMaxSuppression inside the graph.

    Returns:
        The artifact; its JSON holds size, sha256, parity figures and versions.

    Raises:
        ExportError: export failed or parity is worse than `parity_atol` (nothing is left in `out_dir`).
    """
    spec = spec_of(name, weights)  # a training checkpoint brings its own labels
    check_destination(out_dir, folder=True)  # before the export and parity work, not after
    _check_opset(opset)
    model = build(name, cache_dir=cache_dir, weights=weights)
    meta = artifact_meta(spec, opset=opset, input_name=_input_name(model))
    if weights is not None:  # provenance: the file actually exported
        meta = dataclasses.replace(meta, source_package="local weights", source_file=Path(weights).name,
                                   source_sha256=sha256_file(Path(weights)))
    return _export(model, meta, Path(out_dir), opset=opset, cache_dir=cache_dir, images=images,
                   parity_atol=parity_atol, nms_in_graph=nms_in_graph)


def export_module(
    module: torch.nn.Module,
    spec: ModelSpec,
    out_dir: str | Path,
    *,
    opset: int = 18,
    cache_dir: Path | None = None,
    images: list[Path] | None = None,
    parity_atol: float = 1e-4,
) -> Artifact:
    """Export your own `nn.Module` as an artifact, with the same contract, checks and parity figures as a zoo model.

    Args:
        module: the network; `forward` takes one (B, C, H, W) float32 batch, already normalised as `spec.input`
            says, and returns the outputs `spec.head` names, in its order. It is exported in eval mode.
        spec: its name (`<arch>_<variant>.<tag>`), task, input contract, head and labels (`weights` stays None).
        out_dir, opset, cache_dir, images, parity_atol: as for `export_onnx`.

    Returns:
        The artifact `out_dir/NAME.fp32.onnx` with its JSON (size, sha256, parity vs the module, versions).

    Raises:
        ExportError: export failed or parity is worse than `parity_atol` (nothing is left in `out_dir`).
    """
    if not isinstance(module, torch.nn.Module) or not isinstance(spec, ModelSpec):
        raise ExportError(f"export_module takes an nn.Module and a ModelSpec, got {type(module).__name__} and "
                          f"{type(spec).__name__}")
    check_destination(out_dir, folder=True)
    _check_opset(opset)
    module = module.eval()
    meta = dataclasses.replace(artifact_meta(spec, opset=opset, input_name=_input_name(module)),
                               source_package="a user's nn.Module", source_file=type(module).__qualname__)
    return _export(module, meta, Path(out_dir), opset=opset, cache_dir=cache_dir, images=images,
                   parity_atol=parity_atol, nms_in_graph=False)


def _check_opset(opset: int) -> None:
    if opset < 18:
        raise ExportError(f"opset must be >= 18 (the exporter cannot convert Pad below 18), got {opset}")


def _input_name(model: torch.nn.Module) -> str:
    """The graph input's name: the name of forward()'s first argument (what `dynamic_shapes` keys on)."""
    return next(iter(inspect.signature(model.forward).parameters))


def _export(model: torch.nn.Module, meta: ArtifactMeta, out_dir: Path, *, opset: int, cache_dir: Path | None,
            images: list[Path] | None, parity_atol: float, nms_in_graph: bool) -> Artifact:
    """Trace, stamp, check parity on real photos, then write `NAME.fp32.onnx` and its JSON (nothing on failure)."""
    name, spec_head = meta.model_name, meta.head
    onnx_path = out_dir / f"{name}.fp32.onnx"
    started = time.perf_counter()
    if nms_in_graph:
        if spec_head.kind != "gfl":  # the one head whose boxes the graph can decode so far (export_nms.GFLDecoded)
            raise ExportError(f"--nms-in-graph needs a GFL box detector; {name} has a {spec_head.kind!r} head")
        meta = dataclasses.replace(meta, head=dataclasses.replace(spec_head, mode="nms", outputs=NMS_OUTPUTS))
        decoded = GFLDecoded(model, spec_head, meta.input.input_hw).eval()
        proto = with_nms(_to_onnx(decoded, meta, opset, output_names=("all_boxes", "all_scores")), meta.head,
                         meta.head.graph_score_floor)
    else:
        proto = _to_onnx(model, meta, opset)
    proto = _finish(proto, meta)
    export_s = time.perf_counter() - started
    photos = [read_image(p) for p in (images or sample_images(cache_dir))]
    with scratch_dir("export") as tmp:
        candidate = tmp / onnx_path.name
        onnx.save_model(proto, candidate)
        try:
            parity = _parity(model, candidate, meta, photos, cache_dir)
        except ArtifactError as e:
            raise ExportError(f"{name}: the exported file does not load back: {e}") from e
        if parity.gate_max_abs_diff > parity_atol:
            raise ExportError(f"{name}: torch vs onnxruntime max abs diff {parity.gate_max_abs_diff:.3g} "
                              f"exceeds {parity_atol:g}")
        data = candidate.read_bytes()
    figures = {
        "model": name, "precision": meta.precision.value, "onnx": onnx_path.name,
        "size_mb": round(len(data) / 1e6, 3), "sha256": "", "parity_vs": "torch fp32", "parity": parity.to_dict(),
        "export": {"opset": opset, "seconds": round(export_s, 2), "dynamic_batch": True, "nms_in_graph": nms_in_graph},
        "versions": _versions(), "meta": json.loads(meta.to_json()),
    }
    atomic_write(onnx_path, data)
    figures["sha256"] = sha256_file(onnx_path)
    json_path = atomic_write(onnx_path.with_suffix(".json"), json.dumps(figures, indent=1).encode())
    return Artifact(onnx_path, json_path, meta, figures)


def _to_onnx(model: torch.nn.Module, meta: ArtifactMeta, opset: int,
             output_names: tuple[str, ...] | None = None) -> onnx.ModelProto:
    """Trace with the dynamo exporter, dynamic batch (and size, for Resize.PAD), weights inside."""
    dummy = torch.zeros((2, *_input_shape(meta, traced=True)), dtype=torch.float32)
    with scratch_dir("export") as tmp:
        path = tmp / "model.onnx"
        try:
            with _quiet_exporter():
                torch.onnx.export(
                    model, (dummy,), str(path), input_names=[meta.input_name],
                    output_names=list(output_names or meta.head.outputs),
                    dynamic_shapes={meta.input_name: _dynamic_axes(meta)},
                    opset_version=opset, external_data=False, dynamo=True, verbose=False,
                )
            proto = onnx.load(str(path))
        except Exception as e:  # the exporter raises many unrelated types; report one line
            raise ExportError(f"{meta.model_name}: torch.onnx.export failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300] if str(e) else ''}") from e
    return proto


@contextlib.contextmanager
def _quiet_exporter():
    """Silence, for one export, what torch 2.13's exporter says on every call and a user cannot act on: a warning
    per torchvision op it cannot register (we never use torchvision) and a FutureWarning from torch's own pytree."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec")
            yield
    finally:
        registration.setLevel(level)


def _finish(proto: onnx.ModelProto, meta: ArtifactMeta) -> onnx.ModelProto:
    """Attach the contract and check the whole graph."""
    write_contract(proto, meta)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{meta.model_name}: onnx.checker rejected the graph: {str(e).splitlines()[0]}") from e
    return proto


def _input_shape(meta: ArtifactMeta, traced: bool = False) -> tuple[int, int, int]:
    """The input's (C, H, W) in its layout; `traced`: the size to trace with (for Resize.PAD a small, non-square
    one of multiples, so that the exporter keeps H and W apart and symbolic)."""
    c, h, w = meta.input.shape_chw
    if traced and meta.input.resize == Resize.PAD:
        m = meta.input.size_multiple
        h, w = m * min(4, h // m), m * min(5, w // m)
    return (c, h, w) if meta.input.layout.value == "NCHW" else (h, w, c)


def _dynamic_axes(meta: ArtifactMeta) -> dict[int, object]:
    """Batch, and for Resize.PAD height and width as multiples of `size_multiple` up to the input size."""
    axes: dict[int, object] = {0: torch.export.Dim("batch", min=1, max=1024)}
    if meta.input.resize == Resize.PAD:
        m, (h, w) = meta.input.size_multiple, meta.input.input_hw
        rows, cols = (2, 3) if meta.input.layout.value == "NCHW" else (1, 2)
        axes[rows] = m * torch.export.Dim("rows", min=1, max=h // m)
        axes[cols] = m * torch.export.Dim("cols", min=1, max=w // m)
    return axes


def _parity(model, onnx_path: Path, meta: ArtifactMeta, photos: list[np.ndarray], cache_dir) -> Parity:
    if meta.head.task == Task.FACE_EMBEDDING:
        detector_spec = get_spec(PARITY_DETECTOR)
        detector = build(PARITY_DETECTOR, cache_dir=cache_dir)
        chips = chips_for_parity(detector, artifact_meta(detector_spec), photos, meta.head)
        return dataclasses.replace(measure_parity(model, onnx_path, photos, chips), chips_from=PARITY_DETECTOR)
    return measure_parity(model, onnx_path, photos)


def _versions() -> dict:
    return {"edgepipe": edgepipe.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
