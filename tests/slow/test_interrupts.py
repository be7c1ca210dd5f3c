"""Faults as users meet them (issue #13), through the installed `edgepipe` script: Ctrl-C and `kill` end in one line
with nothing half-written; `kill -9` at random points leaves only partial files that the next run removes, and the
next run succeeds; a folder with one unreadable photo writes the others and names it."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

pytestmark = pytest.mark.slow

EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))  # the console script pip installed beside this interpreter


def _start(args: list[str], tmpdir: Path) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=str(tmpdir))
    return subprocess.Popen([EDGEPIPE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_work(process: subprocess.Popen, seconds: float) -> None:
    time.sleep(seconds)
    assert process.poll() is None, f"finished before the signal: {process.communicate()}"


def _outputs_are_whole(folder: Path) -> list[Path]:
    """Every file with its final name is complete (ONNX loads, JSON parses, video opens); returns the partials."""
    partials = []
    for path in folder.rglob("*"):
        if ".partial-" in path.name:
            partials.append(path)
        elif path.suffix == ".onnx":
            onnx.load(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
    return partials


def _edgepipe_scratch(tmpdir: Path) -> list[Path]:
    return [p for p in tmpdir.iterdir() if p.name.startswith("edgepipe-")]


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_and_kill_end_in_one_line_with_nothing_half_written(artifacts, shared_data, tmp_path, sig, code, word):
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "out" / "annotated.mp4"
    video = shared_data / "videos" / "street_bikes.mp4"
    process = _start(["run", str(artifacts["nanodet_g.coco"]), str(video), "--out", str(out)], tmp_path / "tmp")
    _wait_for_work(process, 4.0)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code and err.strip().splitlines() == [
        f"edgepipe: {word}; nothing half-written (finished outputs are kept)"], err
    assert not out.exists() and list(out.parent.iterdir()) == []


def _wait_for(process: subprocess.Popen, marker, timeout: float = 120.0) -> None:
    """Until `marker()` finds what the command writes while it works; fails if the command ends first."""
    deadline = time.monotonic() + timeout
    while not marker():
        assert process.poll() is None, f"finished before it was seen working: {process.communicate()}"
        assert time.monotonic() < deadline, "never seen working"
        time.sleep(0.01)


def test_kill_9_at_random_points_leaves_nothing_the_next_run_does_not_clean(artifacts, shared_data, tmp_path):
    """export, quantize and run each killed with SIGKILL at a seeded random moment while it works (its scratch
    folder or partial file exists, so the kill leaves one behind); then each runs to the end and cleans up."""
    rng = random.Random(13)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out"
    commands = {  # name: (arguments, what exists while it works, the longest extra wait after it appears)
        "export": (["export", "blazeface_front.mediapipe", "--out", str(out)],
                   lambda: list(tmpdir.glob("edgepipe-export-*")), 2.0),
        "quantize": (["quantize", str(artifacts["blazeface_front.mediapipe"]), "--precision", "fp16", "--out",
                      str(out)], lambda: list(tmpdir.glob("edgepipe-quant-*")), 0.2),
        "run": (["run", str(artifacts["blazeface_back.mediapipe"]), str(shared_data / "videos" / "face_carphone.mp4"),
                 "--out", str(out / "faces.mp4")], lambda: list(out.glob("faces.mp4.partial-*")), 0.2),
    }
    killed = []
    for name, (args, working, extra) in commands.items():
        process = _start(args, tmpdir)
        _wait_for(process, working)
        delay = rng.uniform(0.0, extra)
        time.sleep(delay)
        if process.poll() is None:
            process.kill()
            killed.append(f"{name}+{delay:.2f}s")
        process.communicate(timeout=60)
        if out.exists():
            _outputs_are_whole(out)  # every file under its final name is whole
        done = _start(args, tmpdir)
        stdout, stderr = done.communicate(timeout=600)
        assert done.returncode == 0, stderr
        assert not _edgepipe_scratch(tmpdir), _edgepipe_scratch(tmpdir)  # stale scratch of killed runs removed
    assert len(killed) == 3, killed  # each kill landed while its command worked
    assert _outputs_are_whole(out) == []  # the partials of every killed run are gone
    assert {p.name for p in out.iterdir()} == {
        "blazeface_front.mediapipe.fp32.onnx", "blazeface_front.mediapipe.fp32.json",
        "blazeface_front.mediapipe.fp16.onnx", "blazeface_front.mediapipe.fp16.json", "faces.mp4"}


def test_a_folder_with_one_unreadable_photo_writes_the_others_and_names_it(artifacts, group_photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in group_photos[:3]:
        shutil.copy(photo, folder / photo.name)
    bad = sorted(folder.iterdir())[1]
    bad.write_bytes(b"not a jpeg")
    done = subprocess.run([EDGEPIPE, "run", str(artifacts["blazeface_back.mediapipe"]), str(folder), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"1 of 3 images could not be read (the other 2 are in {tmp_path / 'out'})" in done.stderr
    assert bad.name in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in folder.iterdir()
                                                                          if p != bad)
