"""The batch side of the CLI: `--engine {local,ray}` and its flags on `run`, `eval` and `faces enroll`, and the
table output of `run` (`edgepipe.batch_job`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from edgepipe.cli_args import positive_int

__all__ = ["add_engine_flags", "engine_of", "run_tables", "enroll_folder", "TABLE_SUFFIX"]

TABLE_SUFFIX = ".parquet"


def add_engine_flags(parser) -> None:
    group = parser.add_argument_group("engine", "where the images run: this process, or Ray Data actors on this "
                                      "machine or a cluster (needs the 'ray' extra)")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local (default): this process; ray: a pool of Ray Data actors, one session each")
    group.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (`ray start --head` prints it; "
                       "default: start a Ray on this machine for the job)")
    group.add_argument("--actors", type=positive_int, default=1, help="Ray actors (default 1)")
    group.add_argument("--actor-threads", type=positive_int, default=1,
                       help="onnxruntime threads (and CPUs reserved) per Ray actor (default 1)")
    group.add_argument("--batch", type=positive_int, default=8,
                       help="images per call (default 8): they share one run of the artifact per input shape")


def engine_of(args):
    from edgepipe.engine import Engine, ray_missing
    from edgepipe.errors import SpecError

    if args.engine == "ray":
        missing = ray_missing()
        if missing:
            raise SpecError(missing)
    elif args.ray_address or args.actors != 1 or args.actor_threads != 1:
        raise SpecError("--ray-address, --actors and --actor-threads belong to --engine ray")
    return Engine(args.engine, args.ray_address, args.actors, args.batch, args.actor_threads)


def _about(engine, artifact: Path, meta) -> dict:
    return {"engine": engine.kind, "actors": engine.actors if engine.kind == "ray" else None, "batch": engine.batch,
            "artifact": str(artifact), "model": meta.model_name, "precision": meta.precision.value}


def run_tables(args, detector: Path | None) -> int:
    """`edgepipe run ART FOLDER|LIST --out DIR.parquet`: one row per detection or face, written atomically."""
    from edgepipe.batch_job import write_tables
    from edgepipe.engine import image_paths, map_images
    from edgepipe.errors import InputError, SpecError
    from edgepipe.image_tasks import TaskSpec
    from edgepipe.runtime import load
    from edgepipe.runtime.atomic import check_destination
    from edgepipe.runtime.specs import Task

    out = Path(args.out)
    if out.suffix != TABLE_SUFFIX:
        raise InputError(f"{out}: --engine ray writes tables into a folder named *{TABLE_SUFFIX}; got "
                         f"{out.suffix or 'no suffix'!r} (annotated images are written by --engine local)")
    if Path(args.input).suffix.lower() in (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"):
        raise InputError(f"{args.input}: tables are made from images (a folder or a list file), not a video")
    check_destination(out, folder=True)
    engine = engine_of(args)
    paths = image_paths(args.input)
    meta = load(args.artifact).meta
    task = meta.task
    if task == Task.FACE_EMBEDDING:
        if args.gallery is None or detector is None:
            raise SpecError(f"{args.artifact} is a face embedder: pass --gallery and --detector to identify people")
        spec = TaskSpec("identify", str(args.artifact), detector=str(detector), gallery=str(args.gallery),
                        score_thresh=args.score_thresh, embeddings=args.embeddings)
    else:
        spec = TaskSpec("detect" if task == Task.DETECTION else "faces", str(args.artifact),
                        score_thresh=args.score_thresh)
    records = map_images(spec, paths, engine)
    with contextlib.closing(records):  # an interrupted job stops its Ray here too
        summary = write_tables(records, out, embeddings=args.embeddings,
                               about=_about(engine, Path(args.artifact), meta))
    print(f"{summary['images']} image(s), {summary['rows']} rows, {summary['errors']} unreadable (errors.jsonl); "
          f"{engine.kind}{f' ({engine.actors} actors)' if engine.kind == 'ray' else ''}: {summary['images_per_s']:.1f} "
          f"images/s, {summary['first_record_s']:.1f} s to the first result, then {summary['steady_images_per_s'] or 0:.1f} "
          f"images/s; wrote {out}")
    return 0


def enroll_folder(args, recognizer) -> int:
    """`faces enroll GALLERY --folder DIR`: every `DIR/Name/*.jpg` enrolled under its folder's name, the images run
    on the engine; the gallery changes once, under its lock, after every image has been embedded."""
    from edgepipe.engine import image_paths, map_images
    from edgepipe.errors import InputError
    from edgepipe.image_tasks import ImageTask, TaskSpec
    from edgepipe.runtime import FaceGallery

    engine = engine_of(args)
    folder = Path(args.folder)
    paths = [p for p in image_paths(folder) if p.parent != folder]  # images of a person sit in their folder
    if not paths:
        raise InputError(f"{folder}: expected one folder per person (DIR/Name/*.jpg); found no such images")
    if engine.kind == "local":
        task = ImageTask("largest_face", detector=recognizer.detector, embedder=recognizer.embedder)
    else:
        task = TaskSpec("largest_face", str(recognizer.embedder.model.path),
                        detector=str(recognizer.detector.model.path))
    people, errors = {}, []
    records = map_images(task, paths, engine)
    with contextlib.closing(records):
        for rec in records:
            if rec["error"]:
                errors.append(rec["error"])
            else:
                people[rec["image"]] = rec["embeddings"][0]
    if errors:
        raise InputError(f"{len(errors)} of {len(paths)} images could not be enrolled (the gallery is unchanged): "
                         + "; ".join(sorted(errors)[:5]) + ("; ..." if len(errors) > 5 else ""))
    import numpy as np

    order = sorted(people)  # the same gallery whatever order the engine finished in
    names = [Path(p).parent.name for p in order]

    def add(gallery: FaceGallery) -> None:
        gallery.enroll_many(names, [np.asarray(people[p], np.float32) for p in order])

    gallery = FaceGallery.update(args.gallery, add, lambda: FaceGallery.for_embedder(recognizer.embedder))
    print(f"enrolled {len(set(names))} people from {len(order)} image(s) on {engine.kind}; {args.gallery} now holds "
          f"{len(gallery.names)} {'person' if len(gallery.names) == 1 else 'people'}")
    return 0
