"""The real onnxruntime-gpu 1.31.1 on a host without a GPU, the way a GPU user sets it up offline: its wheels
fetched with `pip download`, `edgepipe env create gpu --find-links DIR --system-cuda`, then `edgepipe bench --ep
cuda,tensorrt`, and the same interpreter adopted with `--python`. Every GPU row must say why it cannot run, from what
onnxruntime itself reported; no GPU row may be measured on the CPU. And no zoo artifact computes shapes at run time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.slow

EDGEPIPE = Path(sys.executable).with_name("edgepipe")
WHEELS = ("onnxruntime-gpu==1.31.1", "flatbuffers", "packaging", "protobuf", "numpy", "opencv-python-headless")


def _edgepipe(*args, cache: Path, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(EDGEPIPE), *map(str, args)], capture_output=True, text=True, timeout=900, cwd=cwd,
                          env={**env, "EDGEPIPE_CACHE": str(cache)})
    assert done.returncode == expect, f"edgepipe {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def gpu_cache(tmp_path_factory) -> Path:
    """A cache whose gpu environment was built offline from downloaded wheels, as on a GPU host without an index."""
    wheels, cache = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("gpucache")
    subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
                    "-d", str(wheels), *WHEELS], check=True, timeout=900, capture_output=True)
    out = _edgepipe("env", "create", "gpu", "--find-links", wheels, "--system-cuda", cache=cache, cwd=cache).stdout
    assert "onnxruntime 1.31.1" in out and "cuda_build 13.0" in out, out
    # listed is not runnable: each provider says why it does not run here
    assert "CUDAExecutionProvider: CUDAExecutionProvider does not run here: " in out, out
    assert "TensorrtExecutionProvider: TensorrtExecutionProvider does not run here: " in out, out
    return cache


def test_bench_on_gpu_providers_without_a_gpu_says_why(gpu_cache, artifacts, group_photos, tmp_path):
    """#1-#4, #6-#9 with the real build: relative paths, one GPU cell per batch whatever --threads lists, each
    reason onnxruntime's own, each row its own environment's versions, and torch-eager CUDA rows beside."""
    (tmp_path / "art").mkdir()
    shutil.copy(artifacts["blazeface_back.mediapipe"], tmp_path / "art")
    shutil.copy(group_photos[0], tmp_path / "face.jpg")
    _edgepipe("bench", "art/blazeface_back.mediapipe.fp32.onnx", "--ep", "cuda,tensorrt", "--threads", "1,2",
              "--warmup", "1", "--runs", "3", "--image", "face.jpg", "--json", "rows.json", cache=gpu_cache,
              cwd=tmp_path)
    rows = json.loads((tmp_path / "rows.json").read_text())
    by = {(r["ep"], r["threads"], r["precision"]): r for r in rows}
    assert {k for k in by if k[0] in ("cuda", "tensorrt")} == {("cuda", 1, "fp32"), ("tensorrt", 1, "fp32")}
    # the baselines' workers ran on the CPU from the same relative paths
    assert by["opencv-dnn", 1, "fp32"]["status"] == by["opencv-dnn", 2, "fp32"]["status"] == "ok"
    cuda, tensorrt = by["cuda", 1, "fp32"], by["tensorrt", 1, "fp32"]
    for row in (cuda, tensorrt):
        assert row["status"] == "unavailable" and row["latency_ms_p50"] is None
        assert "no NVIDIA driver on this host" in row["reason"] and "libcublas" in row["reason"]
        assert row["machine"]["onnxruntime"] == "1.31.1" and row["machine"]["cuda_build"] == "13.0"
        assert row["env"] == "gpu"
    assert "libnvinfer.so.10 does not load" in tensorrt["reason"] and "--tensorrt" in tensorrt["reason"]
    assert "Require cuDNN 9.* and CUDA 13.*" in cuda["reason"]
    assert by["opencv-dnn", 1, "fp32"]["machine"]["onnxruntime"] == ort.__version__  # the main environment's
    for precision in ("fp32", "fp16"):
        eager = by["torch-cuda", 1, precision]
        assert eager["status"] == "unavailable" and "sees no CUDA device" in eager["reason"]


def test_the_same_interpreter_adopted(gpu_cache, tmp_path):
    """#5: `--python` adopts an interpreter that has onnxruntime-gpu; nothing is installed."""
    python = gpu_cache / "envs" / "gpu" / "bin" / "python"
    out = _edgepipe("env", "create", "gpu", "--python", python, cache=tmp_path, cwd=tmp_path).stdout
    assert f"({python})" in out and "onnxruntime 1.31.1" in out
    assert (tmp_path / "envs" / "gpu" / "ADOPTED").read_text().strip() == str(python)
    assert not (tmp_path / "envs" / "gpu" / "bin").exists()


def test_no_fixed_size_zoo_artifact_computes_shapes_at_run_time(artifacts):
    """#12: Shape nodes feed shape arithmetic that the CUDA provider places on the CPU, with copies around it. A
    graph whose image size is fixed needs none (only the batch varies); YuNet, which runs at any image size, must
    read its size at run time."""
    fixed = []
    for name, path in artifacts.items():
        graph = onnx.load(str(path)).graph
        if all(d.HasField("dim_value") for d in graph.input[0].type.tensor_type.shape.dim[1:]):
            fixed.append(name)
            assert "Shape" not in {node.op_type for node in graph.node}, f"{name} computes shapes at run time"
    assert "nanodet_g.coco" in fixed and "yunet.opencv" not in fixed
