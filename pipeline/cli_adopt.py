"""`edgepipe adopt`, and `quantize` on a file without a contract: the commands for ONNX files from elsewhere."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

__all__ = ["add_adopt_command", "add_input_flags", "has_contract", "input_choices", "quantize_raw_command"]


def _size(text: str) -> tuple[int, int]:
    """WxH, both whole numbers > 0."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 640x640, got {text!r}")
    return int(width), int(height)


def _triple(text: str) -> tuple[float, float, float]:
    """Three finite numbers, comma-separated (one per channel, in the model's colour order)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected three finite numbers like 0,0,0, got {text!r}")
    return values


def _setting(text: str) -> tuple[str, object]:
    """KEY=VALUE, VALUE read as JSON when it is JSON (0.5, [8, 16], "x"), else as a string."""
    key, equals, value = text.partition("=")
    if not equals or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a head field as KEY, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_input_flags(parser, size_default: str) -> None:
    """How a photo becomes a graph's input: --input-size, --resize, --color, --mean, --std (adopt, and quantize on a
    file without a contract)."""
    parser.add_argument("--input-size", type=_size, metavar="WxH", help=f"the input size {size_default}")
    parser.add_argument("--resize", choices=["letterbox", "letterbox_center", "stretch", "pad"],
                        help="how a photo becomes the input (pad: the photo's own size, padded to a multiple)")
    parser.add_argument("--color", choices=["rgb", "bgr"], help="channel order the graph expects")
    parser.add_argument("--mean", type=_triple, metavar="A,B,C", help="subtracted from 0-255 pixels, per channel")
    parser.add_argument("--std", type=_triple, metavar="A,B,C", help="divided after the mean, per channel")


def input_choices(args) -> dict:
    """The add_input_flags values as InputSpec fields (None where not given)."""
    from edgepipe.runtime.enums import Color, Resize

    return {"input_size": args.input_size, "resize": Resize(args.resize) if args.resize else None,
            "color": Color(args.color.upper()) if args.color else None, "mean": args.mean, "std": args.std}


def _cmd_adopt(args) -> int:
    from edgepipe.adopt import AdoptOptions, adopt
    from edgepipe.runtime.atomic import read_text

    labels = None
    if args.labels:
        labels = tuple(line.strip() for line in read_text(args.labels).splitlines() if line.strip())
    head_params = dict(args.set or [])
    for key in ("score_thresh", "nms_iou"):
        if getattr(args, key) is not None:
            head_params[key] = getattr(args, key)
    options = AdoptOptions(
        like=args.like, head=args.head, name=args.name, size_multiple=args.size_multiple, any_size=args.any_size,
        **input_choices(args), labels=labels, outputs=tuple(args.outputs.split(",")) if args.outputs else None, template_of=args.template_of,
        head_params=head_params)
    artifact = adopt(Path(args.model), Path(args.out), options)
    meta, sizes = artifact.meta, ", ".join(artifact.figures["checks"]["output_shapes"])
    spec = meta.input
    print(f"wrote {artifact.onnx_path} ({meta.head.kind} head, {meta.task.value}, {meta.precision.value}; input "
          f"{meta.input_name!r} {spec.layout.value} {spec.color.value} {'x'.join(map(str, spec.shape_chw))} "
          f"{spec.resize.value}); outputs checked at {sizes} (WxH); figures in {artifact.json_path}")
    return 0


def has_contract(path: Path) -> bool:
    """Whether an ONNX file carries an edgepipe contract (a missing or broken file: let the command say so)."""
    import onnx

    from edgepipe.runtime.session import METADATA_KEY

    try:
        return any(p.key == METADATA_KEY for p in onnx.load(str(path), load_external_data=False).metadata_props)
    except Exception:  # not ONNX, or missing: the artifact path reports it in one line
        return True


def quantize_raw_command(args) -> int:
    from edgepipe.adopt import raw_input_spec
    from edgepipe.quantize import CalibMethod
    from edgepipe.quantize_raw import quantize_raw

    spec = raw_input_spec(args.artifact, **input_choices(args))
    figures = quantize_raw(args.artifact, args.precision, args.out, spec, calib_dir=args.calib,
                           calib_size=args.calib_size or 32, method=CalibMethod(args.method or "minmax"),
                           min_cosine=args.min_cosine)
    speed, budget = figures["speed"], figures["budget"]
    print(f"wrote {Path(args.out) / figures['onnx']} ({figures['size_mb']} MB, {figures['size_vs_fp32']:.2f} of fp32); "
          f"{speed['fp32_ms_p50']} -> {speed['ms_p50']} ms ({speed['speedup']}x) at {speed['threads']} threads; no "
          f"contract, so the budget is output parity: worst cosine to fp32 {budget['worst_cosine']:.4f} (>= "
          f"{budget['min_cosine']:g})")
    return 0


def add_adopt_command(sub) -> None:
    from edgepipe.cli_args import positive_int, score
    from edgepipe.runtime.heads import HEADS

    adopt = sub.add_parser(
        "adopt", help="make any ONNX file an edgepipe artifact: check it fits a head and stamp the contract",
        description="Check an ONNX file against an input contract and an output head, then write DIR/NAME.fp32.onnx "
        "(int8 for a quantized graph) with the contract in its metadata and NAME.fp32.json (source sha256, what was "
        "checked). Start from a zoo model's contract (--like) or a head kind (--head, raw 0-255 pixels unless "
        "--mean/--std), and override any part. The result goes through quantize, eval, bench, run, faces and demo.")
    adopt.add_argument("model", help="the ONNX file")
    adopt.add_argument("--out", required=True, help="output directory")
    start = adopt.add_mutually_exclusive_group(required=True)
    start.add_argument("--like", metavar="ZOO_MODEL", help="take this zoo model's input contract, head and labels "
                       "(see `edgepipe zoo list`)")
    start.add_argument("--head", choices=sorted(HEADS), help="the output head, with its defaults")
    adopt.add_argument("--name", help="the artifact's model name (default: the file's stem + .adopted)")
    add_input_flags(adopt, "(default: the graph's fixed size, or with --like that model's)")
    adopt.add_argument("--size-multiple", type=positive_int, help="with --resize pad: H and W are multiples of this")
    adopt.add_argument("--any-size", action="store_true", help="the graph declares a fixed H, W but computes any "
                       "(as YuNet's 640x640, which OpenCV overrides per image): make them symbolic")
    adopt.add_argument("--labels", help="class names, one per line (detectors; their count must match the graph's)")
    adopt.add_argument("--outputs", metavar="A,B,...", help="the graph outputs the head reads, in the head's order")
    adopt.add_argument("--template-of", metavar="ZOO_MODEL", help="embedding heads: use this zoo embedder's chip "
                       "template and size (sface.opencv: five points in 112 px; dlib_resnet29.facerec: 150 px)")
    adopt.add_argument("--score-thresh", type=score, help="detectors: the default minimum score")
    adopt.add_argument("--nms-iou", type=score, help="detectors: suppress boxes overlapping more than this")
    adopt.add_argument("--set", type=_setting, action="append", metavar="KEY=VALUE",
                       help="any other head field, VALUE as JSON (e.g. --set metric='\"cosine\"' --set dim=512)")
    adopt.set_defaults(func=_cmd_adopt)
