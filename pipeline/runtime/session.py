"""Open an edgepipe ONNX artifact with onnxruntime and its self-described contract: `load(path) -> Model`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgepipe.runtime.errors import ArtifactError
from edgepipe.runtime.providers import DEVICES, captured, explain, not_listed, preload, session_providers
from edgepipe.runtime.specs import ArtifactMeta, Layout

__all__ = ["load", "Model", "read_contract"]

log = logging.getLogger(__name__)

METADATA_KEY = "edgepipe"  # key of the JSON contract in the ONNX file's metadata_props


@dataclass
class Model:
    """An inference session plus the artifact's contract."""

    path: Path
    meta: ArtifactMeta
    session: ort.InferenceSession
    providers: list[str] = field(default_factory=list)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one preprocessed batch; returns the outputs in the order the head names them. A graph whose batch
        axis is fixed at 1 (as many published files are) runs a longer batch one item at a time."""
        names, feed = list(self.output_names), self.meta.input_name
        if self.session.get_inputs()[0].shape[0] == 1 and len(batch) > 1:
            runs = [self.session.run(names, {feed: batch[i:i + 1]}) for i in range(len(batch))]
            return [np.concatenate(parts) for parts in zip(*runs)]
        return self.session.run(names, {feed: batch})

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.meta.head.outputs)


def read_contract(metadata: Mapping[str, str], path: str | Path) -> ArtifactMeta:
    """The contract in an ONNX file's metadata (key -> value, as onnxruntime or onnx give it).

    Raises:
        ArtifactError: no edgepipe entry, or a malformed or incompatible one.
    """
    if METADATA_KEY not in metadata:
        raise ArtifactError(f"{path}: has no edgepipe metadata (key {METADATA_KEY!r}); export it with `edgepipe export`")
    try:
        return ArtifactMeta.from_json(metadata[METADATA_KEY])
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from e


_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}


def _check_input(graph_input, meta: ArtifactMeta, path: Path) -> None:
    """Refuse a contract whose input size, layout or dtype the graph's input cannot take (its fixed dims)."""
    channels, height, width = meta.input.shape_chw
    expected = (channels, height, width) if meta.input.layout == Layout.NCHW else (height, width, channels)
    dims = list(graph_input.shape)
    fixed = [d if isinstance(d, int) else None for d in dims[1:]]
    if len(dims) != 4 or any(d is not None and d != e for d, e in zip(fixed, expected)):
        shown = "x".join(str(d) if isinstance(d, int) else "?" for d in dims)
        raise ArtifactError(f"{path}: graph input {graph_input.name!r} is {shown} but the contract says "
                            f"{meta.input.layout.value} {'x'.join(map(str, expected))} (after the batch)")
    if graph_input.type != _ORT_TYPES[meta.input.dtype]:
        raise ArtifactError(f"{path}: graph input {graph_input.name!r} is {graph_input.type} but the contract says "
                            f"{meta.input.dtype}")


def load(
    path: str | Path,
    *,
    providers: list | None = None,
    device: str | None = None,
    intra_op_threads: int = 0,
    session_options: ort.SessionOptions | None = None,
) -> Model:
    """Open an artifact and validate its edgepipe contract.

    Args:
        path: an ONNX file written by edgepipe.
        providers: onnxruntime's providers argument, used as given (default: CPU only).
        device: instead of `providers`: "cpu", "cuda", "tensorrt" (CUDA behind it for what TensorRT does not take;
            engines and timing cache under `$EDGEPIPE_CACHE/tensorrt/`, fp16 for an fp16 artifact) or "openvino".
            A device whose provider does not run here is an ArtifactError saying why, never a silent CPU run.
        intra_op_threads: onnxruntime intra-op threads; 0 lets onnxruntime choose.
        session_options: options to start from (e.g. profiling on); the thread count and log level are set on them.

    Returns:
        A `Model` whose `meta` says how to pre- and post-process.

    Raises:
        ArtifactError: the file is missing, not ONNX, has no or an incompatible edgepipe contract, its
            inputs/outputs do not match the contract, or the `device` asked for does not run here.
        ValueError: both `providers` and `device`, or an unknown device.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    if device is not None and providers is not None:
        raise ValueError("give providers or device, not both")
    options = session_options or ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    if device not in (None, "cpu"):
        return _load_on(path, device, options, intra_op_threads)
    session = _session(path, options, providers or ["CPUExecutionProvider"])
    return _model(path, session)


def _load_on(path: Path, device: str, options: ort.SessionOptions, threads: int) -> Model:
    """`load` on an accelerator: its providers, its libraries preloaded, and a refusal naming why when it drops."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    missing = not_listed(DEVICES[device])
    if missing:
        raise ArtifactError(f"{path}: device {device!r}: {missing}")
    fp16 = device == "tensorrt" and _model(path, _session(path, ort.SessionOptions(), ["CPUExecutionProvider"])
                                           ).meta.precision.value == "fp16"
    options.log_severity_level = 2  # the warnings that say why a provider drops out, captured for the error
    with captured() as printed:
        preload(DEVICES[device])
        session = _session(path, options, session_providers(device, threads=threads, fp16=fp16))
    options.log_severity_level = 3
    if DEVICES[device] not in session.get_providers():
        raise ArtifactError(f"{path}: device {device!r}: {explain(DEVICES[device], printed[0])}")
    return _model(path, session)


def _session(path: Path, options: ort.SessionOptions, providers: list) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own untyped errors for corrupt or invalid files
        raise ArtifactError(f"{path}: not a loadable ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e


def _model(path: Path, session: ort.InferenceSession) -> Model:
    meta = read_contract(session.get_modelmeta().custom_metadata_map, path)
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name for o in session.get_outputs()}
    if inputs != [meta.input_name]:
        raise ArtifactError(f"{path}: graph inputs {inputs} do not match the contract's {[meta.input_name]}")
    missing = [name for name in meta.head.outputs if name not in outputs]
    if missing:
        raise ArtifactError(f"{path}: graph lacks the outputs {missing} its contract names")
    _check_input(session.get_inputs()[0], meta, path)
    return Model(path=path, meta=meta, session=session, providers=session.get_providers())
