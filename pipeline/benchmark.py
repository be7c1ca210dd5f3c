"""Latency, memory and roofline share of artifacts per execution provider x threads x batch, each cell in a fresh
worker process of the environment that provides its provider: `benchmark(artifacts, options) -> list[BenchmarkRow]`.

Baselines on the same input: PyTorch eager on the source model and OpenCV DNN on the fp32 file, and with `cuda`
asked for, PyTorch eager on the GPU in fp32 and fp16 autocast. GPU cells are timed twice: end to end (numpy in and
out, what the runtime's users get) and device-resident (I/O binding, inputs and outputs on the GPU; for CUDA also
replayed as a CUDA graph). The older in-process timings (`time_face_pipeline`, `time_detector`, `machine_info`)
live in `edgepipe.timing`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepipe.bench_inputs import ArtifactInfo, artifact_info, cell_providers
from edgepipe.envs import MAIN_ENV, import_shim, probe_env, worker_env
from edgepipe.errors import BenchmarkError
from edgepipe.flops import cpu_peak_gflops
from edgepipe.gpu import gpu_info, gpu_peak_gflops
from edgepipe.runtime.atomic import scratch_dir
from edgepipe.runtime.preprocess import read_image
from edgepipe.sources import default_cache_dir
from edgepipe.timing import machine_info, time_detector, time_face_pipeline  # noqa: F401  (re-exported)

__all__ = ["benchmark", "BenchOptions", "BenchmarkRow"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    """An execution provider a user can ask for, and the environment whose onnxruntime build has it."""

    ep: str  # the name users pass, e.g. "openvino"
    provider: str  # onnxruntime's name
    env: str  # `edgepipe.envs` environment


_TARGETS = (
    _Target("cpu", "CPUExecutionProvider", MAIN_ENV),
    _Target("openvino", "OpenVINOExecutionProvider", "openvino"),
    _Target("cuda", "CUDAExecutionProvider", "gpu"),
    _Target("tensorrt", "TensorrtExecutionProvider", "gpu"),
)
_EPS = tuple(t.ep for t in _TARGETS)
_GPU_EPS = ("cuda", "tensorrt", "torch-cuda")  # their thread count is not theirs to use: one cell, not one a count
_BASELINE_ENV = MAIN_ENV  # torch and OpenCV DNN run in the interpreter that has torch


@dataclass(frozen=True)
class BenchOptions:
    """What to measure and how long."""

    eps: tuple[str, ...] = ("cpu",)  # any of cpu, openvino, cuda, tensorrt
    threads: tuple[int, ...] = (1, 2)  # intra-op threads (OpenVINO: num_of_threads; torch/OpenCV: their pools)
    batch: tuple[int, ...] = (1,)  # images per inference (the real image repeated)
    warmup: int = 5  # untimed runs after the first (cold) one
    runs: int = 30  # timed runs
    strict_ep: bool = False  # refuse CPU fallback: a graph the EP cannot run whole fails its cell
    baselines: bool = True  # add torch eager and OpenCV DNN rows
    peak_gflops_per_core: float | None = None  # override the ISA x clock estimate of one core's fp32 peak
    gpu_peak_gflops: float | None = None  # override the GPU's data-sheet peak (GPU cells, any precision)
    cache_dir: Path | None = None  # environments, TensorRT engines, sample photos (default: default_cache_dir())
    image: Path | None = None  # input photo (default: the first sample photo)
    timeout_s: float = 900.0  # per cell, worker start included
    # A file without an edgepipe contract: input name -> its full shape, for inputs with dynamic dims (the first
    # axis is the batch and follows `batch` where the graph leaves it dynamic)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [ep for ep in self.eps if ep not in _EPS]
        if unknown or not self.eps:
            raise BenchmarkError(f"unknown execution provider(s) {unknown or list(self.eps)!r}; "
                                 f"expected some of {', '.join(_EPS)}")
        if len(set(self.eps)) != len(self.eps):
            raise BenchmarkError(f"eps lists a provider twice: {list(self.eps)!r}")
        for name in ("threads", "batch"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, int) and v >= 1 for v in values):
                raise BenchmarkError(f"{name} must be a non-empty tuple of ints >= 1, got {values!r}")
        if self.warmup < 0 or self.runs < 1:
            raise BenchmarkError(f"need warmup >= 0 and runs >= 1, got warmup={self.warmup}, runs={self.runs}")
        for name in ("peak_gflops_per_core", "gpu_peak_gflops"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # NaN too
                raise BenchmarkError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class BenchmarkRow:
    """One measured (or unmeasurable) cell: an artifact on a provider (or a baseline) at a thread count and batch."""

    model: str  # zoo key
    precision: str  # fp32, fp16, int8, int8-dynamic
    ep: str  # cpu, openvino, cuda, tensorrt, or the baselines torch, opencv-dnn, torch-cuda
    threads: int  # GPU cells: the host threads, one value whatever --threads lists
    batch: int
    status: str  # "ok", "unavailable" (provider or environment missing) or "failed" (it ran and broke)
    reason: str = ""  # one line when status is not "ok"
    artifact: str = ""  # the ONNX file (for torch: the artifact whose model was built)
    env: str = ""  # the environment the worker ran in
    runtime: str = ""  # e.g. "onnxruntime 1.24.1", "torch 2.13.0+cpu"
    runs: int = 0
    latency_ms_p50: float | None = None  # one inference of `batch` images
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_mean: float | None = None
    throughput_ips: float | None = None  # images per second at the median latency
    device_ms_p50: float | None = None  # GPU cells: inputs and outputs already on the GPU (I/O binding), no copies
    graph_ms_p50: float | None = None  # CUDA cells: the same replayed as a CUDA graph
    copy_share: float | None = None  # 1 - device_ms_p50 / latency_ms_p50: the host<->device copies' share
    device_throughput_ips: float | None = None  # images per second at the best device-resident median
    cached_create_ms: float | None = None  # TensorRT: a second session's start, its engine from the cache
    gpu_mem_mb: float | None = None  # GPU memory the cell's session took (onnxruntime: its arena after the runs)
    note: str = ""  # what an ok cell could not measure (a CUDA graph refused, ...)
    peak_rss_mb: float | None = None  # the worker's peak resident memory (interpreter and imports included)
    rss_before_load_mb: float | None = None  # the same just before the model was loaded
    import_ms: float | None = None  # runtime imports in the fresh worker
    session_create_ms: float | None = None  # model load + compile (TensorRT: engine build or cache load)
    first_inference_ms: float | None = None  # the first, cold run
    size_mb: float | None = None  # artifact file size
    nodes_by_ep: dict = field(default_factory=dict)  # onnxruntime provider -> graph nodes it ran (profiled)
    fallback: bool | None = None  # some nodes ran on a provider other than the requested one
    gflops: float | None = None  # per image, from the graph
    gflops_per_s: float | None = None  # achieved at the median latency (GPU: the fastest device-resident one)
    peak_gflops: float | None = None  # peak of what this cell ran on: the cores it could use, or the GPU
    peak_share: float | None = None  # gflops_per_s / peak_gflops
    machine: dict = field(default_factory=dict)  # machine_info(), the peak formula, the GPU, the cell's env's versions

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def benchmark(artifacts: list[Path], options: BenchOptions) -> list[BenchmarkRow]:
    """Measure every artifact on every requested provider x thread count x batch, plus the baselines.

    Every cell runs in a fresh `python -m edgepipe.bench_worker` of the environment that provides its provider
    (cpu: this interpreter; openvino / cuda / tensorrt: the managed environments of `edgepipe.envs`). A provider
    that is missing is reported as an "unavailable" row with the reason, never measured on CPU instead.

    Args:
        artifacts: edgepipe ONNX files.
        options: providers, threads, batches, run counts, baselines, peak override.

    Returns:
        One row per cell, artifacts in the given order; each row carries the machine description.

    Raises:
        BenchmarkError: an artifact or the input image is missing. ArtifactError: a file is not an edgepipe artifact.
    """
    paths = [Path(p).absolute() for p in artifacts]  # each worker runs in a folder of its own
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise BenchmarkError(f"no such artifact file(s): {', '.join(missing)}" if missing else "no artifacts given")
    cache_dir = Path(options.cache_dir or default_cache_dir()).absolute()
    image = _input_image(options, cache_dir).absolute()
    infos = [artifact_info(p, options.shapes) for p in paths]
    per_core, formula = ((options.peak_gflops_per_core, "given") if options.peak_gflops_per_core
                         else cpu_peak_gflops())
    gpu = gpu_info()
    machine = {**machine_info(), "peak_gflops_per_core": per_core, "peak_formula": formula, "gpu": gpu}
    probes: dict[str, dict] = {}
    torch_done: set[str] = set()
    rows = []

    def measure(info, ep, env, spec, reason="", precision=None):
        """One row per thread count (one for a GPU cell) x batch: measured in `env`'s worker, or unavailable."""
        if env not in probes:  # once per environment: a probe opens a session on each of its providers
            probes[env] = probe_env(env, cache_dir)
        probe = probes[env]
        reason = reason or probe["reason"] or probe["usable"].get(spec.get("provider"), "")
        versions = {k: probe[k] for k in ("onnxruntime", "cuda_build", "cuda_driver", "cuda_runtime", "cudnn")}
        precision = precision or ("fp32" if ep == "torch" else info.precision)
        for threads in (options.threads[:1] if ep in _GPU_EPS else options.threads):
            for batch in options.batch:
                cell = {**spec, "providers": cell_providers(ep, threads, batch, info, cache_dir, gpu and gpu["name"],
                                                            options.batch)} if spec["kind"] == "ort" else spec
                result = ({"status": "unavailable", "reason": reason} if reason
                          else _run_worker(probe["python"], env, cell, info, image, threads, batch, options, shim))
                rows.append(_row(info, ep, env, threads, batch, result, precision,
                                 _peak(ep, precision, threads, per_core, machine, options), {**machine, **versions}))

    with scratch_dir("bench") as tmp:
        shim = import_shim(tmp)
        for info in infos:
            for target in (t for t in _TARGETS if t.ep in options.eps):
                measure(info, target.ep, target.env, {"kind": "ort", "provider": target.provider,
                                                       "strict_ep": options.strict_ep})
            if not options.baselines or info.meta is None:  # baselines rebuild a zoo model: contracts only
                continue
            baseline = {"model_name": info.name, "cache_dir": str(cache_dir)}
            if info.precision == "fp32":
                measure(info, "opencv-dnn", _BASELINE_ENV, {"kind": "opencv-dnn", **baseline})
            if info.name in torch_done:
                continue
            torch_done.add(info.name)
            measure(info, "torch", _BASELINE_ENV, {"kind": "torch", **baseline})
            if "cuda" in options.eps:  # the same model eagerly on the GPU, beside the CUDA provider's rows
                for precision in ("fp32", "fp16"):
                    measure(info, "torch-cuda", _BASELINE_ENV, {"kind": "torch", "device": "cuda",
                                                                "autocast": precision == "fp16", **baseline},
                            precision=precision)
    return rows


