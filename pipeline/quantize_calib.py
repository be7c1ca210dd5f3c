"""Real-image inputs for `edgepipe.quantize`: `calibration_inputs` (photos, or aligned face chips for an embedder,
through the runtime's own preprocessing), the `ImageReader` onnxruntime calibrates from, and
`rank_harmful_nodes`, which orders quantized nodes by the error each one adds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgepipe.errors import InputError, QuantizeError
from edgepipe.ort_quantization import CalibrationDataReader
from edgepipe.runtime.faces import FaceDetector, face_chip
from edgepipe.runtime.preprocess import IMAGE_SUFFIXES, prepare, read_image, to_input
from edgepipe.runtime.specs import ArtifactMeta, Task

__all__ = ["calibration_inputs", "ImageReader", "rank_harmful_nodes"]

READER_BATCH = 8  # images per calibration run: fewer session calls, same ranges (MinMax/histograms are per value)


def list_images(folder: Path) -> list[Path]:
    """Every visible entry of `folder`, sorted; raises if it is missing, empty or holds a non-image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such calibration directory")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise InputError(f"{folder}: calibration directory is empty; need >= 1 image")
    for path in entries:
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{path}: not an image file; a calibration directory holds only images "
                             f"({', '.join(IMAGE_SUFFIXES)})")
    return entries


def calibration_inputs(meta: ArtifactMeta, paths: list[Path], limit: int, *, seed: int = 0,
                       detector: Path | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Up to `limit` (1, ...) model inputs from the photos `paths`, and their names.

    Photos are taken in a seeded random order. A face embedder gets aligned chips of the faces `detector` finds
    (refined keypoints, as evaluation aligns them), named `photo.jpg#k`; without a detector it gets whole photos
    resized to its input, which are real pixels but not faces. Raises InputError on an unreadable image and
    QuantizeError when no input results.
    """
    order = np.random.default_rng(seed).permutation(len(paths))
    embedder = meta.head.task == Task.FACE_EMBEDDING
    face_detector = FaceDetector.from_path(detector) if embedder and detector is not None else None
    inputs, names = [], []
    for index in order:
        if len(inputs) >= limit:
            break
        path = paths[index]
        image = read_image(path)
        if face_detector is None:
            inputs.append(prepare(image, meta.input)[0])  # an embedder's photo is stretched to its chip size
            names.append(path.name)
            continue
        for k, face in enumerate(face_detector.detect(image)[: limit - len(inputs)]):
            chip = face_chip(image, face_detector.refine(image, face), meta.head)
            inputs.append(to_input([chip], meta.input))
            names.append(f"{path.name}#{k}")
    if not inputs:
        raise QuantizeError(f"{paths[0].parent}: no calibration input: the face detector found no face in {len(paths)} images")
    return inputs, names


class ImageReader(CalibrationDataReader):
    """Feeds prepared inputs to onnxruntime's calibrator, up to `batch_limit` of one size at a time (inputs of a
    Resize.PAD model differ in size; an adopted graph may fix its batch at 1)."""

    def __init__(self, input_name: str, inputs: list[np.ndarray], batch_limit: int = READER_BATCH):
        self.input_name = input_name
        self.batches = []
        for i, array in enumerate(inputs):
            last = self.batches[-1] if self.batches else None
            if i % batch_limit and last is not None and last[-1].shape == array.shape:
                last.append(array)
            else:
                self.batches.append([array])
        self.batches = [np.concatenate(group) for group in self.batches]
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def graph_batch_limit(path: Path, input_name: str) -> int:
    """READER_BATCH, or 1 for a graph whose input declares its batch axis fixed at 1."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = next(i for i in graph.input if i.name == input_name).type.tensor_type.shape.dim
    return 1 if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1 else READER_BATCH


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute in int8: readers of a DequantizeLinear output (QDQ), integer ops (dynamic)."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.name for node in model.graph.node if node.op_type.endswith("Integer") or (
        node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Shape") and set(node.input) & dequantized)]


def _float_tensors(model: onnx.ModelProto) -> list[str]:
    """Node outputs that shape inference types as float32."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    return [out for node in model.graph.node for out in node.output if types.get(out) == onnx.TensorProto.FLOAT]


def _dequantized(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor -> the DequantizeLinear output its consumers read in a QDQ graph (tensor -> Q -> DQ)."""
    quantized_from = {node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    return {quantized_from[node.input[0]]: node.output[0] for node in reversed(model.graph.node)
            if node.op_type == "DequantizeLinear" and node.input[0] in quantized_from}


def _run_exposed(model: onnx.ModelProto, tensors: list[str], input_name: str, inputs: list[np.ndarray],
                 aliases: dict[str, str] | None = None):
    """Yield {tensor: value} per input with `tensors` (read as `aliases[tensor]` where given) made graph outputs,
    graph optimisations off (no fusion)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {out for node in exposed.graph.node for out in node.output}
    known = {o.name for o in exposed.graph.output}
    wanted = {(aliases or {}).get(t, t): t for t in tensors}
    exposed.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                                for t in wanted if t in present and t not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if o.name in wanted]
    for batch in inputs:
        yield {wanted[name]: value for name, value in zip(names, session.run(names, {input_name: batch}))}


def rank_harmful_nodes(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, input_name: str,
                       inputs: list[np.ndarray]) -> list[tuple[str, float, tuple[str, ...]]]:
    """Quantized nodes, most harmful first: (name, relative output error it adds over its worst input, the nodes
    to exclude to run it on float inputs: itself and the quantized producers of its inputs).

    Both graphs run on the same inputs with every float tensor exposed, the quantized one as its consumers read it
    (after QuantizeLinear -> DequantizeLinear); a tensor's error is ||quant - fp32|| / ||fp32|| over all inputs. A
    node's harm is the error of its output minus the largest error of its inputs: what quantizing its weights and
    activations adds, not what it inherits from upstream. A Relu that onnxruntime folds into its producer's output
    quantization leaves the producer writing the Relu's tensor, so outputs and producers come from the quantized graph.
    Excluding the node alone is not enough: onnxruntime keeps quantizing a tensor while its producer is quantized.
    """
    tensors = _float_tensors(float_model)
    squared_diff = dict.fromkeys(tensors, 0.0)
    squared_ref = dict.fromkeys(tensors, 0.0)
    for ref, got in zip(_run_exposed(float_model, tensors, input_name, inputs),
                        _run_exposed(quant_model, tensors, input_name, inputs, _dequantized(quant_model))):
        for name in set(ref) & set(got):
            squared_diff[name] += float(np.square(got[name].astype(np.float64) - ref[name]).sum())
            squared_ref[name] += float(np.square(ref[name].astype(np.float64)).sum())
    error = {t: np.sqrt(squared_diff[t] / squared_ref[t]) for t in tensors if squared_ref[t] > 0}
    by_name = {node.name: node for node in float_model.graph.node}
    outputs = {node.name: node.output for node in quant_model.graph.node}
    producer = {out: node.name for node in quant_model.graph.node for out in node.output}
    quantized = quantized_nodes(quant_model)
    harm = []
    for name in quantized:
        node = by_name.get(name)
        if node is None or not any(out in error for out in outputs[name]):
            continue
        out_error = max(error[out] for out in outputs[name] if out in error)
        in_error = max([error[t] for t in node.input if t in error], default=0.0)
        group = (name, *sorted({producer[t] for t in node.input if producer.get(t) in quantized} - {name}))
        harm.append((name, float(out_error - in_error), group))
    return sorted(harm, key=lambda item: -item[1])
