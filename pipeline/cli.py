"""The `edgepipe` command: a thin shell over the stages. Every `EdgepipeError` is one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from edgepipe.cli_adopt import add_adopt_command, add_input_flags, has_contract, quantize_raw_command
from edgepipe.cli_args import FACE_DETECTOR, artifact_dir, face_detector, images, ints, positive_int, score, shorten
from edgepipe.cli_engine import add_engine_flags, engine_of
from edgepipe.cli_faces import add_face_commands
from edgepipe.cli_train import add_training_commands
from edgepipe.errors import EdgepipeError
from edgepipe.specs import FACE_DETECTOR as FACE_DETECTOR_MODEL

__all__ = ["main"]


def _cmd_zoo_list(args) -> int:
    from edgepipe.models import get_spec, list_models
    from edgepipe.report import render_table

    rows = [{"model": n, "task": s.task.value, "input": _input_text(s.input),
             "source": s.weights.pin if s.weights else "-", "license": s.license, "published": s.published}
            for n, s in ((n, get_spec(n)) for n in list_models(args.pattern))]
    print(render_table(rows, ["model", "task", "input", "source", "license", "published"]))
    return 0


def _input_text(spec) -> str:
    """3x256x256, or for an input that keeps the photo's size (Resize.PAD) what sizes it takes: 3x(/32, <=1920)."""
    if spec.resize.value == "pad":
        return f"{spec.shape_chw[0]}x(/{spec.size_multiple}, <={max(spec.input_hw)})"
    return "x".join(map(str, spec.shape_chw))


def _cmd_export(args) -> int:
    from edgepipe.export import export_onnx

    artifact = export_onnx(args.model, Path(args.out), opset=args.opset, cache_dir=args.cache_dir,
                           weights=args.weights, images=images(args.images), nms_in_graph=args.nms_in_graph)
    parity = artifact.figures["parity"]
    print(f"wrote {artifact.onnx_path} ({artifact.figures['size_mb']} MB); torch vs onnxruntime max abs diff "
          f"{parity['gate_max_abs_diff']:.3g}; all figures in {artifact.json_path}")
    return 0


def _cmd_build(args) -> int:
    from edgepipe.build import build_models
    from edgepipe.report import render_table

    out = Path(args.out) if args.out else artifact_dir(args)
    rows = [row.to_dict() for row in build_models(args.models, out, data_dirs=tuple(Path(d) for d in args.data),
                                                  cache_dir=args.cache_dir, calib_dir=args.calib,
                                                  bench=not args.no_bench, weights=args.weights,
                                                  face_detector=args.detector, rebuild=args.rebuild)]
    columns = ["model", "precision", "size_mb", "parity_max_abs", "decoded_parity", "metric", "latency"]
    scored = any(row.get("metric") for row in rows)
    print(render_table(rows, [c for c in columns if c != "metric" or scored]))
    print(f"artifacts and their figures (JSON) in {out}" + ("" if args.no_bench else f"; report in {out / 'report'}"))
    if not scored:
        print("no accuracy figures: add --data DIR with a COCO, WIDER FACE or LFW folder (layouts in README) to "
              "score each model on the data of its task")
    return 0


def _cmd_eval(args) -> int:
    from edgepipe.evaluate import evaluate
    from edgepipe.runtime.atomic import atomic_write, check_destination

    if args.json:
        check_destination(args.json)
    report = evaluate(args.artifact, args.data, detector=face_detector(args, args.artifact),
                      interpolation=args.interpolation, reference=args.reference, task=args.task,
                      engine=engine_of(args))
    if args.json:
        atomic_write(args.json, report.to_json().encode())
    print(f"{report.task.value} of {report.model} ({report.precision}) on {args.data}: "
          + ", ".join(_metric_text(k, v) for k, v in report.metrics.items() if v is not None))
    return 0


def _metric_text(name: str, value: float) -> str:
    """A metric for people: fractions in percent (the points the README and `quantize` speak in)."""
    return f"{name} {value:.4g}" if name in _NOT_FRACTIONS else f"{name} {100 * value:.2f}%"


_NOT_FRACTIONS = {"threshold"}  # the verification threshold is a distance


