"""`edgepipe run`, `edgepipe faces enroll|identify` and `edgepipe demo`: the commands that use artifacts on photos
and videos (see `edgepipe.cli`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from edgepipe.cli_args import (
    EMBEDDER,
    FACE_DETECTOR,
    artifact_dir,
    count,
    distance,
    face_detector,
    images,
    ints,
    positive_float,
    positive_int,
    score,
    shares,
)
from edgepipe.cli_engine import add_engine_flags

__all__ = ["add_face_commands"]


def enable_gallery_index() -> None:
    """Register the indexes of large galleries (faiss, usearch: the `gallery` extra); without them galleries search
    exactly."""
    try:
        import edgepipe.gallery_ann  # noqa: F401  (registers the index)
    except ImportError:
        pass


def _recognizer(args, gallery_must_exist: bool | None):
    """The detector + embedder the flags name (defaults beside each other, else CACHE/artifacts) and `--gallery`
    (None: no gallery involved)."""
    from edgepipe.runtime import FaceDetector, FaceEmbedder, FaceGallery, FaceRecognizer

    enable_gallery_index()
    embedder_path = Path(args.embedder) if args.embedder else artifact_dir(args) / EMBEDDER
    detector_path = face_detector(args, embedder_path) or artifact_dir(args) / FACE_DETECTOR
    detector, embedder = FaceDetector.from_path(detector_path), FaceEmbedder.from_path(embedder_path)
    wanted = gallery_must_exist is not None and (gallery_must_exist or Path(args.gallery).exists())
    return FaceRecognizer(detector, embedder, FaceGallery.load(args.gallery) if wanted else None)


def _cmd_faces_enroll(args) -> int:
    from edgepipe.cli_engine import engine_of, enroll_folder
    from edgepipe.errors import SpecError
    from edgepipe.runtime import FaceGallery, read_image

    if (args.folder is None) == (args.name is None) or (args.name is None) != (not args.images):
        raise SpecError("give a NAME and their IMAGES, or --folder DIR of DIR/Name/*.jpg (not both)")
    recognizer = _recognizer(args, gallery_must_exist=False)
    if args.folder is not None:
        return enroll_folder(args, recognizer)
    engine_of(args)
    if args.engine == "ray":
        raise SpecError("--engine ray enrolls a --folder of people; NAME IMAGES run here")
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


def _cmd_faces_bench(args) -> int:
    from edgepipe.face_bench import FaceBenchOptions, bench_faces
    from edgepipe.report import render_table
    from edgepipe.runtime.atomic import atomic_write, check_destination
    from edgepipe.samples import sample_images

    check_destination(args.json)
    embedder_path = Path(args.embedder) if args.embedder else artifact_dir(args) / EMBEDDER
    detector_path = face_detector(args, embedder_path) or artifact_dir(args) / FACE_DETECTOR
    peers = () if args.peers == "none" else tuple(p.strip() for p in args.peers.split(","))
    if args.images:
        sets = {Path(path).name: [Path(path)] if Path(path).is_file() else images(path) for path in args.images}
    else:
        sets = {"samples": sample_images(args.cache_dir)}
    options = FaceBenchOptions(threads=args.threads, warmup=args.warmup, runs=args.runs, peers=peers,
                               cache_dir=args.cache_dir, detector_ep=args.detector_ep, embedder_ep=args.embedder_ep)
    result = bench_faces(detector_path, embedder_path, sets, options, progress=lambda line: print(line, flush=True))
    atomic_write(args.json, json.dumps(result, indent=1).encode())
    rows = result["rows"]
    columns = ["set", "pipeline", "images", "faces", "image_ms", "image_ms_p50", "speedup"]
    print(render_table(rows, columns + (["reason"] if any(not r["ok"] for r in rows) else [])))
    machine = result["machine"]
    print(f"{args.threads} thread(s), {machine.get('cpu')} ({', '.join(machine.get('isa', []))}); speedup = the "
          f"row's ms per photo / edgepipe's; wrote {args.json}")
    return 0


def _cmd_faces_bench_gallery(args) -> int:
    import numpy as np

    from edgepipe.gallery_bench import GalleryBenchOptions, bench_gallery
    from edgepipe.report import render_table
    from edgepipe.runtime import read_image
    from edgepipe.runtime.atomic import atomic_write, check_destination

    check_destination(args.json)
    real, metric, threshold = {}, args.metric, None
    if args.real:  # LFW layout: every person with two or more photos; the first photo is enrolled
        recognizer = _recognizer(args, gallery_must_exist=None)
        metric, threshold = recognizer.embedder.head.metric, recognizer.embedder.head.match_thresh
        root = Path(args.real) / "images" if (Path(args.real) / "images").is_dir() else Path(args.real)
        for person in sorted(p for p in root.iterdir() if p.is_dir()):
            photos = images(person)
            if len(photos) >= 2:
                real[person.name] = np.stack([np.ravel(recognizer.largest_face(read_image(photo), str(photo))[1])
                                              for photo in photos])
        print(f"{sum(map(len, real.values()))} photos of {len(real)} real people from {args.real}, {metric} metric",
              flush=True)
    options = GalleryBenchOptions(sizes=args.sizes, dim=next(iter(real.values())).shape[1] if real else args.dim,
                                  queries=args.queries, metric=metric, shares=args.lists_share, efs=args.ef,
                                  real=real, threshold=threshold)
    rows = bench_gallery(options)
    atomic_write(args.json, json.dumps(rows, indent=1).encode())
    print(render_table(rows, ["size", "search", "build_s", "memory_mb", "query_ms_p50", "query_ms_p99",
                              "recall_at_1", "deeper_share", "impostor_ms_p50", "rank1_vs_truth", "queries"]))
    print(f"queries on 1 thread through FaceGallery.identify; the index built on {rows[0]['build_threads']} cores; "
          f"recall@1 against exact search; wrote {args.json}")
    return 0


def _cmd_run(args) -> int:
    from edgepipe.cli_engine import TABLE_SUFFIX, engine_of, run_tables
    from edgepipe.run import run_artifact

    detector = face_detector(args, args.artifact) if args.gallery else None
    if args.engine == "ray" or Path(args.out).suffix == TABLE_SUFFIX:
        return run_tables(args, detector)
    engine_of(args)  # refuses Ray's flags without --engine ray
    if args.embeddings:
        from edgepipe.errors import SpecError

        raise SpecError(f"--embeddings goes into tables: give --out a folder named *{TABLE_SUFFIX}")
    options = dict(max_frames=args.max_frames, duration_s=args.duration, reconnect=args.reconnect,
                   timeout_s=args.timeout)
    summary = run_artifact(args.artifact, args.input, args.out, score_thresh=args.score_thresh,
                           gallery=args.gallery, detector=detector, jsonl=args.jsonl, source_options=options,
                           max_side=args.max_side)
    latency = ""
    if summary.latency_ms:
        what = "capture to result" if summary.live else "a frame's step"
        latency = f" ({what} {summary.latency_ms[0]:.0f} ms p50, {summary.latency_ms[1]:.0f} ms p99" \
            + (f"; {summary.dropped} frames dropped, the newest won)" if summary.live else ")")
    print(f"{summary.kind}: {summary.items} {'frames' if summary.kind == 'video' else 'image(s)'}, "
          f"{summary.detections} detections, {summary.fps:.1f} per second{latency}; wrote {summary.out}")
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


def add_face_commands(sub) -> None:
    """Register `run`, `faces` and `demo` on the top-level subparsers."""
    run = sub.add_parser("run", help="annotate an image, a folder of images or a video with an artifact's results")
    run.add_argument("artifact", help="a detector (.onnx), or a face embedder with --gallery")
    run.add_argument("input", help="image, folder of images, or video: a file (.mp4 .avi .mov .mkv .webm .m4v), a "
                     "camera (/dev/videoN or N), a stream URL (rtsp://, http://), or a folder of frames with --out "
                     "X.mp4; a folder's unreadable images are skipped, the rest written, and each named (exit 2)")
    run.add_argument("--out", required=True, help="annotated image, folder, or .mp4 for a video; or a folder named "
                     "*.parquet for tables (one row per detection or face, images.parquet, errors.jsonl, "
                     "summary.json; a folder or list-file input; what --engine ray writes)")
    run.add_argument("--max-side", type=positive_int, help="a video: detect on frames shrunk to at most this many "
                     "px a side (a detector that takes any size, as YuNet; e.g. 640 for 720p at 30 frames/s); boxes stay "
                     "in frame pixels")
    run.add_argument("--max-frames", type=positive_int, help="a video: stop after this many frames (a live source "
                     "runs until it ends otherwise)")
    run.add_argument("--duration", type=positive_float, help="a video: stop after this many seconds")
    run.add_argument("--reconnect", type=count, default=0, help="a camera or stream that stalls or drops: open it "
                     "again up to N times (default 0), each time said in one line")
    run.add_argument("--timeout", type=positive_float, default=5.0, help="seconds a camera or stream may take to "
                     "open or to send a frame before it counts as stalled (default 5)")
    run.add_argument("--jsonl", type=Path, help="a video's results, one line per tracked box or face: frame, time, "
                     "track, box, score, label (and name, with --gallery)")
    run.add_argument("--embeddings", action="store_true", help="with a gallery and *.parquet: add each face's "
                     "embedding to its row")
    run.add_argument("--score-thresh", type=score, help="minimum score in [0, 1] (default: the artifact's)")
    run.add_argument("--gallery", type=Path, help="face gallery, to name people with a face embedder")
    run.add_argument("--detector", type=Path, help="face detector artifact used with --gallery (default: "
                     f"{FACE_DETECTOR} beside ARTIFACT, else in CACHE/artifacts)")
    add_engine_flags(run)
    run.set_defaults(func=_cmd_run)

    faces = sub.add_parser("faces", help="enroll and identify people; time the face path against its peers")
    faces = faces.add_subparsers(dest="faces_command", required=True)
    for name, func, text in (("enroll", _cmd_faces_enroll, "add a person's face(s) to a gallery file"),
                             ("identify", _cmd_faces_identify, "name every face in an image")):
        p = faces.add_parser(name, help=text)
        p.add_argument("gallery", help="gallery JSON file (created by enroll)")
        if name == "enroll":
            p.add_argument("name", nargs="?", help="the person's name")
            p.add_argument("images", nargs="*", help="photos of the person (the largest face in each is used)")
            p.add_argument("--folder", help="instead of NAME IMAGES: a folder of DIR/Name/*.jpg, every person "
                           "enrolled under their folder's name (any image that fails leaves the gallery unchanged)")
            add_engine_flags(p)
        else:
            p.add_argument("image", help="photo to identify faces in")
            p.add_argument("--out", help="write the annotated image here (.jpg or .png)")
            p.add_argument("--threshold", type=distance, help="match distance > 0 (default: the gallery's)")
        p.add_argument("--detector", help=f"face detector artifact (default: {FACE_DETECTOR} beside the embedder, "
                       "else in CACHE/artifacts)")
        p.add_argument("--embedder", help=f"face embedder artifact (default: CACHE/artifacts/{EMBEDDER})")
        p.set_defaults(func=func)
    bench = faces.add_parser(
        "bench", help="time detect + align + embed of every face against OpenCV (YuNet + SFace) and face_recognition",
        description="Time the whole face path (find every face, align it, embed it) on the same photos in one run: "
        "edgepipe's detector + embedder, OpenCV's own FaceDetectorYN + FaceRecognizerSF on OpenCV Zoo's original "
        "YuNet and SFace files, and face_recognition (dlib HOG + ResNet), which needs `edgepipe env create "
        "face_recognition` first (without it its row says so). Prints ms per photo (mean of each photo's median) "
        "and each pipeline's ratio to edgepipe's, and writes them with the machine to --json.")
    bench.add_argument("--detector", help=f"face detector artifact (default: {FACE_DETECTOR} beside the embedder, "
                       "else in CACHE/artifacts)")
    bench.add_argument("--embedder", help=f"face embedder artifact (default: CACHE/artifacts/{EMBEDDER})")
    bench.add_argument("--images", action="append", help="a folder of photos or one photo, timed as one set; "
                       "repeat for more sets (default: the six 1920 px sample group photos)")
    bench.add_argument("--threads", type=positive_int, default=1, help="threads for every pipeline (default 1)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed passes per photo and pipeline (default 1)")
    bench.add_argument("--runs", type=positive_int, default=3, help="timed passes per photo and pipeline (default 3)")
    bench.add_argument("--peers", default="opencv,face_recognition",
                       help="comma-separated peers to time beside edgepipe, or none (default opencv,face_recognition)")
    for part in ("detector", "embedder"):
        bench.add_argument(f"--{part}-ep", choices=["cpu", "openvino"], default="cpu",
                           help=f"onnxruntime provider for the {part} (default cpu); openvino runs edgepipe's path in "
                           "the environment `edgepipe env create openvino` makes")
    bench.add_argument("--json", required=True, help="write the rows and the machine here")
    bench.set_defaults(func=_cmd_faces_bench)
    scale = faces.add_parser(
        "bench-gallery", help="gallery search at 10^4..10^6 people: exact vs faiss's IVF-PQ index (and usearch's "
        "HNSW)",
        description="Time face identification against galleries of synthetic people (128-d unit vectors in "
        "look-alike groups; probes are enrolled people's vectors moved by noise), exact search against the IVF-PQ "
        "index large galleries use (faiss; usearch's HNSW too with --ef): build time, index memory, query p50/p99 "
        "on one thread through FaceGallery.identify (exact re-rank included), recall@1 of the index against exact "
        "search. --real adds real people's embeddings (an LFW-layout folder, through the face pipeline) to the "
        "gallery and their other photos to the probes.")
    scale.add_argument("--sizes", type=ints, default=(10_000, 100_000, 1_000_000),
                       help="comma-separated gallery sizes (default 10000,100000,1000000)")
    scale.add_argument("--queries", type=positive_int, default=1000, help="probes per size (default 1000)")
    scale.add_argument("--lists-share", type=shares, default=(1 / 16, 1 / 8, 1 / 4), metavar="S,S,...",
                       help="shares of faiss's IVF lists to scan (its nprobe / lists), each measured on one build "
                       "per size (default 0.0625,0.125,0.25; a gallery scans 1/16, and 8x that when unsure)")
    scale.add_argument("--ef", type=ints, default=(), help="also measure usearch's HNSW at these search depths "
                       "(e.g. 64,128,256; default: not measured, its build takes ~30 min at 10^6 on 2 cores)")
    scale.add_argument("--dim", type=positive_int, default=128, help="embedding size without --real (default 128)")
    scale.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine",
                       help="distance without --real (default cosine; with --real, the embedder's)")
    scale.add_argument("--real", help="an LFW-layout folder whose people join the gallery (first photo) and the "
                       "probes (the others)")
    scale.add_argument("--detector", help=f"with --real: face detector (default: {FACE_DETECTOR})")
    scale.add_argument("--embedder", help=f"with --real: face embedder (default: CACHE/artifacts/{EMBEDDER})")
    scale.add_argument("--json", required=True, help="write the rows and the machine here")
    scale.set_defaults(func=_cmd_faces_bench_gallery)
    demo = sub.add_parser("demo", help="the Streamlit demo: face recognition, object detection, model lab; extra "
                          "flags go to `streamlit run` (e.g. --server.port 8601 --server.headless true)",
                          description="Open the Streamlit demo (face recognition, object detection, model lab) over "
                          "the artifacts in CACHE/artifacts, or $EDGEPIPE_ARTIFACTS. Every flag after `demo` goes to "
                          "`streamlit run` unchanged: --server.port PORT, --server.headless true, ... (see "
                          "`streamlit run --help`); app flags follow a `--`: -- --artifacts DIR --gallery FILE. "
                          "Needs the 'demo' extra.")
    demo.set_defaults(func=_cmd_demo)