def _peak(ep: str, precision: str, threads: int, per_core: float | None, machine: dict,
          options: BenchOptions) -> float | None:
    """The roofline of a cell: the GPU's peak for its precision (given, or from the GPU's name) for a GPU cell;
    one core's fp32 peak x the cores its threads could use otherwise."""
    if ep in _GPU_EPS:
        return options.gpu_peak_gflops or gpu_peak_gflops((machine.get("gpu") or {}).get("name"), precision)
    return per_core * min(threads, machine.get("cores") or threads) if per_core else None


def _input_image(options: BenchOptions, cache_dir: Path) -> Path:
    if options.image is not None:
        read_image(options.image)  # InputError now, in one line, rather than every cell failing on it
        return Path(options.image)
    from edgepipe.samples import sample_images

    return sample_images(cache_dir)[0]


def _run_worker(python: str | Path, env_name: str, extra: dict, info: ArtifactInfo, image: Path, threads: int,
                batch: int, options: BenchOptions, shim: Path) -> dict:
    """Run one cell in a fresh worker process; every failure comes back as a result dict, never raised."""
    with tempfile.TemporaryDirectory(prefix="cell-", dir=shim.parent) as cell_dir:
        spec = {**extra, "artifact": str(info.path), "meta": info.meta_json, "image": str(image), "threads": threads,
                "batch": batch, "warmup": options.warmup, "runs": options.runs, "profile_dir": cell_dir,
                "raw_inputs": info.raw_inputs}
        env = worker_env(env_name, options.cache_dir, shim)
        # The worker's own thread pools get the cell's count; so do OpenMP/BLAS pools a library may start.
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                    "OPENBLAS_NUM_THREADS": str(threads)})
        log.info("%s %s %s threads=%d batch=%d", info.name, info.precision,
                 extra.get("provider", extra.get("device", extra["kind"])), threads, batch)
        try:
            done = subprocess.run([str(python), "-m", "edgepipe.bench_worker"], input=json.dumps(spec),
                                  capture_output=True, text=True, timeout=options.timeout_s, env=env, cwd=cell_dir)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"the worker ran past {options.timeout_s:g} s"}
        except OSError as e:
            return {"status": "unavailable", "reason": f"cannot start {python}: {e.strerror or e}"}
    try:
        return json.loads(done.stdout)
    except ValueError:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        return {"status": "failed", "reason": f"the worker ({python}) exited {done.returncode} with no result: "
                                              f"{lines[-1][:300] if lines else 'no output'}"}