def _cmd_quantize(args) -> int:
    from edgepipe.quantize import CalibMethod, QuantizeOptions, quantize

    if not has_contract(Path(args.artifact)):
        return quantize_raw_command(args)

    options = QuantizeOptions(calib_dir=args.calib, calib_size=args.calib_size, eval_data=args.eval_data,
                              method=CalibMethod(args.method) if args.method else None, per_channel=args.per_channel,
                              reduce_range=args.reduce_range, float_tail=args.float_tail, max_drop=args.max_drop,
                              detector=face_detector(args, args.artifact))
    artifact = quantize(Path(args.artifact), args.precision, Path(args.out), options)
    figures, speed, accuracy = artifact.figures, artifact.figures.get("speed", {}), artifact.figures.get("accuracy")
    print(f"wrote {artifact.onnx_path} ({figures['size_mb']} MB, {figures['size_vs_fp32']:.2f} of fp32); "
          f"{speed.get('fp32_ms_p50')} -> {speed.get('ms_p50')} ms ({speed.get('speedup')}x) at {speed.get('threads')} "
          "threads" + (f"; {accuracy['metric']} {100 * accuracy['fp32']:.2f}% -> {100 * accuracy['quantized']:.2f}% "
                       f"(drop {accuracy['drop_points']:.2f} points)" if accuracy else ""))
    if figures.get("warning"):
        print(f"warning: {figures['warning']}")
    return 0


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """NAME:DxDx...: an input name and its whole shape, every dim a whole number > 0."""
    name, colon, dims = text.rpartition(":")
    parts = dims.lower().split("x")
    if not colon or not name or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected NAME:1x3x640x640 (an input name, then every dim > 0), got {text!r}")
    return name, tuple(int(p) for p in parts)


def _cmd_bench(args) -> int:
    from edgepipe.benchmark import BenchOptions, benchmark
    from edgepipe.report import render_table
    from edgepipe.runtime.atomic import atomic_write, check_destination

    check_destination(args.json)
    options = BenchOptions(eps=tuple(args.ep.split(",")), threads=args.threads, batch=args.batch, warmup=args.warmup,
                           runs=args.runs, strict_ep=args.strict_ep, baselines=not args.no_baselines,
                           peak_gflops_per_core=args.peak_gflops, gpu_peak_gflops=args.gpu_peak_gflops,
                           cache_dir=args.cache_dir, image=args.image, shapes=dict(args.shape or []))
    rows = [r.to_dict() for r in benchmark([Path(a) for a in args.artifacts], options)]
    atomic_write(args.json, json.dumps(rows, indent=1).encode())
    columns = ["model", "precision", "ep", "threads", "batch", "status", "latency_ms_p50", "latency_ms_p99",
               "throughput_ips", "peak_rss_mb", "fallback", "peak_share"]
    if any(r.get("device_ms_p50") is not None for r in rows):  # GPU cells: the copy-free figures beside
        columns[7:7] = ["device_ms_p50", "graph_ms_p50", "copy_share"]
    not_ok = [r for r in rows if r["status"] != "ok"]
    shown = [dict(r, reason=shorten(r.get("reason") or "", 70)) for r in rows]
    print(render_table(shown, columns + (["reason"] if not_ok else [])))
    print(f"wrote {args.json}" + (f"; the whole reason of each of the {len(not_ok)} rows not ok is there" if not_ok else ""))
    asked = [r for r in rows if r["ep"] in options.eps]  # not the torch / OpenCV baselines
    failed = [r for r in asked if r["status"] != "ok"]
    # An EP that is not here is a row saying why; every cell failing, or any with --strict-ep, is an error.
    if failed and (args.strict_ep or all(r["status"] == "failed" for r in asked)):
        first = failed[0]
        print(f"edgepipe: error: {len(failed)} of {len(asked)} cells did not run"
              f"{' (--strict-ep)' if args.strict_ep and len(failed) < len(asked) else ''}; first: {first['model']} "
              f"{first['ep']} {first['threads']} threads: {first['status']}: {first.get('reason') or 'no reason given'}",
              file=sys.stderr)
        return 2
    return 0


def _cmd_report(args) -> int:
    from edgepipe.pareto import accuracy_points
    from edgepipe.report import read_bench_rows, read_identification, render_report
    from edgepipe.runtime.atomic import check_destination, read_json

    check_destination(args.out, folder=True)
    rows = [row for path in args.results for row in read_bench_rows(Path(path))]
    evals = [read_json(p) for p in sorted({Path(r["artifact"]).with_suffix(".json") for r in rows if r.get("artifact")})
             if p.is_file()]
    md, html = render_report(rows, accuracy_points(rows, evals), Path(args.out),
                             [read_identification(Path(p)) for p in args.identification or ()])
    print(f"wrote {md} and {html}")
    return 0


