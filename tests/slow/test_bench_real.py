"""A real CPU benchmark of one small zoo artifact, with both baselines, each cell in its own worker process."""

from __future__ import annotations

import pytest

from edgepipe.benchmark import BenchOptions, benchmark


@pytest.mark.slow
def test_cpu_bench_of_blazeface_with_baselines(artifacts, cache_dir, group_photos):
    options = BenchOptions(eps=("cpu",), threads=(1,), batch=(1,), warmup=2, runs=10, cache_dir=cache_dir,
                           image=group_photos[0])
    rows = {row.ep: row for row in benchmark([artifacts["blazeface_front.mediapipe"]], options)}
    assert set(rows) == {"cpu", "opencv-dnn", "torch"}
    cpu = rows["cpu"]
    assert cpu.status == "ok", cpu.reason
    assert set(cpu.nodes_by_ep) == {"CPUExecutionProvider"} and cpu.nodes_by_ep["CPUExecutionProvider"] > 50
    assert cpu.fallback is False and cpu.precision == "fp32" and cpu.runtime.startswith("onnxruntime")
    assert 0 < cpu.latency_ms_p50 < 1000 and cpu.gflops == pytest.approx(0.0615, rel=0.05)
    assert 0 < cpu.peak_share < 2  # the nominal clock may understate a turbo-boosted core
    torch_row = rows["torch"]
    assert torch_row.status == "ok", torch_row.reason
    assert torch_row.runtime.startswith("torch") and torch_row.peak_rss_mb > cpu.peak_rss_mb  # torch's own imports
    opencv = rows["opencv-dnn"]  # OpenCV 5's DNN runs this graph: a failure here is a real regression
    assert opencv.status == "ok", opencv.reason
    assert opencv.runtime.startswith("opencv") and 0 < opencv.latency_ms_p50 < 1000
