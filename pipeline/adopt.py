"""`edgepipe adopt`: any ONNX file becomes an edgepipe artifact. `adopt(source, out_dir, options)` checks that the
graph fits an input contract and an output head, given as a zoo model to start from (`like`) or a head kind, with
any field overridden, and writes `DIR/NAME.PRECISION.onnx` with the contract in its metadata plus its JSON (the
source's sha256 and what was checked). From then on the file goes through quantize, eval, bench, run, faces and
the demo like an exported one.

What is checked, each failure one line naming the file and what does not fit: one graph input, rank 4 with 3
channels in the contract's layout, its fixed H and W against the contract's size, its dtype; every output the head
reads is in the graph; a dry run on a blank input at the contract's size (and at a smaller one for a size-keeping
input) gives exactly the output shapes the head decodes; a detector's class count equals its labels.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

import edgepipe
from edgepipe.artifact import Artifact, write_contract
from edgepipe.errors import ArtifactError
from edgepipe.runtime import load
from edgepipe.runtime.atomic import atomic_write, check_destination, scratch_dir
from edgepipe.runtime.enums import Color, Layout, Precision, Resize, Task
from edgepipe.runtime.heads import HEADS
from edgepipe.runtime.specs import ArtifactMeta, InputSpec
from edgepipe.sources import sha256_file

__all__ = ["AdoptOptions", "adopt", "raw_input_spec"]

_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
              "DynamicQuantizeLinear"}
_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.UINT8: "uint8"}


@dataclass(frozen=True)
class AdoptOptions:
    """The contract to stamp: a zoo model's (`like`) or a head kind's defaults (`head`), then these overrides."""

    like: str | None = None  # a zoo model whose input contract, head and labels to start from
    head: str | None = None  # a head kind (`HEADS`), when not `like`
    name: str | None = None  # the artifact's model name (default: the file's stem + ".adopted")
    input_size: tuple[int, int] | None = None  # (width, height); default: the graph's fixed size
    resize: Resize | None = None
    size_multiple: int | None = None  # Resize.PAD: the graph takes H, W that are multiples of this
    any_size: bool = False  # the graph declares a fixed H, W but takes any (YuNet's 640x640, which OpenCV overrides)
    color: Color | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    labels: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None  # the graph outputs the head reads, in its order
    template_of: str | None = None  # embedding heads: the chip template and size of this zoo model
    head_params: dict = field(default_factory=dict)  # any other head field, e.g. {"score_thresh": 0.5}

    def __post_init__(self) -> None:
        if (self.like is None) == (self.head is None):
            raise ArtifactError("adopt needs exactly one of --like MODEL (a zoo model's contract) or --head KIND")
        if self.head is not None and self.head not in HEADS:
            raise ArtifactError(f"unknown head {self.head!r}; expected one of {', '.join(sorted(HEADS))}")


def adopt(source: str | Path, out_dir: str | Path, options: AdoptOptions) -> Artifact:
    """Check `source` against the contract `options` describe and write it, stamped, into `out_dir`.

    Returns:
        The new artifact with its figures (source sha256, the checks made).

    Raises:
        ArtifactError: the file is not ONNX, or the graph does not fit the contract (one line saying where).
    """
    source = Path(source)
    check_destination(out_dir, folder=True)
    if not source.is_file():
        raise ArtifactError(f"{source}: no such file")
    proto = _load(source)
    graph_input = _single_input(proto, source)
    spec_input, head, labels = _contract(options)
    layout, dims = _layout(graph_input, spec_input.layout, source)
    overrides = {key: getattr(options, key) for key in ("resize", "size_multiple", "color", "mean", "std")}
    spec_input = _input_spec(spec_input, overrides, options.input_size, options.any_size, layout, dims, graph_input,
                             source)
    if options.any_size:
        _open_size(graph_input, proto, layout)
    head = _head(head, options, spec_input.input_hw)
    labels = tuple(options.labels) if options.labels is not None else labels
    if head.task == Task.DETECTION and not labels:
        raise ArtifactError(f"{source}: a {head.kind!r} detector needs its class names: --labels FILE, one per line")
    missing = [name for name in head.outputs if name not in {o.name for o in proto.graph.output}]
    if missing:
        raise ArtifactError(f"{source}: graph outputs {[o.name for o in proto.graph.output]} lack {missing}, which "
                            f"the {head.kind!r} head reads (name them with --outputs)")
    quantized = any(node.op_type in _QUANT_OPS for node in proto.graph.node)
    precision = Precision.INT8 if quantized else Precision.FP32
    name = options.name or _default_name(source)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    meta = ArtifactMeta(model_name=name, task=head.task, precision=precision, input=spec_input, head=head,
                        labels=labels, input_name=graph_input.name, opset=opset,
                        edgepipe_version=edgepipe.__version__, source_file=source.name,
                        source_sha256=sha256_file(source))
    data = write_contract(proto, meta).SerializeToString()
    with scratch_dir("adopt") as tmp:
        (tmp / "candidate.onnx").write_bytes(data)
        checked = _dry_run(tmp / "candidate.onnx", meta, source)
    out_path = Path(out_dir) / f"{name}.{precision.value}.onnx"
    atomic_write(out_path, data)
    figures = {"model": name, "precision": precision.value, "onnx": out_path.name, "adopted_from": str(source),
               "source_sha256": meta.source_sha256, "size_mb": round(len(data) / 1e6, 3), "checks": checked,
               "versions": {"edgepipe": edgepipe.__version__, "onnx": onnx.__version__},
               "meta": json.loads(meta.to_json())}
    json_path = atomic_write(out_path.with_suffix(".json"), json.dumps(figures, indent=1).encode())
    return Artifact(out_path, json_path, meta, figures)


def raw_input_spec(source: str | Path, *, input_size: tuple[int, int] | None = None, resize: Resize | None = None,
                   color: Color | None = None, mean: tuple[float, float, float] | None = None,
                   std: tuple[float, float, float] | None = None) -> InputSpec:
    """The input contract of a graph that has none (for `quantize` on it), from its image input and these choices;
    by default raw 0-255 RGB pixels, stretched to the graph's fixed size. Raises ArtifactError as `adopt` does."""
    source = Path(source)
    if not source.is_file():
        raise ArtifactError(f"{source}: no such file")
    graph_input = _single_input(_load(source), source)
    base = InputSpec((3, 1, 1), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize=Resize.STRETCH)
    layout, dims = _layout(graph_input, base.layout, source)
    overrides = {"resize": resize, "color": color, "mean": mean, "std": std}
    return _input_spec(base, overrides, input_size, False, layout, dims, graph_input, source)