def _cmd_env_create(args) -> int:
    from edgepipe.envs import create_env, probe_env

    path = create_env(args.name, args.cache_dir, find_links=args.find_links, python=args.python,
                      tensorrt=args.tensorrt, system_cuda=args.system_cuda)
    probe = probe_env(args.name, args.cache_dir)
    has = probe["versions"] or {"onnxruntime": probe["onnxruntime"], "providers": probe["providers"]}
    cuda = {k: probe[k] for k in ("cuda_build", "cuda_driver", "cuda_runtime", "cudnn") if probe.get(k)}
    print(f"{args.name} environment at {path} ({probe['python']}): "
          + ", ".join(f"{key} {value}" for key, value in {**has, **cuda}.items()))
    for provider, reason in probe["usable"].items():  # listed is not runnable: say which run here
        print(f"  {provider}: {reason or 'runs here'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgepipe", description="PyTorch vision models to edge devices through "
                                     "ONNX, with measured parity, accuracy and speed.")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="weights, samples and default artifacts (default: $EDGEPIPE_CACHE or ~/.cache/edgepipe)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--max-pixels", type=positive_int, help="refuse image files larger than this many pixels, "
                        "read from their header before decoding (default: 100000000, or $EDGEPIPE_MAX_PIXELS)")
    sub = parser.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="the model zoo").add_subparsers(dest="zoo_command", required=True)
    zoo_list = zoo.add_parser("list", help="list zoo models with their source package, licence, published accuracy")
    zoo_list.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'blazeface*'")
    zoo_list.set_defaults(func=_cmd_zoo_list)

    export = sub.add_parser("export", help="export one zoo model to DIR/MODEL.fp32.onnx with parity figures")
    export.add_argument("model", help="zoo name, see `edgepipe zoo list`")
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18, default 18)")
    export.add_argument("--weights", type=Path, help="an `edgepipe train` checkpoint (its labels go into the artifact) "
                        "or a safetensors state dict, exported instead of the zoo weights")
    export.add_argument("--images", help="folder of real photos for the parity check (default: package samples)")
    export.add_argument("--nms-in-graph", action="store_true",
                        help="detectors: decode boxes and run ONNX NonMaxSuppression inside the graph (dynamic batch)")
    export.set_defaults(func=_cmd_export)

    build = sub.add_parser("build", help="the main job: fetch, convert, export, check parity, evaluate every model")
    build.add_argument("models", nargs="*", help="zoo names (default: all)")
    build.add_argument("--out", help="artifact directory (default: CACHE/artifacts)")
    build.add_argument("--data", action="append", default=[], metavar="DIR",
                       help="evaluation folder (LFW layout for face verification); repeatable")
    build.add_argument("--calib", type=Path, help="real photos to calibrate on: also build int8 artifacts within "
                       "the accuracy budget on the --data folder of each model's task")
    build.add_argument("--weights", type=Path, help="an `edgepipe train` checkpoint for the one MODEL named, "
                       "instead of its zoo weights")
    build.add_argument("--detector", default=FACE_DETECTOR_MODEL, metavar="MODEL",
                       help=f"zoo face detector that finds and aligns faces for the embedders (default: "
                            f"{FACE_DETECTOR_MODEL}, the default pair's)")
    build.add_argument("--rebuild", action="store_true", help="export every model again (default: keep an artifact "
                       "in --out that has the same spec, source weights and edgepipe version; evaluations always run)")
    build.add_argument("--no-bench", action="store_true", help="skip the closing CPU benchmark and report")
    build.set_defaults(func=_cmd_build)

    ev = sub.add_parser("eval", help="task metrics on a data folder: LFW pairs (face verification), COCO "
                        "(detection mAP, pycocotools), WIDER FACE (face AP@0.5)")
    ev.add_argument("artifact", help="an edgepipe .onnx file")
    ev.add_argument("--data", required=True, help="data folder: images/ + pairs.txt (LFW), instances.json (COCO) "
                    "or gt.txt (WIDER FACE)")
    ev.add_argument("--json", help="write the report here")
    ev.add_argument("--detector", help="face detector artifact used for alignment (default: "
                    f"{FACE_DETECTOR} beside ARTIFACT, else in CACHE/artifacts)")
    ev.add_argument("--interpolation", choices=["auto", "linear", "area", "nearest", "cubic"],
                    help="override the artifact's resize interpolation (default: the artifact's own)")
    ev.add_argument("--reference", action="store_true",
                    help="evaluate the source PyTorch model instead, through the same pre/post-processing")
    ev.add_argument("--task", choices=["identification"], help="identification: open-set on an LFW-layout folder "
                    "(first photo of each person enrolled, the rest probes, every 5th person an impostor): rank-1, "
                    "detection-and-identification and false-accept rates at the gallery's threshold, and their curve")
    add_engine_flags(ev)
    ev.set_defaults(func=_cmd_eval)

    quant = sub.add_parser("quantize", help="fp16 / int8 / int8-dynamic copy of an fp32 artifact, with its accuracy "
                           "cost (within a budget) and speed measured")
    quant.add_argument("artifact", help="an fp32 edgepipe .onnx, or any fp32 ONNX file with one image input: "
                       "without a contract the budget is output parity (--min-cosine), and --input-size/--resize/"
                       "--color/--mean/--std say how photos become its input")
    quant.add_argument("--precision", required=True, choices=["fp16", "int8", "int8-dynamic"])
    quant.add_argument("--calib", type=Path, help="folder of real photos to calibrate on (int8; photos not in the "
                       "evaluation set)")
    quant.add_argument("--calib-size", type=int, help="calibration inputs (default: the family's measured default)")
    quant.add_argument("--method", choices=["minmax", "entropy", "percentile"], help="int8 calibration method")
    quant.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                       help="int8 weights: one scale per output channel (default: the family's)")
    quant.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                       help="int8 weights in 7 bits, which the AVX2 int8 kernels need to avoid int16 overflow "
                            "(default: on for every family; measured)")
    quant.add_argument("--float-tail", type=float, help="share of nodes from the outputs back kept in float "
                       "(default: 0.4 for BlazeFace, 0 otherwise)")
    quant.add_argument("--eval-data", type=Path, help="data folder for the accuracy budget (COCO, WIDER FACE, LFW)")
    quant.add_argument("--max-drop", type=float, help="largest accepted metric drop in points (default: 1.0 mAP, "
                       "0.3 verification accuracy, 1.0 face AP@0.5)")
    quant.add_argument("--detector", type=Path, help="face detector artifact, to find and align faces for an embedder "
                       f"(default: {FACE_DETECTOR} beside ARTIFACT, else in CACHE/artifacts)")
    quant.add_argument("--min-cosine", type=score, default=0.99, help="a file without a contract: every output's "
                       "cosine to fp32 must reach this (default 0.99)")
    add_input_flags(quant, "(a file without a contract; default: the graph's fixed size, raw 0-255 RGB, stretched)")
    quant.add_argument("--out", required=True, help="output directory")
    quant.set_defaults(func=_cmd_quantize)

    bench = sub.add_parser("bench", help="latency, throughput, memory and cold start per EP x threads x batch, each "
                           "cell in a fresh worker process, with torch-eager and OpenCV-DNN baselines")
    bench.add_argument("artifacts", nargs="+", help="edgepipe .onnx files (any precision), or any ONNX file: "
                       "without a contract it runs on seeded random inputs of its graph's shapes (no baselines)")
    bench.add_argument("--ep", default="cpu", help="comma-separated: cpu, openvino, cuda, tensorrt (default cpu)")
    bench.add_argument("--threads", type=ints, default=(1, 2), help="comma-separated intra-op threads (default 1,2)")
    bench.add_argument("--batch", type=ints, default=(1,), help="comma-separated batch sizes (default 1)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed runs after the cold one (default 5)")
    bench.add_argument("--runs", type=int, default=30, help="timed runs per cell (default 30)")
    bench.add_argument("--strict-ep", action="store_true", help="a cell whose EP is missing or cannot run every node "
                       "fails, and any failed cell is an error (exit 2); without it only every cell failing is")
    bench.add_argument("--no-baselines", action="store_true", help="skip the torch-eager and OpenCV-DNN rows")
    bench.add_argument("--peak-gflops", type=float, help="fp32 peak GFLOP/s of ONE core (default: from ISA x clock)")
    bench.add_argument("--gpu-peak-gflops", type=float, help="the GPU's peak GFLOP/s for the precision measured "
                       "(default: its data sheet's dense figure per precision, for the GPUs edgepipe knows by name)")
    bench.add_argument("--image", type=Path, help="input photo (default: the first sample photo)")
    bench.add_argument("--shape", type=_input_shape, action="append", metavar="NAME:1x3x640x640",
                       help="a contract-less file's input with dynamic dims: its whole shape (the first axis is the "
                       "batch, set by --batch where the graph leaves it dynamic); repeat per input")
    bench.add_argument("--json", type=Path, required=True, help="write the rows here")
    bench.set_defaults(func=_cmd_bench)

    report = sub.add_parser("report", help="Markdown + self-contained HTML report from bench JSON and the artifacts' "
                            "evaluation JSON")
    report.add_argument("results", nargs="+", help="bench JSON files")
    report.add_argument("--identification", action="append", metavar="JSON", help="an `eval --task "
                        "identification` report, drawn as DIR and FAR against the threshold; repeatable")
    report.add_argument("--out", required=True, help="output directory")
    report.set_defaults(func=_cmd_report)

    env = sub.add_parser("env", help="managed environments for what needs its own Python packages: EPs with their "
                         "own onnxruntime build (openvino, gpu), and face_recognition for `faces bench`")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    env_create = env_sub.add_parser("create", help="create CACHE/envs/NAME (a venv with pinned packages), or adopt "
                                    "an interpreter that has them; then say which of its providers run here")
    env_create.add_argument("name", choices=["openvino", "gpu", "face_recognition"])
    env_create.add_argument("--find-links", type=Path, metavar="DIR", help="install offline from this folder of "
                            "wheels (pip --no-index), e.g. onnxruntime-gpu's, fetched on another host")
    env_create.add_argument("--python", type=Path, metavar="PATH", help="adopt this interpreter, which already has "
                            "the onnxruntime build (a Jetson's, a GPU container image's); nothing is installed")
    env_create.add_argument("--tensorrt", action="store_true", help="gpu: also install TensorRT 10's libraries "
                            "(tensorrt-cu13-libs), which come from NVIDIA's index (pypi.nvidia.com) or --find-links")
    env_create.add_argument("--system-cuda", action="store_true", help="gpu: use the host's CUDA 13 and cuDNN 9 "
                            "(on its library path) instead of the nvidia-* pip packages")
    env_create.set_defaults(func=_cmd_env_create)

    add_adopt_command(sub)
    add_training_commands(sub)
    add_face_commands(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 on any edgepipe error)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        args.streamlit_flags = extra  # everything after `demo` belongs to streamlit
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # our one-line errors replace ffmpeg's console noise
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("torch").setLevel(logging.ERROR)  # the exporter's notes on optional torchvision ops
    # `kill` cleans up as Ctrl-C does (signals can only be handled on the main thread; elsewhere, as before)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if on_main else None
    try:
        with _max_pixels(args.max_pixels):
            return args.func(args)
    except KeyboardInterrupt as e:  # every output is written to a partial file and renamed: none is half-written
        signum = e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT
        print(f"edgepipe: {'terminated' if signum == signal.SIGTERM else 'interrupted'}; nothing half-written "
              "(finished outputs are kept)", file=sys.stderr)
        return 128 + signum
    except EdgepipeError as e:
        print(f"edgepipe: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = _EXTRA_OF.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"edgepipe: error: `edgepipe {args.command}` needs the {extra!r} extra ({e.name} is not installed): "
              f"pip install 'edgepipe[{extra}]'", file=sys.stderr)
        return 2
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _max_pixels(limit: int | None):
    """Raise (or lower) the image pixel cap for this command, its worker processes included."""
    if not limit:
        yield
        return
    from edgepipe.runtime import preprocess

    saved = preprocess.MAX_PIXELS, os.environ.get("EDGEPIPE_MAX_PIXELS")
    preprocess.MAX_PIXELS, os.environ["EDGEPIPE_MAX_PIXELS"] = limit, str(limit)
    try:
        yield
    finally:
        preprocess.MAX_PIXELS = saved[0]
        if saved[1] is None:
            os.environ.pop("EDGEPIPE_MAX_PIXELS")
        else:
            os.environ["EDGEPIPE_MAX_PIXELS"] = saved[1]


def _terminated(signum, frame):
    raise KeyboardInterrupt(signum)


# The optional packages, by the extra that installs them (pyproject.toml); the core install has none of them.
_EXTRA_OF = {**dict.fromkeys(("torch", "onnx", "onnxscript", "safetensors", "pycocotools"), "torch"), "faiss": "gallery",
             "usearch": "gallery", **dict.fromkeys(("streamlit", "pandas", "altair"), "demo"), "ray": "ray", "pyarrow": "ray"}


if __name__ == "__main__":
    sys.exit(main())
