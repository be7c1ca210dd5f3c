"""GPU execution providers on a host without a GPU: every way they fail says why in one line, and the parts of a
GPU measurement that do not need one (paths, probes, environments, the GPU record and peak, device-resident timing
through I/O binding, the model's exported graph) are right. The real onnxruntime-gpu build is exercised in
tests/slow/test_gpu_env.py."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from edgepipe.bench_worker import device_runs
from edgepipe.benchmark import BenchOptions, benchmark
from edgepipe.envs import create_env, env_python, probe_env, worker_env
from edgepipe.errors import BenchmarkError
from edgepipe.gpu import gpu_info, gpu_peak_gflops
from edgepipe.runtime import ArtifactError, load
from edgepipe.runtime.providers import PROBE_MODEL, explain, session_providers
from tests.support.tiny import tiny_embedder

# What onnxruntime-gpu 1.31.1 printed on this kind of host (no driver, no CUDA libraries) when asked for CUDA, then
# TensorRT: preload_dlls' lines, then the provider library's load failure and its warning (ANSI colours removed).
CUDA_PRINTED = """Failed to load libcublasLt.so.13: libcublasLt.so.13: cannot open shared object file: No such file or directory
Failed to load libcublas.so.13: libcublas.so.13: cannot open shared object file: No such file or directory
Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.
2026-12-01 03:37:34.23 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /venv/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory
2026-12-01 03:37:34.23 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please install all dependencies as mentioned in the GPU requirements page (https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements), make sure they're in the PATH, and that your GPU is supported.
"""
TENSORRT_PRINTED = """*************** EP Error ***************
EP Error /onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:729 void onnxruntime::python::RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, const onnxruntime::ProviderOptions&) Please install TensorRT libraries as mentioned in the GPU requirements page, make sure they're in the PATH or LD_LIBRARY_PATH, and that your GPU is supported.
 when using ['TensorrtExecutionProvider']
Falling back to ['CPUExecutionProvider'] and retrying.
"""


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    return path


def test_relative_artifact_and_image_paths_run(tmp_path, monkeypatch):
    """#1: the worker runs in a folder of its own; paths given relative to the caller's still reach it."""
    (tmp_path / "art").mkdir()
    tiny_embedder(tmp_path / "art" / "tiny_embed.test.fp32.onnx")
    _image(tmp_path)
    monkeypatch.chdir(tmp_path)
    rows = benchmark([Path("art/tiny_embed.test.fp32.onnx")], BenchOptions(
        threads=(1,), warmup=0, runs=2, baselines=False, cache_dir=Path("cache"), image=Path("photo.png")))
    assert [r.status for r in rows] == ["ok"], rows[0].reason
    assert Path(rows[0].artifact).is_absolute()


def test_the_probe_model_is_one_relu():
    model = onnx.load_from_string(PROBE_MODEL)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Relu"]


def test_a_provider_that_drops_out_is_explained_with_what_is_missing():
    """#2-#4: the driver, the first library preloading could not load, the provider library's error and
    onnxruntime's own words; for TensorRT, the exact library and how to get it."""
    cuda = explain("CUDAExecutionProvider", CUDA_PRINTED)
    assert "\n" not in cuda and cuda.startswith("CUDAExecutionProvider does not run here: ")
    assert "libcublasLt.so.13 does not load (cannot open shared object file" in cuda
    assert "libonnxruntime_providers_cuda.so does not load" in cuda
    assert "Require cuDNN 9.* and CUDA 13.*" in cuda and "Please install" not in cuda
    assert "no NVIDIA driver on this host (libcuda.so.1 does not load)" in cuda  # this host has none
    tensorrt = explain("TensorrtExecutionProvider", TENSORRT_PRINTED)
    assert "libnvinfer.so.10 does not load" in tensorrt and "edgepipe env create gpu --tensorrt" in tensorrt
    assert "pypi.nvidia.com" in tensorrt
    assert "no message" in explain("OpenVINOExecutionProvider", "")


def test_the_probe_opens_a_session_per_provider(tmp_path):
    """#2: the main environment is probed like the others: a session each, and a provider this build lacks is
    named as such, with the build that has it."""
    probe = probe_env("main", tmp_path)
    assert probe["reason"] == "" and probe["usable"] == {"CPUExecutionProvider": ""}
    assert probe["onnxruntime"] == ort.__version__ and probe["cuda_build"] is None
    script = Path(sys.modules["edgepipe.runtime.providers"].__file__).read_text()
    done = subprocess.run([sys.executable, "-c", script, "CUDAExecutionProvider"], capture_output=True, text=True,
                          timeout=120, check=True)
    reason = __import__("json").loads(done.stdout)["usable"]["CUDAExecutionProvider"]
    assert "is not among onnxruntime" in reason and "onnxruntime-gpu" in reason


