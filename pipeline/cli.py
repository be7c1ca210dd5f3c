"""The `edgepipe` command: a thin shell over the stages. Every `EdgepipeError` becomes one line on stderr
and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from edgepipe.cli_train import add_training_commands
from edgepipe.errors import EdgepipeError

__all__ = ["main"]


def _artifact_dir(args) -> Path:
    """CACHE/artifacts: where `build` writes by default and the face commands look for their models."""
    from edgepipe.sources import default_cache_dir

    return Path(args.cache_dir or default_cache_dir()) / "artifacts"


FACE_DETECTOR = "blazeface_back.mediapipe.fp32.onnx"  # aligns faces for an embedder
EMBEDDER = "dlib_resnet29.facerec.fp32.onnx"


def _face_detector(args, beside: str | Path | None) -> Path | None:
    """--detector, else the face detector beside the artifact that needs it (the folder `build`/`export --out`
    wrote both into), else the one in CACHE/artifacts; None when there is none."""
    if args.detector:
        return Path(args.detector)
    folders = ([Path(beside).parent] if beside else []) + [_artifact_dir(args)]
    return next((folder / FACE_DETECTOR for folder in folders if (folder / FACE_DETECTOR).is_file()), None)


def _cmd_zoo_list(args) -> int:
    from edgepipe.models import get_spec, list_models
    from edgepipe.report import render_table

    rows = [{"model": n, "task": s.task.value, "input": "x".join(map(str, s.input.shape_chw)),
             "source": s.weights.pin if s.weights else "-", "license": s.license, "published": s.published}
            for n, s in ((n, get_spec(n)) for n in list_models(args.pattern))]
    print(render_table(rows, ["model", "task", "input", "source", "license", "published"]))
    return 0


def _cmd_export(args) -> int:
    from edgepipe.export import export_onnx

    artifact = export_onnx(args.model, Path(args.out), opset=args.opset, cache_dir=args.cache_dir,
                           weights=args.weights, images=_images(args.images), nms_in_graph=args.nms_in_graph)
    parity = artifact.figures["parity"]
    print(f"wrote {artifact.onnx_path} ({artifact.figures['size_mb']} MB); torch vs onnxruntime max abs diff "
          f"{parity['gate_max_abs_diff']:.3g}; all figures in {artifact.json_path}")
    return 0


def _cmd_build(args) -> int:
    from edgepipe.build import build_models
    from edgepipe.report import render_table

    out = Path(args.out) if args.out else _artifact_dir(args)
    rows = [row.to_dict() for row in build_models(args.models, out, data_dirs=tuple(Path(d) for d in args.data),
                                                  cache_dir=args.cache_dir, calib_dir=args.calib,
                                                  bench=not args.no_bench, weights=args.weights)]
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
    from edgepipe.runtime.atomic import atomic_write

    report = evaluate(args.artifact, args.data, detector=_face_detector(args, args.artifact),
                      interpolation=args.interpolation, reference=args.reference)
    if args.json:
        atomic_write(args.json, report.to_json().encode())
    print(f"{report.task.value} of {report.model} ({report.precision}) on {args.data}: "
          + ", ".join(_metric_text(k, v) for k, v in report.metrics.items() if v is not None))
    return 0


def _metric_text(name: str, value: float) -> str:
    """A metric for people: fractions in percent (the points the README and `quantize` speak in)."""
    return f"{name} {value:.4g}" if name in _NOT_FRACTIONS else f"{name} {100 * value:.2f}%"


_NOT_FRACTIONS = {"threshold"}  # the verification threshold is a distance


def _recognizer(args, gallery_must_exist: bool):
    from edgepipe.runtime import FaceDetector, FaceEmbedder, FaceGallery, FaceRecognizer

    embedder_path = Path(args.embedder) if args.embedder else _artifact_dir(args) / EMBEDDER
    detector_path = _face_detector(args, embedder_path) or _artifact_dir(args) / FACE_DETECTOR
    detector, embedder = FaceDetector.from_path(detector_path), FaceEmbedder.from_path(embedder_path)
    gallery = FaceGallery.load(args.gallery) if gallery_must_exist or Path(args.gallery).exists() else None
    return FaceRecognizer(detector, embedder, gallery)


def _cmd_faces_enroll(args) -> int:
    from edgepipe.runtime import FaceGallery, read_image

    recognizer = _recognizer(args, gallery_must_exist=False)
    # Every image is read and embedded before the gallery changes; the change itself is a locked read-modify-write,
    # so enrollments running at the same time into one gallery all stay.
    embeddings = [recognizer.largest_face(read_image(path), source=str(path))[1] for path in args.images]

    def add(gallery: FaceGallery) -> None:
        for embedding in embeddings:
            gallery.enroll(args.name, embedding)

    gallery = FaceGallery.update(args.gallery, add, lambda: FaceGallery.for_embedder(recognizer.embedder))
    print(f"enrolled {args.name!r} from {len(args.images)} image(s); {args.gallery} now holds "
          f"{len(gallery.names)} {'person' if len(gallery.names) == 1 else 'people'}")
    return 0


def _cmd_faces_identify(args) -> int:
    from edgepipe.runtime import InputError, read_image
    from edgepipe.runtime.atomic import atomic_write
    from edgepipe.runtime.draw import check_image_path, draw_identities, encode_image

    if args.out:
        check_image_path(Path(args.out))
    recognizer = _recognizer(args, gallery_must_exist=True)
    image = read_image(args.image)
    results = recognizer.identify(image, args.threshold)
    if not results:
        raise InputError(f"no face found in {args.image}")
    annotated, labels = draw_identities(image, results)
    for (face, _), label in zip(results, labels):
        print(f"{label}  box={[round(float(v)) for v in face.box_xyxy]}  score={face.score:.2f}")
    if args.out:
        atomic_write(args.out, encode_image(annotated, Path(args.out).suffix or ".jpg"))
    return 0


def _cmd_quantize(args) -> int:
    from edgepipe.quantize import CalibMethod, QuantizeOptions, quantize

    options = QuantizeOptions(calib_dir=args.calib, calib_size=args.calib_size, eval_data=args.eval_data,
                              method=CalibMethod(args.method) if args.method else None, per_channel=args.per_channel,
                              reduce_range=args.reduce_range, float_tail=args.float_tail, max_drop=args.max_drop,
                              detector=_face_detector(args, args.artifact))
    artifact = quantize(Path(args.artifact), args.precision, Path(args.out), options)
    figures, speed, accuracy = artifact.figures, artifact.figures.get("speed", {}), artifact.figures.get("accuracy")
    print(f"wrote {artifact.onnx_path} ({figures['size_mb']} MB, {figures['size_vs_fp32']:.2f} of fp32); "
          f"{speed.get('fp32_ms_p50')} -> {speed.get('ms_p50')} ms ({speed.get('speedup')}x) at {speed.get('threads')} "
          "threads" + (f"; {accuracy['metric']} {100 * accuracy['fp32']:.2f}% -> {100 * accuracy['quantized']:.2f}% "
                       f"(drop {accuracy['drop_points']:.2f} points)" if accuracy else ""))
    if figures.get("warning"):
        print(f"warning: {figures['warning']}")
    return 0


def _score(text: str) -> float:
    """A score threshold: a finite number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"expected a score in [0, 1], got {text!r}")
    return value


