"""Where per-image work runs: in this process (`local`) or on a Ray cluster (`ray`, Ray Data's actor pool).

`map_images(task, paths, engine)` yields one record per image (`edgepipe.image_tasks`), batch by batch, in no
promised order. The local engine runs the `ImageTask` it is given; the Ray engine needs the `TaskSpec` it was
opened from and sends that to `engine.actors` actors, each of which loads the artifacts once, by path, and runs
batches of `engine.batch` images through the same `ImageTask`. The artifacts travel by path, not through the
object store: a model of a few MB read once per actor from a shared or copied folder costs less than serialising
sessions, and an onnxruntime session cannot be pickled anyway; so on a cluster every node must see the artifact,
gallery and image paths (a shared file system, or the same folder copied to each node).

Ray Data retries a batch whose actor died on another actor, and only finished batches reach the driver, so a killed
actor costs time, not records: each image still comes out exactly once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from edgepipe.errors import InputError
from edgepipe.image_tasks import ImageTask, TaskSpec

__all__ = ["Engine", "map_images", "image_paths", "images_under", "ray_missing"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Engine:
    """How to run: `kind` local or ray; Ray's `address` (None: start a local Ray on this machine's cores),
    `actors` (one session each) and `batch` (images per call, which feed the artifact's batch axis)."""

    kind: str = "local"
    address: str | None = None
    actors: int = 1
    batch: int = 8
    threads: int = 1  # onnxruntime threads of each Ray actor's sessions (and the CPUs each actor asks Ray for)

    def __post_init__(self):
        if self.kind not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.kind!r}")
        if self.actors < 1 or self.batch < 1 or self.threads < 1:
            raise ValueError(f"actors, batch and threads must be >= 1, got {self.actors}, {self.batch}, {self.threads}")


def image_paths(source: str | Path) -> list[Path]:
    """The images a batch job reads: every image under a folder (recursively, sorted), or the lines of a list file
    (one path per line, relative to the list's folder; blank lines and '#' comments skipped; a path listed twice is
    run once).

    Raises:
        InputError: no such folder or file, or no images in it.
    """
    from edgepipe.runtime.atomic import read_text

    source = Path(source)
    if source.is_dir():
        return images_under(source)
    if not source.is_file():
        raise InputError(f"{source}: no such folder or list file")
    lines = [line.strip() for line in read_text(source).splitlines()]
    paths = list(dict.fromkeys(source.parent / line for line in lines if line and not line.startswith("#")))
    if not paths:
        raise InputError(f"{source}: a list file with no image paths (one per line)")
    return paths


def images_under(folder: Path) -> list[Path]:
    """Every image file under `folder`, recursively, sorted. Raises InputError when there is none."""
    from edgepipe.runtime.preprocess import IMAGE_SUFFIXES

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) under this folder")
    return paths


def ray_missing() -> str | None:
    """None when Ray Data imports, else the one-line reason."""
    import importlib.util

    # found, not imported: Ray reads its settings from the environment on import (see `_map_on_ray`)
    missing = [name for name in ("ray", "pyarrow") if importlib.util.find_spec(name) is None]
    if missing:
        return f"--engine ray needs the 'ray' extra ({', '.join(missing)} not installed): pip install 'edgepipe[ray]'"
    return None


def map_images(task: ImageTask | TaskSpec, paths: list[Path], engine: Engine = Engine(), *,
               progress: bool = True) -> Iterator[dict]:
    """Every image's record, as batches finish (order not kept; each image exactly once)."""
    paths = [str(p) for p in paths]
    if engine.kind == "local":
        runner = task.open() if isinstance(task, TaskSpec) else task
        with tqdm(total=len(paths), desc="images", unit="img", disable=None if progress else True) as bar:
            for start in range(0, len(paths), engine.batch):
                for rec in runner(paths[start:start + engine.batch]):
                    bar.update()
                    yield rec
        return
    if not isinstance(task, TaskSpec):
        raise ValueError("the Ray engine runs a TaskSpec (paths to open on each actor), not open models")
    yield from _map_on_ray(task, paths, engine, progress)