def _row(info: ArtifactInfo, ep: str, env: str, threads: int, batch: int, result: dict, precision: str,
         peak: float | None, machine: dict) -> BenchmarkRow:
    """Turn a worker result into a row: percentiles, throughput, device-resident figures, fallback flag and
    roofline share (at the fastest device-resident median for a GPU cell, else at the median latency)."""
    common = dict(model=info.name, precision=precision, ep=ep, threads=threads, batch=batch, artifact=str(info.path),
                  env=env, runtime=result.get("runtime", ""), size_mb=None if ep.startswith("torch") else info.size_mb,
                  gflops=_sig(info.gflops), peak_gflops=_sig(peak), machine=machine,
                  peak_rss_mb=_round(result.get("peak_rss_mb"), 1))
    if result.get("status") != "ok":
        return BenchmarkRow(status=result.get("status", "failed"), reason=result.get("reason", ""), **common)
    latencies = np.asarray(result["latencies_ms"], np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(latencies, [50, 90, 99]))
    device, graph = (float(np.median(result[k])) if result.get(k) else None for k in ("device_ms", "graph_ms"))
    best = min((v for v in (device, graph) if v), default=None)
    achieved = info.gflops * batch / ((best or p50) / 1e3) if info.gflops else None
    nodes = result.get("nodes_by_ep")
    provider = next((t.provider for t in _TARGETS if t.ep == ep), None)
    return BenchmarkRow(
        status="ok", runs=len(latencies), latency_ms_p50=_sig(p50, 5), latency_ms_p90=_sig(p90, 5),
        latency_ms_p99=_sig(p99, 5), latency_ms_mean=_sig(float(latencies.mean()), 5),
        throughput_ips=_sig(batch * 1e3 / p50, 5), device_ms_p50=_sig(device, 5), graph_ms_p50=_sig(graph, 5),
        copy_share=_sig(1 - device / p50 if device else None, 3),
        device_throughput_ips=_sig(batch * 1e3 / best if best else None, 5),
        cached_create_ms=_round(result.get("cached_create_ms"), 1), note=result.get("note", ""),
        gpu_mem_mb=_round(result.get("gpu_mem_mb"), 1),
        rss_before_load_mb=_round(result.get("rss_before_load_mb"), 1),
        import_ms=_round(result.get("import_ms"), 1), session_create_ms=_round(result.get("session_create_ms"), 1),
        first_inference_ms=_round(result.get("first_inference_ms"), 2), nodes_by_ep=nodes or {},
        fallback=None if nodes is None else any(p != provider for p in nodes),
        gflops_per_s=_sig(achieved), peak_share=_sig(achieved / peak if achieved and peak else None),
        **common)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _sig(value: float | None, digits: int = 4) -> float | None:
    """Round to significant digits (GFLOPs span 1e-5 for test graphs to 10 for detectors)."""
    return None if value is None else float(f"{float(value):.{digits}g}")
