"""Every command README.md shows, run the way a user runs it: the installed `edgepipe` console script in a fresh
process, from a folder outside the repository, on small inputs. Each one must exit 0, write what it says, and
print no traceback or warning the user cannot act on.

`test_readme_shows_no_command_left_unrun` keeps this file in step with the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepipe.runtime import load
from tests.support.servers import free_port, stop, wait_healthy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EDGEPIPE = Path(sys.executable).with_name("edgepipe")  # the console script pip installed beside this interpreter
RUN_HERE = {  # every command README.md shows -> the test below that runs it
    "zoo list": "test_zoo_list", "build": "test_main_job_on_its_defaults", "export": "test_export",
    "eval": "test_eval_finds_the_detector_beside_the_embedder", "quantize": "test_quantize_fp16",
    "bench": "test_bench_then_report", "report": "test_bench_then_report", "env create": "test_env_create",
    "train": "test_fine_tune_block", "split": "test_fine_tune_block", "run": "test_run_an_image",
    "demo": "test_demo_serves_the_app", "faces enroll": "test_faces_and_run_with_a_gallery",
    "faces identify": "test_faces_and_run_with_a_gallery", "faces bench": "test_faces_bench_against_its_peers",
    "adopt": "test_adopt_bring_your_own_block", "faces bench-gallery": "test_gallery_bench_with_real_people",
}
NOISE = ("Traceback", "torchvision", "FutureWarning", "DeprecationWarning")


def edgepipe(*args, cwd: Path, cache: Path, timeout: float = 900, **env) -> subprocess.CompletedProcess:
    """Run `edgepipe ARGS` with EDGEPIPE_CACHE=cache; asserts exit 0 and a clean stderr."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update(EDGEPIPE_CACHE=str(cache), **env)
    result = subprocess.run([str(EDGEPIPE), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=environment)
    command = " ".join(map(str, args))
    assert result.returncode == 0, f"edgepipe {command} exited {result.returncode}:\n{result.stderr[-3000:]}"
    noise = [word for word in NOISE if word in result.stderr]
    assert not noise, f"edgepipe {args[0]} printed {noise} on stderr:\n{result.stderr[-3000:]}"
    return result


def _readme_commands() -> set[str]:
    """`edgepipe SUB [SUBSUB]` for every command README.md shows in code (its blocks, its CLI table)."""
    readme = (REPO / "README.md").read_text()
    code = "\n".join(re.findall(r"```.*?```|`[^`\n]+`", readme, re.S))
    found = set()
    for match in re.finditer(r"(?:^|[\s/`])edgepipe ([a-z]+)(?: ([a-z]+))?", code, re.M):
        sub, subsub = match.groups()
        if sub not in {"zoo", "env", "faces"}:
            found.add(sub)
        elif subsub:  # `edgepipe faces` alone names the group, not a command
            found.add(f"{sub} {subsub}")
    return found


def _cli_commands() -> list[str]:
    from edgepipe.cli import _parser

    commands = []
    for action in _parser()._subparsers._group_actions:
        for name, sub in action.choices.items():
            inner = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
            commands += [f"{name} {n}" for n in inner[0].choices] if inner else [name]
    return commands


@pytest.fixture(scope="module")
def cache(newcomer_cache) -> Path:
    return newcomer_cache


@pytest.fixture(scope="module")
def art(artifacts, tmp_path_factory) -> Path:
    """A folder holding every zoo model's fp32 artifact and its JSON, as `build --out` leaves it."""
    folder = tmp_path_factory.mktemp("art")
    for onnx_path in artifacts.values():
        for path in (onnx_path, onnx_path.with_suffix(".json")):
            shutil.copy(path, folder / path.name)
    return folder


def test_readme_shows_no_command_left_unrun():
    shown = _readme_commands()
    assert shown <= set(RUN_HERE), f"README shows {sorted(shown - set(RUN_HERE))}, which no test here runs"
    assert set(_cli_commands()) == set(RUN_HERE), "a CLI command is missing from RUN_HERE (or gone from the CLI)"
    names = {name for name, value in globals().items() if name.startswith("test_")}
    assert set(RUN_HERE.values()) <= names


def test_help_of_every_command(tmp_path, cache):
    assert "export" in edgepipe("--help", cwd=tmp_path, cache=cache).stdout
    for command in _cli_commands():
        out = edgepipe(*command.split(), "--help", cwd=tmp_path, cache=cache).stdout
        assert out.startswith(f"usage: edgepipe {command}"), out[:200]
    assert "--server.port" in edgepipe("demo", "--help", cwd=tmp_path, cache=cache).stdout


def test_zoo_list(tmp_path, cache):
    from edgepipe.models import list_models

    out = edgepipe("zoo", "list", cwd=tmp_path, cache=cache).stdout
    assert all(name in out for name in list_models())
    assert "blazeface_front" in edgepipe("zoo", "list", "blazeface*", cwd=tmp_path, cache=cache).stdout


def test_main_job_on_its_defaults(main_job, cache):
    """README's first command: `edgepipe build` with nothing else, writing to CACHE/artifacts (run once for the
    session by conftest's `main_job`, whose artifacts every slow test uses)."""
    from edgepipe.models import list_models

    assert main_job.returncode == 0, main_job.stderr[-3000:]
    noise = [word for word in NOISE if word in main_job.stderr]
    assert not noise, f"edgepipe build printed {noise} on stderr:\n{main_job.stderr[-3000:]}"
    out, folder = main_job.stdout, cache / "artifacts"
    for name in list_models():
        assert name in out and (folder / f"{name}.fp32.onnx").is_file() and (folder / f"{name}.fp32.json").is_file()
    assert "no accuracy figures: add --data DIR" in out and "metric" not in out.splitlines()[0]
    report = (folder / "report" / "report.md").read_text()
    assert report.count("No accuracy figures") == 1, "the report repeats its empty accuracy section"
    rows = json.loads((folder / "report" / "bench.json").read_text())  # the benchmark build ends with
    assert {r["ep"] for r in rows} >= {"cpu", "torch", "opencv-dnn"} and all(r["status"] == "ok" for r in rows)
    html = (folder / "report" / "report.html").read_text()
    assert "<svg" in html and "nanodet_g.coco" in html


def test_export(tmp_path, cache):
    out = edgepipe("export", "blazeface_front.mediapipe", "--out", tmp_path / "d", cwd=tmp_path, cache=cache).stdout
    onnx_path = tmp_path / "d" / "blazeface_front.mediapipe.fp32.onnx"
    assert f"wrote {onnx_path}" in out and onnx_path.is_file()
    assert json.loads(onnx_path.with_suffix(".json").read_text())["parity"]["gate_max_abs_diff"] <= 1e-4


def test_eval_finds_the_detector_beside_the_embedder(art, shared_data, tmp_path):
    """The face detector sits beside the embedder (as `build --out` leaves them), not in the (empty) cache."""
    empty_cache = tmp_path / "cache"
    out = edgepipe("eval", art / "sface.opencv.fp32.onnx", "--data", shared_data / "lfw_10ids", "--json",
                   tmp_path / "lfw.json", cwd=tmp_path, cache=empty_cache).stdout
    report = json.loads((tmp_path / "lfw.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.995 and report["details"]["detector"] == "yunet.opencv"
    assert re.search(r"accuracy (99\.\d\d|100\.00)%", out), out  # people read percent, as README and quantize print


def test_quantize_fp16(art, tmp_path, cache):
    """The command that crashed in issue #19 (`onnxruntime.transformers` shadowed our `models`)."""
    out = edgepipe("quantize", art / "nanodet_g.coco.fp32.onnx", "--precision", "fp16", "--out", tmp_path / "q16",
                   cwd=tmp_path, cache=cache).stdout
    onnx_path = tmp_path / "q16" / "nanodet_g.coco.fp16.onnx"
    assert f"wrote {onnx_path}" in out and onnx_path.is_file()
    assert json.loads(onnx_path.with_suffix(".json").read_text())["precision"] == "fp16"


def test_bench_then_report(art, shared_data, tmp_path, cache):
    """bench, then report with an open-set identification curve (`eval --task identification` on lfw_10ids)."""
    model = art / "blazeface_front.mediapipe.fp32.onnx"
    out = edgepipe("bench", model, "--threads", "1", "--warmup", 1, "--runs", 3, "--no-baselines", "--json",
                   tmp_path / "bench.json", cwd=tmp_path, cache=cache).stdout
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["latency_ms_p50"] > 0 and "blazeface_front" in out
    out = edgepipe("eval", art / "sface.opencv.fp32.onnx", "--data", shared_data / "lfw_10ids", "--task",
                   "identification", "--json", tmp_path / "id.json", cwd=tmp_path, cache=cache).stdout
    found = json.loads((tmp_path / "id.json").read_text())
    assert found["details"]["impostors"] == ["George_W_Bush", "Vladimir_Putin"]  # every 5th person, never enrolled
    assert found["details"]["genuine_probes"] == 72 and found["details"]["impostor_probes"] == 20
    assert found["metrics"]["rank1"] >= 0.95 and found["metrics"]["far"] <= 0.1, found["metrics"]
    curve = found["details"]["curve"]
    assert curve[0]["far"] == 0 and curve[-1]["far"] == 1 and curve[-1]["dir"] == found["metrics"]["rank1"]
    assert "rank1" in out
    edgepipe("report", tmp_path / "bench.json", "--identification", tmp_path / "id.json", "--out",
             tmp_path / "report", cwd=tmp_path, cache=cache)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "blazeface_front.mediapipe" in md and "Identification: sface.opencv" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("<svg") >= 2 and "FAR (impostors accepted)" in html


def test_env_create(art, shared_data, tmp_path, cache):
    """The openvino environment, then the face path with its embedder on OpenVINO (run in that environment)."""
    out = edgepipe("env", "create", "openvino", cwd=tmp_path, cache=cache).stdout
    assert "OpenVINOExecutionProvider" in out and (cache / "envs" / "openvino" / "bin" / "python").is_file()
    photo = shared_data / "lfw_10ids" / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    out = edgepipe("faces", "bench", "--embedder", art / "sface.opencv.fp32.onnx", "--embedder-ep", "openvino",
                   "--images", photo, "--peers", "opencv", "--warmup", 0, "--runs", 1, "--json", tmp_path / "ov.json",
                   cwd=tmp_path, cache=cache).stdout
    ours, opencv = json.loads((tmp_path / "ov.json").read_text())["rows"]
    assert ours["pipeline"] == "edgepipe yunet.opencv fp32 (cpu) + sface.opencv fp32 (openvino)", out
    assert ours["ok"] and ours["faces"] == opencv["faces"] >= 1 and ours["image_ms"] > 0


def test_run_an_image(art, group_photos, tmp_path, cache):
    out = edgepipe("run", art / "nanodet_g.coco.fp32.onnx", group_photos[0], "--out", tmp_path / "boxes.jpg",
                   cwd=tmp_path, cache=cache).stdout
    detections = int(re.search(r"(\d+) detections", out).group(1))
    assert detections > 0 and (tmp_path / "boxes.jpg").stat().st_size > 0


def test_faces_and_run_with_a_gallery(art, group_photos, tmp_path):
    """enroll and identify with --embedder only (the detector is found beside it), then `run --gallery`."""
    empty_cache, gallery = tmp_path / "cache", tmp_path / "gallery.json"
    embedder = art / "sface.opencv.fp32.onnx"  # the default pair's embedder; its detector, yunet, sits beside it
    edgepipe("faces", "enroll", gallery, "someone", group_photos[0], "--embedder", embedder, cwd=tmp_path,
             cache=empty_cache)
    assert json.loads(gallery.read_text())
    out = edgepipe("faces", "identify", gallery, group_photos[0], "--embedder", embedder, "--out",
                   tmp_path / "named.jpg", cwd=tmp_path, cache=empty_cache).stdout
    assert "someone" in out and (tmp_path / "named.jpg").is_file()
    out = edgepipe("run", embedder, group_photos[0], "--gallery", gallery, "--out", tmp_path / "run.jpg",
                   cwd=tmp_path, cache=empty_cache).stdout
    assert "image(s)" in out and (tmp_path / "run.jpg").is_file()


def test_faces_bench_against_its_peers(art, shared_data, tmp_path, cache):
    """README's speed comparison: the face_recognition environment, then `faces bench` on three LFW photos and one
    group photo (one timed pass each: this checks the command, the figures come from a full run)."""
    out = edgepipe("env", "create", "face_recognition", cwd=tmp_path, cache=cache).stdout
    assert "dlib 20.0.1" in out and "face_recognition 1.3.0" in out, out
    lfw = tmp_path / "lfw"
    lfw.mkdir()
    for person in ("Tony_Blair", "Colin_Powell", "Hugo_Chavez"):
        shutil.copy(shared_data / "lfw_10ids" / "images" / person / f"{person}_0001.jpg", lfw)
    group = shared_data / "group_photos" / "group5.jpg"
    out = edgepipe("faces", "bench", "--embedder", art / "sface.opencv.fp32.onnx", "--images", lfw, "--images", group,
                   "--warmup", 0, "--runs", 1, "--json", tmp_path / "faces.json", cwd=tmp_path, cache=cache).stdout
    result = json.loads((tmp_path / "faces.json").read_text())
    rows = result["rows"]
    assert [(r["set"], r["pipeline"].split()[0]) for r in rows] == [
        (name, pipeline) for name in ("lfw", "group5.jpg") for pipeline in ("edgepipe", "opencv", "face_recognition")]
    assert all(r["ok"] and r["image_ms"] > 0 and r["reason"] == "" for r in rows), rows
    for ours, opencv, dlib in (rows[:3], rows[3:]):
        assert ours["pipeline"] == "edgepipe yunet.opencv fp32 + sface.opencv fp32" and ours["speedup"] == 1.0
        assert opencv["faces"] == ours["faces"] >= ours["images"]  # the same YuNet at the same threshold
        assert dlib["faces"] >= 1 and dlib["speedup"] == round(dlib["image_ms"] / ours["image_ms"], 2)
    assert result["threads"] == 1 and result["machine"]["cpu"] and "face_recognition 1.3.0" in out


def test_gallery_bench_with_real_people(art, shared_data, tmp_path, cache):
    """README's gallery benchmark, small: 3,000 synthetic people plus LFW's ten through the face pipeline."""
    out = edgepipe("faces", "bench-gallery", "--sizes", 3000, "--queries", 100, "--ef", "16,64", "--real",
                   shared_data / "lfw_10ids", "--embedder", art / "sface.opencv.fp32.onnx", "--json", "g.json",
                   cwd=tmp_path, cache=cache).stdout
    assert "100 photos of 10 real people" in out and "cosine metric" in out, out
    rows = json.loads((tmp_path / "g.json").read_text())
    assert [r["search"] for r in rows] == ["exact", "faiss-ivf 6.25% lists", "faiss-ivf 12.5% lists",
                                           "faiss-ivf 25% lists", "usearch ef16", "usearch ef64"]
    exact, quarter, deep = rows[0], rows[3], rows[5]
    assert exact["people"] == 3010 and exact["queries"] == 190 and exact["real_probes"] == 90
    # the index starts at the 3,000 synthetic people (3000 // 39 lists), the 10 real ones are added to it
    assert quarter["index"]["factory"] == "IVF76,PQ32x4fs" and quarter["index"]["nprobe"] == 19
    assert exact["recall_at_1"] == 1.0 and quarter["recall_at_1"] >= 0.95 and deep["recall_at_1"] >= 0.95
    assert exact["rank1_vs_truth"] >= 0.9  # real photos of enrolled people find them among 3,010
    assert all(r["query_ms_p50"] > 0 and r["query_threads"] == 1 for r in rows)


def test_adopt_bring_your_own_block(tmp_path, cache):
    """README's bring-your-own block: OpenCV Zoo's two files from the cache, adopted, then timed beside OpenCV."""
    from edgepipe.models.zoo.sface import SFACE_2021DEC
    from edgepipe.models.zoo.yunet import YUNET_2023MAR
    from edgepipe.sources import fetch_file

    for source in (YUNET_2023MAR, SFACE_2021DEC):  # what `edgepipe build` leaves in the cache
        fetch_file(source, cache)
    block = re.search(r"```bash\n(F=~/.cache/edgepipe/files/.+?)```", (REPO / "README.md").read_text(), re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    models = lines[0].split("=", 1)[1].replace("~/.cache/edgepipe", str(cache))
    for line in lines[1:]:
        args = line.replace("$F", models).split()[1:] + (["--runs", "1", "--warmup", "0"] if "bench" in line else [])
        out = edgepipe(*args, cwd=tmp_path, cache=cache).stdout
        assert ("wrote" in out) if "adopt" in line else ("opencv FaceDetectorYN" in out)
    rows = json.loads((tmp_path / "adopted.json").read_text())["rows"]
    assert [r["pipeline"] for r in rows][0] == "edgepipe face_detection_yunet_2023mar.adopted fp32 + " \
                                              "face_recognition_sface_2021dec.adopted fp32"
    assert rows[0]["faces"] == rows[1]["faces"] > 0


def test_readme_export_module_snippet(art, tmp_path, cache):
    """README's own-module example, run as written in a fresh interpreter: it writes an artifact whose parity was
    measured against the module."""
    snippet = re.search(r"```python\n(import torch\n.+?)```", (REPO / "README.md").read_text(), re.S).group(1)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"EDGEPIPE_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                            env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    artifact = tmp_path / "mine" / "tiny_embedder.example.fp32.onnx"
    figures = json.loads(artifact.with_suffix(".json").read_text())
    assert figures["parity"]["gate_max_abs_diff"] <= 1e-4 and figures["parity"]["chips_from"] == "yunet.opencv"
    assert f"{artifact.relative_to(tmp_path)} max abs diff vs torch" in result.stdout
    model = load(artifact)
    assert model.meta.head.dim == 64 and model.run(np.zeros((3, 3, 112, 112), np.float32))[0].shape == (3, 64)


def test_fine_tune_block(art, shared_data, tmp_path, cache):
    """README's fine-tuning block, one epoch instead of sixty."""
    edgepipe("split", shared_data / "widerface_val_100", "--out", "faces", cwd=tmp_path, cache=cache)
    assert (tmp_path / "faces" / "train" / "gt.txt").is_file() and (tmp_path / "faces" / "val" / "gt.txt").is_file()
    edgepipe("train", "nanodet_g.coco", "--data", "faces/train", "--val", "faces/val", "--epochs", 1, "--out",
             "runs/faces", cwd=tmp_path, cache=cache)
    assert (tmp_path / "runs" / "faces" / "best.safetensors").is_file()
    edgepipe("export", "nanodet_g.coco", "--weights", "runs/faces/best.safetensors", "--out", "faces_art",
             cwd=tmp_path, cache=cache)
    onnx_path = tmp_path / "faces_art" / "nanodet_g.coco.fp32.onnx"
    assert json.loads(onnx_path.with_suffix(".json").read_text())["meta"]["labels"] == ["face"]
    out = edgepipe("eval", "faces_art/nanodet_g.coco.fp32.onnx", "--data", "faces/val", cwd=tmp_path,
                   cache=cache).stdout
    assert "ap_50" in out
    edgepipe("quantize", "faces_art/nanodet_g.coco.fp32.onnx", "--precision", "int8", "--calib",
             shared_data / "coco_calib", "--calib-size", 8, "--eval-data", "faces/val", "--max-drop", 100,
             "--out", "faces_art", cwd=tmp_path, cache=cache)
    assert (tmp_path / "faces_art" / "nanodet_g.coco.int8.onnx").is_file()


def test_demo_serves_the_app(art, tmp_path, cache):
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update(EDGEPIPE_CACHE=str(cache), EDGEPIPE_ARTIFACTS=str(art))
    with open(tmp_path / "demo.log", "w") as log:
        server = subprocess.Popen([str(EDGEPIPE), "demo", "--server.headless", "true", "--server.port", str(port),
                                   "--server.address", "127.0.0.1"], cwd=tmp_path, env=environment, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", server)
        finally:
            stop(server)
    assert "Traceback" not in (tmp_path / "demo.log").read_text()


def test_readme_runtime_snippet(art, group_photos, tmp_path):
    """The Python snippet under "Where things go", with its file names pointed at real files."""
    snippet = re.search(r"```python\n(from edgepipe\.runtime import .+?)```", (REPO / "README.md").read_text(),
                        re.S).group(1)
    shutil.copy(art / "nanodet_g.coco.fp32.onnx", tmp_path)
    shutil.copy(group_photos[0], tmp_path / "street.jpg")
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^person 0\.\d+ \[", result.stdout, re.M), result.stdout[:500]