class _Actor:
    """A Ray Data actor: opens the task's models once, then runs batches of paths."""

    def __init__(self, spec: TaskSpec, pid_dir: str | None = None):
        self.task = spec.open()
        # $EDGEPIPE_RAY_PID_DIR: each actor writes PID.pid there, and a line to it per finished batch (how tests,
        # or an operator, find the actor processes and see them work)
        self.pid_file = Path(pid_dir, f"{os.getpid()}.pid") if pid_dir else None
        if self.pid_file:
            self.pid_file.write_text("")

    def __call__(self, batch: dict) -> "pyarrow.Table":  # noqa: F821
        import pyarrow as pa

        table = pa.Table.from_pylist(self.task(list(batch["image"])), schema=record_schema())
        if self.pid_file:
            with open(self.pid_file, "a") as f:
                f.write(f"{len(table)}\n")
        return table


def record_schema():
    """The Arrow schema of a record (see `edgepipe.image_tasks`): what Ray batches and the Parquet files hold."""
    import pyarrow as pa

    floats = pa.list_(pa.float32())
    return pa.schema([("image", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("error", pa.string()),
                      ("boxes", pa.list_(pa.list_(pa.float32(), 4))), ("scores", floats),
                      ("labels", pa.list_(pa.string())), ("names", pa.list_(pa.string())), ("distances", floats),
                      ("embeddings", pa.list_(floats)), ("note", pa.string())])


def _connect(address: str, options: dict) -> None:
    """Join the Ray cluster at `address` (`_map_on_ray` has put Ray in token mode first when a token is here: a
    cluster `ray start` began (Ray 2.60) asks for the token it wrote to ~/.ray/auth_token, which a driver sends only
    in that mode)."""
    import socket

    import ray

    host, _, port = address.rpartition(":")
    try:  # Ray itself waits minutes for a head that is not there
        socket.create_connection((host or address, int(port or 6379)), timeout=10).close()
    except (OSError, ValueError) as e:
        raise InputError(f"--ray-address {address}: nothing answers there ({e}); expected HOST:PORT of a running "
                         "`ray start --head`") from e
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"--ray-address {address}: cannot join that Ray cluster ({reason}); is `ray start --head` "
                         "running there, and is its ~/.ray/auth_token here?") from e


def _map_on_ray(spec: TaskSpec, paths: list[str], engine: Engine, progress: bool) -> Iterator[dict]:
    token = os.environ.get("RAY_AUTH_TOKEN") or Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")
                                                     ).expanduser().is_file()
    if engine.address and token and "RAY_AUTH_MODE" not in os.environ:  # read when ray is first imported
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray
    import ray.data

    spec = dataclasses.replace(spec, threads=engine.threads, artifact=os.path.abspath(spec.artifact),
                               detector=spec.detector and os.path.abspath(spec.detector),
                               gallery=spec.gallery and os.path.abspath(spec.gallery))
    given = {os.path.abspath(p): p for p in paths}  # records name images as the caller did
    paths = list(given)
    started_here = not ray.is_initialized()
    if started_here:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if engine.address:
            _connect(engine.address, options)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), **options)  # a Ray of its own, never a stranger's
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.verbose_stats_logs = False
        blocks = max(1, min(len(paths) // engine.batch, 4 * engine.actors * 8))
        data = ray.data.from_items([{"image": p} for p in paths], override_num_blocks=blocks)
        pid_dir = os.environ.get("EDGEPIPE_RAY_PID_DIR")
        out = data.map_batches(_Actor, fn_constructor_args=(spec, pid_dir), batch_size=engine.batch,
                               compute=ray.data.ActorPoolStrategy(size=engine.actors), num_cpus=engine.threads,
                               batch_format="numpy")
        with tqdm(total=len(paths), desc=f"images (ray, {engine.actors} actors)", unit="img",
                  disable=None if progress else True) as bar:
            for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
                for rec in batch.to_pylist():
                    bar.update()
                    yield {**rec, "image": given[rec["image"]]}
    finally:
        if started_here:
            ray.shutdown()