def _load(source: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(source))
    except Exception as e:  # protobuf's DecodeError and friends: the bytes are not a model
        raise ArtifactError(f"{source}: not an ONNX model ({type(e).__name__})") from e


def _single_input(proto: onnx.ModelProto, source: Path) -> onnx.ValueInfoProto:
    weights = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ArtifactError(f"{source}: edgepipe takes graphs with one image input, this one has "
                            f"{[i.name for i in inputs]}")
    return inputs[0]


def _contract(options: AdoptOptions) -> tuple[InputSpec, object, tuple[str, ...]]:
    """The starting input spec, head and labels: the zoo model's, or the head kind's defaults."""
    if options.like is not None:
        from edgepipe.models import get_spec

        spec = get_spec(options.like)  # raises for an unknown name, listing the zoo
        return spec.input, spec.head, spec.labels
    head_class = HEADS[options.head]
    resize = head_class.resize or Resize.LETTERBOX
    # Raw 0-255 pixels unless --mean/--std say otherwise: the one convention that needs no guess.
    return InputSpec((3, 1, 1), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize=resize), head_class, ()


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _layout(graph_input: onnx.ValueInfoProto, preferred: Layout, source: Path) -> tuple[Layout, list[int | None]]:
    """NCHW or NHWC: where the graph's static channel count of 3 is (the contract's layout when both fit)."""
    dims = _dims(graph_input)
    fits = [layout for layout, axis in ((Layout.NCHW, 1), (Layout.NHWC, 3)) if len(dims) == 4 and dims[axis] == 3]
    if not fits:
        shown = "x".join("?" if d is None else str(d) for d in dims)
        raise ArtifactError(f"{source}: input {graph_input.name!r} is {shown}; edgepipe needs a rank-4 image input "
                            "with a static channel count of 3 (NCHW or NHWC)")
    return (preferred if preferred in fits else fits[0]), dims