def _distance(text: str) -> float:
    """A match threshold: a finite distance > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0.0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite distance > 0, got {text!r}")
    return value


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _cmd_bench(args) -> int:
    from edgepipe.benchmark import BenchOptions, benchmark
    from edgepipe.report import render_table
    from edgepipe.runtime.atomic import atomic_write

    options = BenchOptions(eps=tuple(args.ep.split(",")), threads=args.threads, batch=args.batch, warmup=args.warmup,
                           runs=args.runs, strict_ep=args.strict_ep, baselines=not args.no_baselines,
                           peak_gflops_per_core=args.peak_gflops, cache_dir=args.cache_dir, image=args.image)
    rows = [r.to_dict() for r in benchmark([Path(a) for a in args.artifacts], options)]
    atomic_write(args.json, json.dumps(rows, indent=1).encode())
    print(render_table(rows, ["model", "precision", "ep", "threads", "batch", "status", "latency_ms_p50",
                              "latency_ms_p99", "throughput_ips", "peak_rss_mb", "fallback", "peak_share"]))
    failed = [r for r in rows if args.strict_ep and r["status"] != "ok" and r["ep"] in options.eps]
    return 2 if failed else 0


def _cmd_report(args) -> int:
    from edgepipe.pareto import accuracy_points
    from edgepipe.report import render_report

    rows = [row for path in args.results for row in _read_json(Path(path))]
    evals = [_read_json(p) for p in sorted({Path(r["artifact"]).with_suffix(".json") for r in rows if r.get("artifact")})
             if p.is_file()]
    md, html = render_report(rows, accuracy_points(rows, evals), Path(args.out))
    print(f"wrote {md} and {html}")
    return 0


def _cmd_env_create(args) -> int:
    from edgepipe.envs import create_env, probe_env

    path = create_env(args.name, args.cache_dir)
    print(f"{args.name} environment at {path}: providers {probe_env(args.name, args.cache_dir).get('providers')}")
    return 0


def _cmd_demo(args) -> int:
    """Hand over to Streamlit; flags after `demo` go to `streamlit run` unchanged."""
    import importlib.util
    import subprocess

    from edgepipe import apps

    if importlib.util.find_spec("streamlit") is None:  # say so here, not in a traceback from the subprocess
        raise ModuleNotFoundError("No module named 'streamlit'", name="streamlit")
    app = Path(apps.__file__).with_name("Home.py")  # installed with the package, so a wheel install has it too
    env = dict(os.environ, **({"EDGEPIPE_CACHE": str(args.cache_dir)} if args.cache_dir else {}))
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")  # no telemetry from a local demo
    env.setdefault("STREAMLIT_SERVER_MAX_UPLOAD_SIZE", "25")  # MB: the uploader shows the limit the pages enforce
    env.setdefault("STREAMLIT_CLIENT_TOOLBAR_MODE", "minimal")  # no "Deploy" button or developer menu in a demo
    # The demo holds a face gallery: it listens on this machine only, unless --server.address says otherwise (a
    # flag beats the environment in Streamlit), and so never looks up an external address to print.
    env.setdefault("STREAMLIT_SERVER_ADDRESS", "127.0.0.1")
    return subprocess.call([sys.executable, "-m", "streamlit", "run", str(app), *args.streamlit_flags], env=env)


def _read_json(path: Path):
    from edgepipe.runtime import InputError

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e})") from e


def _cmd_run(args) -> int:
    from edgepipe.run import run_artifact

    detector = _face_detector(args, args.artifact) if args.gallery else None
    summary = run_artifact(args.artifact, args.input, args.out, score_thresh=args.score_thresh,
                           gallery=args.gallery, detector=detector)
    print(f"{summary.kind}: {summary.items} {'frames' if summary.kind == 'video' else 'image(s)'}, "
          f"{summary.detections} detections, {summary.fps:.1f} per second; wrote {summary.out}")
    return 0


def _images(folder: str | None) -> list[Path] | None:
    if folder is None:
        return None
    from edgepipe.runtime import InputError
    from edgepipe.runtime.preprocess import IMAGE_SUFFIXES

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgepipe", description="PyTorch vision models to edge devices through "
                                     "ONNX, with measured parity, accuracy and speed.")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="weights, samples and default artifacts (default: $EDGEPIPE_CACHE or ~/.cache/edgepipe)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
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
    ev.set_defaults(func=_cmd_eval)

    quant = sub.add_parser("quantize", help="fp16 / int8 / int8-dynamic copy of an fp32 artifact, with its accuracy "
                           "cost (within a budget) and speed measured")
    quant.add_argument("artifact", help="an fp32 edgepipe .onnx")
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
    quant.add_argument("--out", required=True, help="output directory")
    quant.set_defaults(func=_cmd_quantize)

    bench = sub.add_parser("bench", help="latency, throughput, memory and cold start per EP x threads x batch, each "
                           "cell in a fresh worker process, with torch-eager and OpenCV-DNN baselines")
    bench.add_argument("artifacts", nargs="+", help="edgepipe .onnx files (any precision)")
    bench.add_argument("--ep", default="cpu", help="comma-separated: cpu, openvino, cuda, tensorrt (default cpu)")
    bench.add_argument("--threads", type=_ints, default=(1, 2), help="comma-separated intra-op threads (default 1,2)")
    bench.add_argument("--batch", type=_ints, default=(1,), help="comma-separated batch sizes (default 1)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed runs after the cold one (default 5)")
    bench.add_argument("--runs", type=int, default=30, help="timed runs per cell (default 30)")
    bench.add_argument("--strict-ep", action="store_true", help="a cell whose EP cannot run every node fails (exit 2)")
    bench.add_argument("--no-baselines", action="store_true", help="skip the torch-eager and OpenCV-DNN rows")
    bench.add_argument("--peak-gflops", type=float, help="fp32 peak GFLOP/s of ONE core (default: from ISA x clock)")
    bench.add_argument("--image", type=Path, help="input photo (default: the first sample photo)")
    bench.add_argument("--json", type=Path, required=True, help="write the rows here")
    bench.set_defaults(func=_cmd_bench)

    report = sub.add_parser("report", help="Markdown + self-contained HTML report from bench JSON and the artifacts' "
                            "evaluation JSON")
    report.add_argument("results", nargs="+", help="bench JSON files")
    report.add_argument("--out", required=True, help="output directory")
    report.set_defaults(func=_cmd_report)

    env = sub.add_parser("env", help="managed runtime environments for EPs that need their own onnxruntime build")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    env_create = env_sub.add_parser("create", help="create CACHE/envs/NAME")
    env_create.add_argument("name", choices=["openvino", "gpu"])
    env_create.set_defaults(func=_cmd_env_create)

    demo = sub.add_parser("demo", help="the Streamlit demo: face recognition, object detection, model lab; extra "
                          "flags go to `streamlit run` (e.g. --server.port 8601 --server.headless true)",
                          description="Open the Streamlit demo (face recognition, object detection, model lab) over "
                          "the artifacts in CACHE/artifacts, or $EDGEPIPE_ARTIFACTS. Every flag after `demo` goes to "
                          "`streamlit run` unchanged: --server.port PORT, --server.headless true, ... (see "
                          "`streamlit run --help`); app flags follow a `--`: -- --artifacts DIR --gallery FILE. "
                          "Needs the 'demo' extra.")
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser("run", help="annotate an image, a folder of images or a video with an artifact's results")
    run.add_argument("artifact", help="a detector (.onnx), or a face embedder with --gallery")
    run.add_argument("input", help="image, folder of images, or video (.mp4 .avi .mov .mkv .webm .m4v)")
    run.add_argument("--out", required=True, help="annotated image, folder, or .mp4 for a video")
    run.add_argument("--score-thresh", type=_score, help="minimum score in [0, 1] (default: the artifact's)")
    run.add_argument("--gallery", type=Path, help="face gallery, to name people with a face embedder")
    run.add_argument("--detector", type=Path, help="face detector artifact used with --gallery (default: "
                     f"{FACE_DETECTOR} beside ARTIFACT, else in CACHE/artifacts)")
    run.set_defaults(func=_cmd_run)

    add_training_commands(sub)

    faces = sub.add_parser("faces", help="enroll and identify people").add_subparsers(dest="faces_command", required=True)
    for name, func, text in (("enroll", _cmd_faces_enroll, "add a person's face(s) to a gallery file"),
                             ("identify", _cmd_faces_identify, "name every face in an image")):
        p = faces.add_parser(name, help=text)
        p.add_argument("gallery", help="gallery JSON file (created by enroll)")
        if name == "enroll":
            p.add_argument("name", help="the person's name")
            p.add_argument("images", nargs="+", help="photos of the person (the largest face in each is used)")
        else:
            p.add_argument("image", help="photo to identify faces in")
            p.add_argument("--out", help="write the annotated image here (.jpg or .png)")
            p.add_argument("--threshold", type=_distance, help="match distance > 0 (default: the gallery's)")
        p.add_argument("--detector", help=f"face detector artifact (default: {FACE_DETECTOR} beside the embedder, "
                       "else in CACHE/artifacts)")
        p.add_argument("--embedder", help=f"face embedder artifact (default: CACHE/artifacts/{EMBEDDER})")
        p.set_defaults(func=func)
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
    try:
        return args.func(args)
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


# The optional packages, by the extra that installs them (pyproject.toml); the core install has none of them.
_EXTRA_OF = {**dict.fromkeys(("torch", "onnx", "onnxscript", "safetensors", "pycocotools"), "torch"),
             **dict.fromkeys(("streamlit", "pandas", "altair"), "demo")}


if __name__ == "__main__":
    sys.exit(main())