def test_load_on_a_device_that_is_not_here_says_so(tmp_path):
    """The runtime never runs on the CPU in silence when a GPU was asked for."""
    artifact = tiny_embedder(tmp_path / "tiny_embed.test.fp32.onnx")
    with pytest.raises(ArtifactError, match=r"device 'cuda': CUDAExecutionProvider is not among .*onnxruntime-gpu"):
        load(artifact, device="cuda")
    with pytest.raises(ValueError, match="unknown device 'npu'"):
        load(artifact, device="npu")
    assert load(artifact, device="cpu").providers == ["CPUExecutionProvider"]


def test_tensorrt_caches_live_under_the_cache_root_by_gpu(tmp_path):
    (tensorrt, options), cuda = session_providers("tensorrt", fp16=True, cache_dir=tmp_path, gpu="NVIDIA H200")
    assert tensorrt == "TensorrtExecutionProvider" and cuda[0] == "CUDAExecutionProvider"
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path / "tensorrt" /
                                                                                        "NVIDIA_H200")
    assert options["trt_fp16_enable"] == "True" and options["trt_engine_cache_enable"] == "True"


def test_tensorrt_without_nvidia_index_is_one_line_and_leaves_no_env(tmp_path):
    """#4: `env create gpu --tensorrt` needs NVIDIA's index, which this host cannot reach."""
    with pytest.raises(BenchmarkError, match=r"TensorRT's libraries come from NVIDIA's package index "
                                             r"\(https://pypi.nvidia.com\), which this host cannot reach.*--find-links"):
        create_env("gpu", tmp_path, tensorrt=True)
    assert not (tmp_path / "envs" / "gpu").exists()
    with pytest.raises(BenchmarkError, match="for the gpu environment, not 'openvino'"):
        create_env("openvino", tmp_path, system_cuda=True)


def test_find_links_installs_offline_only(tmp_path):
    """#5: with --find-links pip looks nowhere else: a folder without the wheels fails in one line, no env left."""
    (tmp_path / "wheels").mkdir()
    with pytest.raises(BenchmarkError, match=r"creating environment 'gpu': pip failed .*onnxruntime-gpu==1.31.1"):
        create_env("gpu", tmp_path, find_links=tmp_path / "wheels", system_cuda=True)
    assert not (tmp_path / "envs" / "gpu").exists()
    with pytest.raises(BenchmarkError, match="must be a folder of wheels"):
        create_env("gpu", tmp_path, find_links=tmp_path / "none")


def test_adopting_an_interpreter_checks_its_build_and_keeps_its_pythonpath(tmp_path, monkeypatch):
    """#5: --python adopts an interpreter only if its onnxruntime lists the environment's providers; an adopted
    one keeps the caller's PYTHONPATH (behind our code's), a managed venv never sees it."""
    with pytest.raises(BenchmarkError, match=r"cannot be the 'gpu' environment: its onnxruntime .* without "
                                             r"CUDAExecutionProvider, TensorrtExecutionProvider"):
        create_env("gpu", tmp_path, python=Path(sys.executable))
    assert not (tmp_path / "envs" / "gpu" / "ADOPTED").exists()
    with pytest.raises(BenchmarkError, match="no such interpreter"):
        create_env("gpu", tmp_path, python=tmp_path / "python9")
    with pytest.raises(BenchmarkError, match="--python adopts an interpreter as it is"):
        create_env("gpu", tmp_path, python=Path(sys.executable), tensorrt=True)
    monkeypatch.setenv("PYTHONPATH", "/opt/vendor")
    assert worker_env("gpu", tmp_path, Path("/shim"))["PYTHONPATH"] == "/shim"
    (tmp_path / "envs" / "gpu").mkdir(parents=True)
    (tmp_path / "envs" / "gpu" / "ADOPTED").write_text(f"{sys.executable}\n")  # as create_env writes it
    assert env_python("gpu", tmp_path) == Path(sys.executable)
    assert worker_env("gpu", tmp_path, Path("/shim"))["PYTHONPATH"] == os.pathsep.join(("/shim", "/opt/vendor"))