def _input_spec(base: InputSpec, overrides: dict, input_size: tuple[int, int] | None, any_size: bool,
                layout: Layout, dims: list[int | None], graph_input: onnx.ValueInfoProto, source: Path) -> InputSpec:
    """`base` with the graph's layout, size (or `input_size`, WxH) and dtype, and the non-None `overrides`."""
    graph_hw = tuple(dims[2:4]) if layout == Layout.NCHW else tuple(dims[1:3])
    if input_size is not None:
        width, height = input_size
        hw = (height, width)
    elif base.shape_chw[1:] != (1, 1) and (any_size or None in graph_hw):
        hw = base.shape_chw[1:]  # the zoo contract's size, for a graph that takes it
    elif None not in graph_hw:
        hw = graph_hw
    else:
        raise ArtifactError(f"{source}: input {graph_input.name!r} has a dynamic height or width; give its size with "
                            "--input-size WxH")
    if None not in graph_hw and graph_hw != tuple(hw) and not any_size:
        raise ArtifactError(f"{source}: input {graph_input.name!r} is fixed at {graph_hw[1]}x{graph_hw[0]} (WxH), the "
                            f"contract says {hw[1]}x{hw[0]}; use --input-size {graph_hw[1]}x{graph_hw[0]}, or "
                            "--any-size if the graph takes other sizes")
    dtype = _DTYPES.get(graph_input.type.tensor_type.elem_type)
    if dtype is None:
        raise ArtifactError(f"{source}: input {graph_input.name!r} is of ONNX type "
                            f"{onnx.TensorProto.DataType.Name(graph_input.type.tensor_type.elem_type)}; edgepipe feeds "
                            "float32 or uint8 images")
    changes = {"shape_chw": (3, *hw), "layout": layout, "dtype": dtype}
    changes.update({key: value for key, value in overrides.items() if value is not None})
    if dtype == "uint8":
        changes.update(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return dataclasses.replace(base, **changes)


def _open_size(graph_input: onnx.ValueInfoProto, proto: onnx.ModelProto, layout: Layout) -> None:
    """Make the declared input H, W and every output dim after the batch symbolic, and drop the stored
    intermediate shapes, so that onnxruntime takes the sizes the graph really computes."""
    shape = graph_input.type.tensor_type.shape.dim
    for axis, label in zip((2, 3) if layout == Layout.NCHW else (1, 2), ("height", "width")):
        shape[axis].dim_param = label
    for output in proto.graph.output:
        for axis, dim in enumerate(output.type.tensor_type.shape.dim[1:], start=1):
            dim.dim_param = f"{output.name}_{axis}"
    del proto.graph.value_info[:]


def _head(base, options: AdoptOptions, input_hw: tuple[int, int]):
    """The head: the zoo model's or the kind's defaults, with the overrides; unknown fields are one line. An
    embedder's chip is its input: its size defaults to the input's, and a borrowed template is scaled to it."""
    params = dataclasses.asdict(base) if dataclasses.is_dataclass(base) and not isinstance(base, type) else {}
    head_class = type(base) if params else base
    fields = {f.name for f in dataclasses.fields(head_class)}
    if options.outputs is not None:
        params["outputs"] = tuple(options.outputs)
    if options.template_of is not None:
        from edgepipe.models import get_spec

        donor = get_spec(options.template_of).head
        if not hasattr(donor, "template"):
            raise ArtifactError(f"{options.template_of} is not a face embedder; it has no chip template")
        params["template"] = donor.template
        params["chip_size"] = donor.chip_size  # the template's own scale, until the chip size is known below
    unknown = sorted(set(options.head_params) - fields)
    if unknown:
        raise ArtifactError(f"the {head_class.kind!r} head has no field {', '.join(unknown)}; it has "
                            f"{', '.join(sorted(fields - {'kind'}))}")
    if "chip_size" in fields:
        template_scale = params.get("chip_size") or input_hw[0]
        chip = options.head_params.get("chip_size", input_hw[0] if input_hw[0] == input_hw[1] else None)
        if chip != input_hw[0] or input_hw[0] != input_hw[1]:
            raise ArtifactError(f"an embedder's chip is its input: the input is {input_hw[1]}x{input_hw[0]} (WxH), "
                                f"the chip {chip}x{chip}")
        params["template"] = tuple((name, x * chip / template_scale, y * chip / template_scale)
                                   for name, x, y in map(_tuple, params.get("template") or ()))
        params["chip_size"] = chip
    params.update({k: v for k, v in options.head_params.items() if k != "chip_size"})
    params.pop("kind", None)
    try:
        return head_class(**{k: _tuple(v) for k, v in params.items()})
    except TypeError as e:
        raise ArtifactError(f"the {head_class.kind!r} head needs {e}") from e


def _tuple(value):
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def _default_name(source: Path) -> str:
    stem = re.sub(r"[^a-z0-9_]+", "_", source.stem.lower()).strip("_") or "model"
    return f"{stem}.adopted"


def _dry_run(path: Path, meta: ArtifactMeta, source: Path) -> dict:
    """Load the stamped graph as the runtime does and run blank inputs: the outputs must have the shapes the head
    decodes, and a detector as many classes as labels. Returns what was checked."""
    try:
        model = load(path)
    except ArtifactError as e:
        raise ArtifactError(str(e).replace(str(path), str(source))) from e
    sizes = [meta.input.input_hw]
    if meta.input.resize == Resize.PAD:  # a size-keeping input: a second, smaller size must work too
        m = meta.input.size_multiple
        sizes.append((max(m, meta.input.input_hw[0] // 2 // m * m), max(m, meta.input.input_hw[1] // 3 // m * m)))
    checked = {}
    for height, width in sizes:
        shape = (1, 3, height, width) if meta.input.layout == Layout.NCHW else (1, height, width, 3)
        blank = np.full(shape, 0, np.uint8 if meta.input.dtype == "uint8" else np.float32)
        try:
            outputs = model.run(blank)
        except Exception as e:  # onnxruntime's own errors: the graph cannot run at this size
            hint = (f"; a size-keeping (pad) input must take every multiple of {meta.input.size_multiple} up to "
                    f"{meta.input.input_hw[1]}x{meta.input.input_hw[0]}: --any-size opens a graph that does, "
                    "--resize letterbox feeds it one size" if (height, width) != meta.input.input_hw else "")
            raise ArtifactError(f"{source}: does not run on a {width}x{height} (WxH) input "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:120]}){hint}") from e
        found = tuple(tuple(o.shape[1:]) for o in outputs)
        classes = meta.head.classes_in(found) if meta.task == Task.DETECTION else 0
        if meta.task == Task.DETECTION and meta.labels and classes and classes != len(meta.labels):
            raise ArtifactError(f"{source}: output {meta.head.outputs[0]!r} scores {classes} classes, the labels "
                                f"name {len(meta.labels)}")
        expected = meta.head.output_shapes((height, width), classes)
        if found != tuple(map(tuple, expected)):
            wrong = next(i for i, (f, e) in enumerate(zip(found, expected)) if f != tuple(e))
            raise ArtifactError(f"{source}: at {width}x{height}, output {meta.head.outputs[wrong]!r} is "
                                f"{'x'.join(map(str, found[wrong]))} after the batch; the {meta.head.kind!r} head "
                                f"expects {'x'.join(map(str, expected[wrong]))}")
        checked[f"{width}x{height}"] = {name: list(shape) for name, shape in zip(meta.head.outputs, found)}
    return {"output_shapes": checked, "input": meta.input_name, "outputs": list(meta.head.outputs)}
