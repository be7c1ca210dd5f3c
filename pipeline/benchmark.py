"""Latency, memory and roofline share of artifacts per execution provider x threads x batch, each cell in a fresh
worker process of the environment that provides its provider: `benchmark(artifacts, options) -> list[BenchmarkRow]`.

Baselines on the same input: PyTorch eager on the source model and OpenCV DNN on the fp32 file. The older
in-process timings (`time_face_pipeline`, `time_detector`, `machine_info`) live in `edgepipe.timing`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgepipe.envs import MAIN_ENV, env_python, probe_env
from edgepipe.errors import BenchmarkError
from edgepipe.flops import count_flops, cpu_peak_gflops
from edgepipe.runtime.atomic import scratch_dir
from edgepipe.runtime.preprocess import read_image
from edgepipe.runtime.session import METADATA_KEY, read_contract
from edgepipe.runtime.specs import ArtifactMeta, Layout
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
        if self.peak_gflops_per_core is not None and not self.peak_gflops_per_core > 0:
            raise BenchmarkError(f"peak_gflops_per_core must be > 0, got {self.peak_gflops_per_core!r}")


@dataclass(frozen=True)
class BenchmarkRow:
    """One measured (or unmeasurable) cell: an artifact on a provider (or a baseline) at a thread count and batch."""

    model: str  # zoo key
    precision: str  # fp32, fp16, int8, int8-dynamic
    ep: str  # cpu, openvino, cuda, tensorrt, or the baselines torch, opencv-dnn
    threads: int
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
    peak_rss_mb: float | None = None  # the worker's peak resident memory (interpreter and imports included)
    rss_before_load_mb: float | None = None  # the same just before the model was loaded
    import_ms: float | None = None  # runtime imports in the fresh worker
    session_create_ms: float | None = None  # model load + compile (TensorRT: engine build or cache load)
    first_inference_ms: float | None = None  # the first, cold run
    size_mb: float | None = None  # artifact file size
    nodes_by_ep: dict = field(default_factory=dict)  # onnxruntime provider -> graph nodes it ran (profiled)
    fallback: bool | None = None  # some nodes ran on a provider other than the requested one
    gflops: float | None = None  # per image, from the graph
    gflops_per_s: float | None = None  # achieved at the median latency
    peak_gflops: float | None = None  # fp32 peak of the cores this cell could use
    peak_share: float | None = None  # gflops_per_s / peak_gflops
    machine: dict = field(default_factory=dict)  # machine_info() plus the peak formula

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _ArtifactInfo:
    path: Path
    meta: ArtifactMeta | None  # None: a file without a contract, timed on random inputs made from its graph
    meta_json: str
    size_mb: float
    gflops: float | None
    name: str  # the row's model: the contract's name, or the file's stem
    precision: str
    raw_inputs: dict[str, tuple[list, str]] | None = None  # contract-less: input -> (dims, None = batch; dtype)


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
    paths = [Path(p) for p in artifacts]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise BenchmarkError(f"no such artifact file(s): {', '.join(missing)}" if missing else "no artifacts given")
    cache_dir = Path(options.cache_dir or default_cache_dir())
    image = _input_image(options, cache_dir)
    infos = [_artifact_info(p, options.shapes) for p in paths]
    per_core, formula = ((options.peak_gflops_per_core, "given") if options.peak_gflops_per_core
                         else cpu_peak_gflops())
    machine = {**machine_info(), "peak_gflops_per_core": per_core, "peak_formula": formula}
    probes: dict[str, dict] = {}
    torch_done: set[str] = set()
    rows = []
    with scratch_dir("bench") as tmp:
        shim = import_shim(tmp)
        for info in infos:
            for target in (t for t in _TARGETS if t.ep in options.eps):
                probe = probes.setdefault(target.env, probe_env(target.env, cache_dir))
                for threads in options.threads:
                    for batch in options.batch:
                        spec = {"kind": "ort", "provider": target.provider, "strict_ep": options.strict_ep,
                                "providers": _providers(target.ep, threads, batch, info, cache_dir)}
                        result = ({"status": "unavailable", "reason": probe["reason"]} if probe["reason"]
                                  else _run_worker(Path(probe["python"]), spec, info, image, threads, batch,
                                                   options, shim))
                        rows.append(_row(info, target.ep, target.env, threads, batch, result, per_core, machine))
            if not options.baselines or info.meta is None:  # baselines rebuild a zoo model: contracts only
                continue
            kinds = (["opencv-dnn"] if info.precision == "fp32" else [])
            kinds += ["torch"] if info.name not in torch_done else []
            torch_done.add(info.name)
            for kind in kinds:
                for threads in options.threads:
                    for batch in options.batch:
                        spec = {"kind": kind, "model_name": info.name, "cache_dir": str(cache_dir)}
                        result = _run_worker(env_python(_BASELINE_ENV), spec, info, image, threads, batch, options,
                                             shim)
                        rows.append(_row(info, kind, _BASELINE_ENV, threads, batch, result, per_core, machine))
    return rows


def _input_image(options: BenchOptions, cache_dir: Path) -> Path:
    if options.image is not None:
        read_image(options.image)  # InputError now, in one line, rather than every cell failing on it
        return Path(options.image)
    from edgepipe.samples import sample_images

    return sample_images(cache_dir)[0]


def _artifact_info(path: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> _ArtifactInfo:
    """Contract, size and per-image GFLOPs of an artifact, read once in this process; for a file without a
    contract, its inputs' shapes and dtypes instead (dynamic dims from `shapes`)."""
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise BenchmarkError(f"{path}: not a loadable ONNX file ({type(e).__name__})") from e
    props = {p.key: p.value for p in proto.metadata_props}
    size_mb = round(path.stat().st_size / 1e6, 3)
    if METADATA_KEY not in props:
        raw = _raw_inputs(proto, path, shapes or {})
        for value in proto.graph.input:  # counted at the shapes it will run at, batch 1
            for dim, size in zip(value.type.tensor_type.shape.dim, raw.get(value.name, ((),))[0]):
                dim.dim_value = size or 1
        quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type.endswith("Integer")
                        for n in proto.graph.node)
        return _ArtifactInfo(path, None, "", size_mb, _gflops(proto, path), path.stem,
                             "int8" if quantized else "fp32", raw)
    meta = read_contract(props, path)
    return _ArtifactInfo(path, meta, props[METADATA_KEY], size_mb, _gflops(proto, path), meta.model_name,
                         meta.precision.value)


