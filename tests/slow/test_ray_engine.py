"""Batch jobs on a real local Ray (issue #17): `eval --engine ray` scores what `--engine local` scores; `run` tables
lose no image and repeat none when an actor is killed mid-run; Ctrl-C leaves nothing; `faces enroll --folder` on
Ray enrolls what the local engine enrolls. No mocks of Ray: `ray.init(num_cpus=2)` here, and the installed script
starts its own in the subprocess tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.support.servers import free_port

pytestmark = pytest.mark.slow

EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))


@pytest.fixture(scope="module")
def ray_here():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("model, data", [("nanodet_g.coco", "coco_val_mini"), ("yunet.opencv", "widerface_val_100"),
                                         ("sface.opencv", "lfw_10ids")])
def test_eval_on_ray_gives_the_local_metric(ray_here, built_with_data, shared_data, model, data):
    """The same artifacts, data and evaluator as `build --data` ran on the local engine (test_build's run)."""
    from edgepipe.engine import Engine
    from edgepipe.evaluate import evaluate

    folder = built_with_data[0]
    local = json.loads((folder / f"{model}.fp32.json").read_text())["evaluations"][data]
    detector = folder / "yunet.opencv.fp32.onnx" if model == "sface.opencv" else None
    on_ray = evaluate(folder / f"{model}.fp32.onnx", shared_data / data, detector=detector, progress=False,
                      engine=Engine("ray", actors=2))
    assert on_ray.metrics == local["metrics"]
    assert (on_ray.n_images, on_ray.n_pairs) == (local.get("n_images"), local.get("n_pairs"))
    assert list(local["metrics"].values())[0] > 0.2  # a real score, not two empty ones agreeing


def _images(shared_data: Path, folder: Path, copies: int) -> Path:
    """A list file of `copies` x the COCO mini photos (each copy its own path) plus one file that is no image."""
    (folder / "broken.jpg").write_bytes(b"no jpeg here")
    photos = sorted((shared_data / "coco_val_mini" / "images").glob("*.jpg"))
    lines = []
    for k in range(copies):
        (folder / f"copy{k}").mkdir()
        for photo in photos:
            (folder / f"copy{k}" / photo.name).symlink_to(photo)
            lines.append(f"copy{k}/{photo.name}")
    lines.insert(len(lines) // 2, "broken.jpg")
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    return folder / "images.txt"


def _table(path: Path):
    return pq.read_table(path).to_pandas()


def test_a_killed_actor_loses_no_image_and_repeats_none(artifacts, shared_data, tmp_path):
    listing = _images(shared_data, tmp_path, copies=3)
    detector = artifacts["yunet.opencv"]
    subprocess.run([EDGEPIPE, "run", str(detector), str(listing), "--out", str(tmp_path / "local.parquet")],
                   check=True, capture_output=True, timeout=300)
    pids = tmp_path / "pids"
    pids.mkdir()
    job = subprocess.Popen([EDGEPIPE, "run", str(detector), str(listing), "--out", str(tmp_path / "ray.parquet"),
                            "--engine", "ray", "--actors", "2", "--batch", "4"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=dict(os.environ, EDGEPIPE_RAY_PID_DIR=str(pids)))
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline and job.poll() is None:
        busy = [p for p in pids.glob("*.pid") if p.read_text().count("\n") >= 2]  # two batches done: mid-run
        victim = int(busy[0].stem) if busy else None
        time.sleep(0.05)
    assert victim is not None, f"no actor got to work: {job.communicate()}"
    os.kill(victim, signal.SIGKILL)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    assert len(list(pids.glob("*.pid"))) >= 3  # the killed actor was replaced
    local, on_ray = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    images = _table(on_ray / "images.parquet")
    assert images.image.is_unique and len(images) == 3 * 79  # every readable image once, none twice
    errors = [json.loads(line) for line in (on_ray / "errors.jsonl").read_text().splitlines()]
    assert [e["image"] for e in errors] == [str(tmp_path / "broken.jpg")] and "could not be decoded" in errors[0]["error"]
    key = ["image", "score", "x1", "y1"]
    a = _table(local / "detections.parquet").sort_values(key).reset_index(drop=True)
    b = _table(on_ray / "detections.parquet").sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0 and (a.image == b.image).all()
    assert np.abs(a[["x1", "y1", "x2", "y2", "score"]].to_numpy() - b[["x1", "y1", "x2", "y2", "score"]].to_numpy()).max() < 1e-4
    summary = json.loads((on_ray / "summary.json").read_text())
    assert summary["engine"] == "ray" and summary["actors"] == 2 and summary["images"] == 3 * 79
    assert f"{3 * 79} image(s)" in out and "1 unreadable" in out and "ray (2 actors)" in out


def test_ctrl_c_stops_the_job_and_leaves_nothing(artifacts, shared_data, tmp_path):
    listing = _images(shared_data, tmp_path, copies=4)
    pids = tmp_path / "pids"
    pids.mkdir()
    out = tmp_path / "ray.parquet"
    job = subprocess.Popen([EDGEPIPE, "run", str(artifacts["nanodet_g.coco"]), str(listing), "--out", str(out),
                            "--engine", "ray", "--batch", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=dict(os.environ, EDGEPIPE_RAY_PID_DIR=str(pids)))
    deadline = time.monotonic() + 120
    while not any(p.read_text() for p in pids.glob("*.pid")) and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    assert job.poll() is None, job.communicate()
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130 and "interrupted; nothing half-written" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def _head(port: int, logs: Path) -> subprocess.Popen:
    """README's `ray start --head` (in the foreground, so the test can stop it), once its port answers."""
    ray = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen([ray, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard",
                             "false", "--disable-usage-stats", "--block"], stdout=open(logs, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and head.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return head
        except OSError:
            time.sleep(0.2)
    head.kill()
    raise AssertionError(f"ray start --head did not come up: {logs.read_text()[-2000:]}")


def test_enrolling_a_folder_on_a_ray_cluster_enrolls_what_the_local_engine_does(artifacts, shared_data, tmp_path):
    """README's "Running on a cluster": a head started with `ray start --head`, joined with --ray-address by
    `faces enroll --folder` and by `eval` (SFace on LFW: 100.00%, as locally)."""
    people = tmp_path / "people"
    for person in sorted((shared_data / "lfw_10ids" / "images").iterdir())[:4]:
        shutil.copytree(person, people / person.name)
    common = ["--embedder", str(artifacts["sface.opencv"]), "--detector", str(artifacts["yunet.opencv"]),
              "--folder", str(people)]
    port = free_port()
    head = _head(port, tmp_path / "head.log")
    try:
        for engine, extra in (("local", []), ("ray", ["--ray-address", f"127.0.0.1:{port}", "--actors", "2"])):
            done = subprocess.run([EDGEPIPE, "faces", "enroll", str(tmp_path / f"{engine}.json"), *common, "--engine",
                                   engine, *extra], capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            assert f"enrolled 4 people from {len(list(people.rglob('*.jpg')))} image(s) on {engine}" in done.stdout
        scored = subprocess.run([EDGEPIPE, "eval", str(artifacts["sface.opencv"]), "--data", str(shared_data / "lfw_10ids"),
                                 "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", "--actors", "2"],
                                capture_output=True, text=True, timeout=300)
        assert scored.returncode == 0 and "accuracy 100.00%" in scored.stdout, scored.stderr
    finally:  # a graceful stop takes Ray ~30 s: it ends while the suite goes on
        head.terminate()
        threading.Thread(target=head.wait, daemon=True).start()
    from edgepipe.runtime import FaceGallery

    local, on_ray = FaceGallery.load(tmp_path / "local.json"), FaceGallery.load(tmp_path / "ray.json")
    assert local.names == on_ray.names == sorted(p.name for p in people.iterdir()) and len(local) == len(on_ray)
    for name in local.names:  # the same photos embedded the same way (rows may come in another order)
        a, b = local.embeddings(name), on_ray.embeddings(name)
        assert np.abs(np.sort(a, axis=0) - np.sort(b, axis=0)).max() < 1e-4