def test_gpu_record_and_peak_come_from_nvidia_smi(tmp_path, monkeypatch):
    """#8, #11: the machine record names the GPU, and a GPU cell's peak is the GPU's, per precision."""
    assert gpu_info() is None or "name" in gpu_info()
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 580.95.05, 143771'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert {k: v for k, v in gpu_info().items() if k != "cuda_driver"} == {
        "name": "NVIDIA H200", "driver": "580.95.05", "memory_mib": 143771, "count": 1}
    assert gpu_peak_gflops("NVIDIA H200", "fp16") == 2 * gpu_peak_gflops("NVIDIA H200", "fp32") == 989_400
    assert gpu_peak_gflops("NVIDIA H100 PCIe", "int8-dynamic") == 1_513_000 and gpu_peak_gflops("Radeon", "fp32") is None
    artifact = tiny_embedder(tmp_path / "tiny_embed.test.fp32.onnx")
    rows = benchmark([artifact], BenchOptions(eps=("cpu", "cuda"), threads=(1,), warmup=0, runs=2, baselines=False,
                                              cache_dir=tmp_path, image=_image(tmp_path), peak_gflops_per_core=10.0))
    cpu, cuda = rows
    assert cpu.peak_gflops == 10.0 and cuda.peak_gflops == 494_700 and cuda.status == "unavailable"
    assert cpu.machine["gpu"]["name"] == cuda.machine["gpu"]["name"] == "NVIDIA H200"
    # each row carries its own environment's onnxruntime: the gpu env is absent here, so it has none
    assert cpu.machine["onnxruntime"] == ort.__version__ and cuda.machine["onnxruntime"] is None


def test_device_resident_timing_binds_inputs_and_outputs_once(tmp_path):
    """#10: the I/O-binding path, on the device this host has (the CPU); on a GPU the same code runs with "cuda"."""
    session = ort.InferenceSession(str(tiny_embedder(tmp_path / "tiny_embed.test.fp32.onnx")))
    name, shape = session.get_inputs()[0].name, session.get_inputs()[0].shape
    feed = {name: np.random.default_rng(0).random([2, *shape[1:]], dtype=np.float32)}
    outputs = dict(zip((o.name for o in session.get_outputs()), session.run(None, feed)))
    latencies = device_runs(session, feed, outputs, "cpu", 1, 4)
    assert len(latencies) == 4 and all(t > 0 for t in latencies)


def test_the_zoo_imports_without_pycocotools():
    """#9: a GPU image without pycocotools can still build the torch baseline's model."""
    code = ("import sys; sys.modules['pycocotools'] = None; import edgepipe.models; "
            "from edgepipe.models.zoo.nanodet import nanodet_g; print(len(nanodet_g().head))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_probe_model_bytes_match_a_rebuild():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)], producer_name="edgepipe")
    model.ir_version = 7
    assert base64.b64encode(model.SerializeToString()) == base64.b64encode(PROBE_MODEL)


def test_tensorrt_profile_spans_the_asked_batches(tmp_path):
    """One TensorRT profile from the smallest to the largest --batch, optimised for the cell's own batch; fp16 and
    int8 follow the artifact."""
    from edgepipe.bench_inputs import artifact_info, cell_providers

    info = artifact_info(tiny_embedder(tmp_path / "tiny_embed.test.fp32.onnx"))
    [(name, options)] = cell_providers("tensorrt", 1, 8, info, tmp_path, "NVIDIA H200", (1, 8, 32))
    batch = {key: int(options[f"trt_profile_{key}_shapes"].split(":")[1].split("x")[0]) for key in ("min", "opt", "max")}
    assert name == "TensorrtExecutionProvider" and batch == {"min": 1, "opt": 8, "max": 32}
    assert options["trt_fp16_enable"] == options["trt_int8_enable"] == "False"
    assert options["trt_engine_cache_path"] == str(tmp_path / "tensorrt" / "NVIDIA_H200")


def test_each_environment_is_probed_once_per_benchmark(tmp_path, monkeypatch):
    """A probe opens a session per provider in a fresh interpreter: once per environment, not once per cell."""
    import edgepipe.benchmark as bench

    calls = []
    real = bench.probe_env
    monkeypatch.setattr(bench, "probe_env", lambda env, cache: calls.append(env) or real(env, cache))
    artifacts = [tiny_embedder(tmp_path / f"tiny_embed.test{i}.fp32.onnx") for i in range(2)]
    rows = benchmark(artifacts, BenchOptions(eps=("cpu", "cuda"), threads=(1, 2), warmup=0, runs=1, baselines=False,
                                             cache_dir=tmp_path, image=_image(tmp_path)))
    assert len(rows) == 2 * (2 + 1) and sorted(calls) == ["gpu", "main"]