def _gflops(proto: onnx.ModelProto, path: Path) -> float | None:
    try:
        return count_flops(proto, batch=1) / 1e9
    except BenchmarkError as e:
        log.warning("%s: FLOPs not counted: %s", path.name, e)
        return None


_ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
                onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8", onnx.TensorProto.INT32: "int32",
                onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool"}


def _raw_inputs(proto: onnx.ModelProto, path: Path, shapes: dict[str, tuple[int, ...]]) -> dict:
    """Input name -> (dims with None for the batch axis when the graph leaves it dynamic, dtype); every other
    dynamic dim must come from `shapes` (--shape NAME:1x3x640x640), or this is one line naming it."""
    weights = {init.name for init in proto.graph.initializer}
    inputs = {}
    unknown = sorted(set(shapes) - {i.name for i in proto.graph.input})
    if unknown:
        raise BenchmarkError(f"{path}: --shape names {unknown}, not inputs of this graph")
    for value in (i for i in proto.graph.input if i.name not in weights):
        kind = value.type.tensor_type.elem_type
        if kind not in _ONNX_DTYPES:
            raise BenchmarkError(f"{path}: input {value.name!r} is of ONNX type "
                                 f"{onnx.TensorProto.DataType.Name(kind)}, which bench cannot make data for")
        graph_dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        dims = list(shapes.get(value.name, graph_dims))
        if value.name in shapes and len(dims) != len(graph_dims):
            raise BenchmarkError(f"{path}: --shape gives {value.name!r} {len(dims)} dims, the graph has "
                                 f"{len(graph_dims)}")
        if dims and graph_dims and graph_dims[0] is None:
            dims[0] = None  # the batch axis: each cell's --batch
        if None in dims[1:]:
            shown = "x".join("?" if d is None else str(d) for d in graph_dims)
            raise BenchmarkError(f"{path}: has no edgepipe contract and input {value.name!r} has dynamic dims "
                                 f"({shown}); give them with --shape {value.name}:" +
                                 "x".join("1" if d is None and i == 0 else "N" if d is None else str(d)
                                          for i, d in enumerate(graph_dims)))
        inputs[value.name] = (dims, _ONNX_DTYPES[kind])
    return inputs


