"""Benchmark library: FLOPs on hand-built graphs, options and rows, unavailable providers and broken environments,
one real CPU cell on a tiny artifact, and the report files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepipe import flops
from edgepipe.benchmark import BenchmarkRow, BenchOptions, benchmark
from edgepipe.envs import create_env, probe_env
from edgepipe.errors import BenchmarkError
from edgepipe.flops import count_flops, cpu_peak_gflops
from edgepipe.pareto import accuracy_points, pareto_front
from edgepipe.report import render_report, render_table
from tests.support.tiny import tiny_embedder


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def _input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _output(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def test_conv_flops_are_2_n_cout_hw_cin_k():
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = _model([conv], [_input("x", ["N", 3, 8, 8])], [_output("y")], [_weight("w", (4, 3, 3, 3))])
    assert count_flops(model) == 2 * 1 * 4 * 8 * 8 * 3 * 3 * 3  # 13824
    assert count_flops(model, batch=2) == 2 * 13824


def test_grouped_strided_conv_and_conv_transpose():
    grouped = helper.make_node("Conv", ["x", "w"], ["y"], group=2, strides=[2, 2])  # 8x8 -> 3x3
    model = _model([grouped], [_input("x", [1, 4, 8, 8])], [_output("y")], [_weight("w", (6, 2, 3, 3))])
    assert count_flops(model) == 2 * 6 * 3 * 3 * 2 * 3 * 3
    up = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    model = _model([up], [_input("x", [1, 2, 4, 4])], [_output("y")], [_weight("w", (2, 3, 2, 2))])
    assert count_flops(model) == 2 * (2 * 4 * 4) * 3 * 2 * 2


def test_gemm_and_matmul_flops_are_2_m_n_k():
    gemm = helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)
    model = _model([gemm], [_input("a", [2, 5])], [_output("y")], [_weight("b", (3, 5))])
    assert count_flops(model) == 2 * 2 * 3 * 5
    matmul = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = _model([matmul], [_input("a", [2, 4, 5])], [_output("y")], [_weight("b", (5, 3))])
    assert count_flops(model) == 2 * (2 * 4 * 3) * 5


def test_uncounted_ops_add_nothing_and_unknown_shapes_are_an_error():
    relu = helper.make_node("Relu", ["x"], ["y"])
    assert count_flops(_model([relu], [_input("x", [1, 3, 8, 8])], [_output("y")])) == 0
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    model = _model([conv], [_input("x", ["N", 3, "H", "W"])], [_output("y")], [_weight("w", (4, 3, 3, 3))])
    with pytest.raises(BenchmarkError, match="cannot count FLOPs of Conv"):
        count_flops(model)


def test_peak_is_isa_flop_per_cycle_times_clock(monkeypatch):
    monkeypatch.setattr(flops, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma"})
    monkeypatch.setattr(flops, "_clock_mhz", lambda: (2000.0, "test"))
    per_core, formula = cpu_peak_gflops()
    assert per_core == pytest.approx(64.0) and "32 flop/cycle" in formula and "AVX2+FMA" in formula
    monkeypatch.setattr(flops, "cpu_flags", lambda: {"avx512f", "avx2", "fma"})
    assert cpu_peak_gflops()[0] == pytest.approx(128.0)
    monkeypatch.setattr(flops, "_clock_mhz", lambda: (None, ""))
    assert cpu_peak_gflops()[0] is None


def test_options_reject_unknown_ep_naming_the_allowed_set():
    with pytest.raises(BenchmarkError, match="'gpu'.*cpu, openvino, cuda, tensorrt"):
        BenchOptions(eps=("cpu", "gpu"))
    with pytest.raises(BenchmarkError, match="threads"):
        BenchOptions(threads=(0,))
    with pytest.raises(BenchmarkError, match="runs"):
        BenchOptions(runs=0)


def test_row_to_dict_is_plain_json():
    row = BenchmarkRow("m.x", "fp32", "cpu", 1, 1, "ok", latency_ms_p50=1.5, nodes_by_ep={"CPUExecutionProvider": 3})
    data = row.to_dict()
    assert data["latency_ms_p50"] == 1.5 and data["nodes_by_ep"] == {"CPUExecutionProvider": 3}
    assert json.loads(json.dumps(data)) == data
    with pytest.raises(AttributeError):
        row.status = "failed"  # frozen


def _tiny_artifact(tmp_path: Path) -> Path:
    return tiny_embedder(tmp_path / "tiny_embed.test.fp32.onnx")


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    return path


def test_missing_artifact_is_one_clear_error(tmp_path):
    with pytest.raises(BenchmarkError, match="no such artifact file.*nothing.onnx"):
        benchmark([tmp_path / "nothing.onnx"], BenchOptions(cache_dir=tmp_path, image=_image(tmp_path)))


def test_providers_without_an_environment_are_unavailable_rows(tmp_path):
    options = BenchOptions(eps=("openvino", "cuda", "tensorrt"), threads=(1, 2), baselines=False,
                           cache_dir=tmp_path, image=_image(tmp_path))
    rows = benchmark([_tiny_artifact(tmp_path)], options)
    # A GPU cell does not use the thread count: one cell each for CUDA and TensorRT, not one per --threads value.
    assert [(r.ep, r.threads) for r in rows] == [("openvino", 1), ("openvino", 2), ("cuda", 1), ("tensorrt", 1)]
    assert {r.status for r in rows} == {"unavailable"}
    assert all("edgepipe env create" in r.reason and r.latency_ms_p50 is None for r in rows)
    assert {r.env for r in rows} == {"openvino", "gpu"}


def test_a_broken_environment_is_unavailable_with_its_reason(tmp_path):
    python = tmp_path / "envs" / "openvino" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named onnxruntime' >&2\nexit 1\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    assert "does not import" in probe_env("openvino", tmp_path)["reason"]
    rows = benchmark([_tiny_artifact(tmp_path)], BenchOptions(eps=("openvino",), threads=(1,), baselines=False,
                                                               cache_dir=tmp_path, image=_image(tmp_path)))
    assert rows[0].status == "unavailable" and "No module named onnxruntime" in rows[0].reason
    python.chmod(0o644)  # not executable: the interpreter does not even start
    assert "does not run" in probe_env("openvino", tmp_path)["reason"]
    with pytest.raises(BenchmarkError, match="unknown environment 'rocm'"):
        create_env("rocm", tmp_path)


def test_a_cpu_cell_runs_in_a_worker_and_is_profiled(tmp_path):
    artifact = _tiny_artifact(tmp_path)
    options = BenchOptions(eps=("cpu",), threads=(1,), batch=(1, 3), warmup=1, runs=5, baselines=False,
                           cache_dir=tmp_path, image=_image(tmp_path), peak_gflops_per_core=10.0)
    rows = benchmark([artifact], options)
    assert [(r.status, r.batch) for r in rows] == [("ok", 1), ("ok", 3)], [r.reason for r in rows]
    row = rows[0]
    assert row.runs == 5 and 0 < row.latency_ms_p50 <= row.latency_ms_p90 <= row.latency_ms_p99
    assert set(row.nodes_by_ep) == {"CPUExecutionProvider"} and row.fallback is False
    assert row.gflops == pytest.approx(2 * 4 * 16 * 16 * 27 / 1e9, rel=1e-3) and row.peak_gflops == 10.0
    assert row.peak_share == pytest.approx(row.gflops_per_s / 10.0, rel=1e-2)
    assert row.peak_rss_mb > 10 and row.session_create_ms > 0 and row.runtime.startswith("onnxruntime")
    assert rows[1].throughput_ips == pytest.approx(3e3 / rows[1].latency_ms_p50, rel=1e-2)
    assert row.machine["peak_formula"] == "given" and row.machine["cores"] >= 1
    assert not list(Path.cwd().glob("ort_profile*"))  # the profile went to a temporary folder


def test_pareto_front_and_accuracy_points():
    assert pareto_front([(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (1.0, 0.4)]) == [True, True, False, False]
    rows = [{"model": "m", "precision": p, "ep": "cpu", "threads": 1, "batch": 1, "status": "ok",
             "latency_ms_p50": ms} for p, ms in (("fp32", 10.0), ("int8", 4.0), ("fp16", 12.0))]
    evals = [{"model": "m", "precision": "fp32", "evaluations": {"coco": {"metrics": {"map_50_95": 0.30}}}},
             {"model": "m", "precision": "int8", "task": "detection", "data": "/d/coco", "metrics": {"map_50_95": 0.29}},
             {"model": "m", "precision": "fp16", "evaluations": {"coco": {"metrics": {"map_50_95": 0.30}}}}]
    points = {p.precision: p for p in accuracy_points(rows, evals)}
    assert points["fp32"].on_front and points["int8"].on_front and not points["fp16"].on_front
    assert points["int8"].metric == "map_50_95" and points["int8"].data == "coco"


def test_report_writes_markdown_and_self_contained_html(tmp_path):
    machine = {"cpu": "Test CPU", "cores": 2, "isa": ["avx2"], "onnxruntime": "1.0", "python": "3.11",
               "peak_formula": "32 flop/cycle x 2 GHz"}
    rows = [BenchmarkRow("m.x", prec, ep, 1, batch, "ok", latency_ms_p50=ms * batch, latency_ms_p99=ms * batch * 1.3,
                         throughput_ips=1e3 / ms, nodes_by_ep={"CPUExecutionProvider": 5}, fallback=False,
                         machine=machine).to_dict()
            for prec, ep, ms in (("fp32", "cpu", 10.0), ("int8", "cpu", 5.0), ("fp32", "torch", 20.0))
            for batch in (1, 4)]
    rows.append(BenchmarkRow("m.x", "fp32", "openvino", 1, 1, "unavailable", reason="no 'openvino' environment",
                             machine=machine).to_dict())
    evals = [{"model": "m.x", "precision": "fp32", "evaluations": {"lfw": {"metrics": {"accuracy": 0.99}}}},
             {"model": "m.x", "precision": "int8", "evaluations": {"lfw": {"metrics": {"accuracy": 0.98}}}}]
    md_path, html_path = render_report(rows, accuracy_points(rows, evals), tmp_path / "out")
    md, html = md_path.read_text(), html_path.read_text()
    assert md_path.name == "report.md" and html_path.name == "report.html"
    for text in (md, html):
        assert "m.x" in text and "Test CPU" in text and "no &#x27;openvino&#x27; environment" in html
        assert "openvino" in text and "0.98" in text
    assert html.count("<svg") == 3 and "Pareto" in html and "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "| m.x | int8 | cpu | 1 | 1 | ok |" in md
    assert "CPU:5" in render_table(rows, ["model", "nodes_by_ep"])


def test_worker_never_writes_to_the_working_directory(tmp_path):
    before = set(os.listdir(Path.cwd()))
    benchmark([_tiny_artifact(tmp_path)], BenchOptions(eps=("cpu",), threads=(1,), runs=1, warmup=0, baselines=False,
                                                       cache_dir=tmp_path, image=_image(tmp_path)))
    assert set(os.listdir(Path.cwd())) == before


def test_quantized_artifact_json_gives_an_accuracy_point():
    from edgepipe.pareto import accuracy_points

    quantized = {"model": "m.x", "precision": "int8", "accuracy": {"metric": "map_50_95", "quantized": 0.27,
                                                                    "data": "/d/coco_val_mini", "fp32": 0.28}}
    fp32 = {"model": "m.x", "precision": "fp32", "evaluations": {"coco_val_mini": {"metrics": {"map_50_95": 0.28}}}}
    rows = [{"model": "m.x", "precision": p, "ep": "cpu", "threads": 1, "batch": 1, "status": "ok",
             "latency_ms_p50": ms} for p, ms in (("fp32", 50.0), ("int8", 30.0))]
    points = {p.precision: p for p in accuracy_points(rows, [quantized, fp32])}
    assert points["int8"].accuracy == 0.27 and points["fp32"].accuracy == 0.28


def _contractless(path: Path, dims) -> Path:
    """A Conv + pool graph with no edgepipe metadata, its input `x` of `dims` (names are dynamic)."""
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("GlobalAveragePool", ["c"], ["y"])],
                   [_input("x", list(dims))], [_output("y")], [_weight("w", (4, 3, 3, 3))])
    onnx.save(model, path)
    return path


def test_a_file_without_a_contract_runs_on_random_inputs_of_its_shapes(tmp_path):
    path = _contractless(tmp_path / "theirs.onnx", ("batch", 3, "h", "w"))
    options = dict(threads=(1,), warmup=0, runs=2, cache_dir=tmp_path, image=_image(tmp_path))
    with pytest.raises(BenchmarkError, match=r"input 'x' has dynamic dims \(\?x3x\?x\?\); give them with --shape "
                                             r"x:1x3xNxN"):
        benchmark([path], BenchOptions(**options))
    with pytest.raises(BenchmarkError, match=r"--shape names \['image'\], not inputs of this graph"):
        benchmark([path], BenchOptions(**options, shapes={"image": (1, 3, 8, 8)}))
    rows = benchmark([path], BenchOptions(**options, batch=(1, 3), shapes={"x": (1, 3, 32, 48)}))
    assert [(r.model, r.precision, r.batch, r.status) for r in rows] == [("theirs", "fp32", 1, "ok"),
                                                                        ("theirs", "fp32", 3, "ok")]
    assert rows[0].gflops == pytest.approx(2 * 4 * 32 * 48 * 27 / 1e9, rel=0.05)  # counted at the --shape size


def test_a_fixed_batch_is_a_failed_cell_for_another_batch(tmp_path):
    path = _contractless(tmp_path / "b1.onnx", (1, 3, 16, 16))
    rows = benchmark([path], BenchOptions(threads=(1,), batch=(1, 2), warmup=0, runs=2, cache_dir=tmp_path,
                                          image=_image(tmp_path)))
    assert [r.status for r in rows] == ["ok", "failed"]
    assert rows[1].reason == "input 'x' has its batch fixed at 1; it cannot run a batch of 2"