def _providers(ep: str, threads: int, batch: int, info: _ArtifactInfo, cache_dir: Path) -> list:
    """The onnxruntime providers argument of a cell; only the requested provider (CPU is onnxruntime's implicit
    fallback, which the profile then shows)."""
    if ep == "cpu":
        return ["CPUExecutionProvider"]
    if ep == "openvino":
        return [("OpenVINOExecutionProvider", {"device_type": "CPU", "num_of_threads": str(threads)})]
    if ep == "cuda":
        return [("CUDAExecutionProvider", {"device_id": "0"})]
    if info.meta is None:
        shape = ",".join(f"{name}:{'x'.join(str(batch if d is None else d) for d in dims)}"
                         for name, (dims, _) in info.raw_inputs.items())
    else:
        c, h, w = info.meta.input.shape_chw
        dims = (batch, c, h, w) if info.meta.input.layout == Layout.NCHW else (batch, h, w, c)
        shape = f"{info.meta.input_name}:{'x'.join(map(str, dims))}"
    # One fixed profile per batch, so the engine is built (or loaded from the cache) at session creation.
    return [("TensorrtExecutionProvider", {
        "device_id": "0", "trt_engine_cache_enable": "True", "trt_timing_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir / "trt_engines"), "trt_timing_cache_path": str(cache_dir / "trt_engines"),
        "trt_fp16_enable": str(info.precision == "fp16"),
        "trt_profile_min_shapes": shape, "trt_profile_opt_shapes": shape, "trt_profile_max_shapes": shape,
    })]


def import_shim(tmp: Path) -> Path:
    """A folder holding only our package, as links: the worker's PYTHONPATH, so that another environment
    imports edgepipe's code but never this environment's site-packages. The package is rebuilt as a folder of
    links because an editable install maps `edgepipe.models` to a folder outside `edgepipe`'s own."""
    import edgepipe

    shim = tmp / "pythonpath"
    package = shim / "edgepipe"
    package.mkdir(parents=True)
    for entry in Path(edgepipe.__file__).parent.iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    for sub in ("models", "apps"):
        found = importlib.util.find_spec(f"edgepipe.{sub}")  # locates without executing (models imports torch)
        if found is not None and found.submodule_search_locations and not (package / sub).exists():
            (package / sub).symlink_to(Path(list(found.submodule_search_locations)[0]), target_is_directory=True)
    return shim


def _run_worker(python: Path, extra: dict, info: _ArtifactInfo, image: Path, threads: int, batch: int,
                options: BenchOptions, shim: Path) -> dict:
    """Run one cell in a fresh worker process; every failure comes back as a result dict, never raised."""
    with tempfile.TemporaryDirectory(prefix="cell-", dir=shim.parent) as cell_dir:
        spec = {**extra, "artifact": str(info.path), "meta": info.meta_json, "image": str(image), "threads": threads,
                "batch": batch, "warmup": options.warmup, "runs": options.runs, "profile_dir": cell_dir,
                "raw_inputs": info.raw_inputs}
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
        # The worker's own thread pools get the cell's count; so do OpenMP/BLAS pools a library may start.
        env.update({"PYTHONPATH": str(shim), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                    "OPENBLAS_NUM_THREADS": str(threads)})
        log.info("%s %s %s threads=%d batch=%d", info.name, info.precision,
                 extra.get("provider", extra["kind"]), threads, batch)
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


def _row(info: _ArtifactInfo, ep: str, env: str, threads: int, batch: int, result: dict, per_core: float | None,
         machine: dict) -> BenchmarkRow:
    """Turn a worker result into a row: percentiles, throughput, fallback flag and roofline share."""
    peak = per_core * min(threads, machine.get("cores") or threads) if per_core else None
    common = dict(model=info.name, precision="fp32" if ep == "torch" else info.precision,
                  ep=ep, threads=threads, batch=batch, artifact=str(info.path), env=env,
                  runtime=result.get("runtime", ""), size_mb=None if ep == "torch" else info.size_mb,
                  gflops=_sig(info.gflops), peak_gflops=_sig(peak), machine=machine,
                  peak_rss_mb=_round(result.get("peak_rss_mb"), 1))
    if result.get("status") != "ok":
        return BenchmarkRow(status=result.get("status", "failed"), reason=result.get("reason", ""), **common)
    latencies = np.asarray(result["latencies_ms"], np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(latencies, [50, 90, 99]))
    achieved = info.gflops * batch / (p50 / 1e3) if info.gflops else None
    nodes = result.get("nodes_by_ep")
    provider = next((t.provider for t in _TARGETS if t.ep == ep), None)
    return BenchmarkRow(
        status="ok", runs=len(latencies), latency_ms_p50=_sig(p50, 5), latency_ms_p90=_sig(p90, 5),
        latency_ms_p99=_sig(p99, 5), latency_ms_mean=_sig(float(latencies.mean()), 5),
        throughput_ips=_sig(batch * 1e3 / p50, 5), rss_before_load_mb=_round(result.get("rss_before_load_mb"), 1),
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
