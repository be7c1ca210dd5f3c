"""One benchmark cell in a fresh process: `python -m edgepipe.bench_worker` reads a JSON cell spec on stdin and
writes one JSON result on stdout; `run_cell(spec) -> dict` is the same in-process.

Runs in whichever environment provides the cell's execution provider, so it imports only the stdlib and
`edgepipe.runtime` (onnxruntime, numpy, opencv) at the top; the torch baseline imports torch and the zoo itself.
Being a fresh process makes the peak RSS the cell's own and the session creation a true cold start.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path

__all__ = ["run_cell"]

_NVIDIA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_CUDA_GRAPH = {"device_id": "0", "enable_cuda_graph": "1"}


def run_cell(spec: dict) -> dict:
    """Measure one cell.

    Args:
        spec: {"kind": "ort" | "torch" | "opencv-dnn", "artifact", "meta" (the artifact's contract JSON), "image",
            "threads", "batch", "warmup", "runs"}, plus for "ort": "provider", "providers", "strict_ep",
            "profile_dir", and "raw_inputs" ({input: [dims, dtype]}) for a file without a contract; for "torch":
            "model_name", "cache_dir", and "device" ("cpu" or "cuda"), "autocast" (fp16 on CUDA).

    Returns:
        {"status": "ok", "latencies_ms", "import_ms", "session_create_ms", "first_inference_ms",
        "rss_before_load_mb", "runtime", ...}, on a GPU also "device_ms" (inputs and outputs resident there),
        "graph_ms" (CUDA graph), "cached_create_ms" (TensorRT) and a "note" on what could not be measured; or
        {"status": "unavailable" | "failed", "reason"}; "peak_rss_mb" is added by `main`.
    """
    started = time.perf_counter()
    try:
        import numpy as np

        from edgepipe.runtime.preprocess import prepare, read_image
        from edgepipe.runtime.specs import ArtifactMeta
    except ImportError as e:
        return {"status": "unavailable", "reason": f"the runtime does not import in {sys.executable}: {_one_line(e)}"}
    if spec.get("raw_inputs"):  # a file without a contract: seeded random data of its inputs' shapes
        feed = _random_feed(spec["raw_inputs"], int(spec["batch"]))
        return feed if "status" in feed else _run_ort(spec, feed, None, started)
    meta = ArtifactMeta.from_json(spec["meta"])
    image_input, _ = prepare(read_image(spec["image"]), meta.input)  # (1, ...) float32, real pixels
    batch = np.ascontiguousarray(np.repeat(image_input, int(spec["batch"]), axis=0))
    run = {"ort": _run_ort, "torch": _run_torch, "opencv-dnn": _run_opencv}[spec["kind"]]
    return run(spec, batch, meta, started)


def _random_feed(inputs: dict, batch: int) -> dict:
    """Input name -> seeded random array (floats in [0, 1), integers 0-9, False for bools) of its dims, the batch
    axis (None) set to `batch`; a graph whose batch is fixed at another size is a failed cell saying so."""
    import numpy as np

    rng, feed = np.random.default_rng(0), {}
    for name, (dims, dtype) in inputs.items():
        if dims and dims[0] is not None and dims[0] != batch:
            return {"status": "failed", "reason": f"input {name!r} has its batch fixed at {dims[0]}; it cannot run a "
                                                  f"batch of {batch}"}
        shape = [batch if d is None else d for d in dims]
        if dtype.startswith("float"):
            feed[name] = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            feed[name] = rng.integers(0, 10, shape).astype(dtype) if dtype != "bool" else np.zeros(shape, bool)
    return feed


def _run_ort(spec: dict, batch, meta, started: float) -> dict:
    import onnxruntime as ort

    from edgepipe.runtime.providers import captured, explain, not_listed, preload
    from edgepipe.runtime.session import load

    provider = spec["provider"]
    missing = not_listed(provider)
    if missing:
        return {"status": "unavailable", "reason": missing}
    options = ort.SessionOptions()
    options.enable_profiling = True  # for the first run only: end_profiling() below stops it
    options.profile_file_prefix = str(Path(spec["profile_dir"]) / "ort_profile")
    if spec["strict_ep"]:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    import_ms, rss_before = (time.perf_counter() - started) * 1e3, _rss_mb()
    providers = [tuple(p) if isinstance(p, list) else p for p in spec["providers"]]  # JSON made tuples lists
    if meta is None:  # no contract: a plain session on the given feed (`batch` is then {input: array})
        options.intra_op_num_threads, options.log_severity_level = int(spec["threads"]), 3
        feed = batch
    else:
        feed = {meta.input_name: batch}
    t0 = time.perf_counter()
    with captured() as printed:  # onnxruntime says on stderr why a provider dropped out: keep it for the reason
        preload(provider)
        gpu_before = _gpu_used_mb() if provider in _NVIDIA_PROVIDERS else None
        try:
            if meta is None:
                session = ort.InferenceSession(spec["artifact"], sess_options=options, providers=providers)
                infer = lambda: session.run(None, feed)  # noqa: E731
            else:
                model = load(spec["artifact"], providers=providers, intra_op_threads=int(spec["threads"]),
                             session_options=options)
                session, infer = model.session, lambda: model.run(batch)
            error = None
        except Exception as e:  # ArtifactError wrapping onnxruntime's (e.g. strict fallback refused)
            error = e
    if error is not None:
        return {"status": "failed", "reason": _one_line(error)}
    session_ms = (time.perf_counter() - t0) * 1e3
    active = session.get_providers()
    if provider not in active:  # onnxruntime drops a provider that fails to initialise and carries on on CPU
        return {"status": "unavailable", "reason": explain(provider, printed[0])}
    t0 = time.perf_counter()
    try:
        infer()
    except Exception as e:  # a contract-less graph may refuse the made-up data (a shape the model cannot take)
        return {"status": "failed", "reason": _one_line(e)}
    first_ms = (time.perf_counter() - t0) * 1e3
    nodes_by_ep = _nodes_by_provider(Path(session.end_profiling()))
    latencies = _time_runs(infer, int(spec["warmup"]), int(spec["runs"]))
    result = {"status": "ok", "latencies_ms": latencies, "import_ms": import_ms, "session_create_ms": session_ms,
              "first_inference_ms": first_ms, "rss_before_load_mb": rss_before, "nodes_by_ep": nodes_by_ep,
              "providers": active, "runtime": f"onnxruntime {ort.__version__}"}
    if provider in _NVIDIA_PROVIDERS:
        used = _gpu_used_mb()  # after the timed runs: onnxruntime's arena keeps its high-water mark
        result["gpu_mem_mb"] = used - gpu_before if used is not None and gpu_before is not None else None
        result.update(_on_the_gpu(spec, session, feed, providers, int(spec["threads"])))
    return result


def _gpu_used_mb() -> float | None:
    """Memory in use on GPU 0 (total - free, MiB) by the CUDA runtime's count, None where it does not load. Read
    before the session (after the CUDA context exists) and after the runs, the difference is the session's."""
    import ctypes

    try:
        from onnxruntime.capi import build_and_package_info as build

        cudart = ctypes.CDLL(f"libcudart.so.{(getattr(build, 'cuda_version', '') or '13').split('.')[0]}")
    except (ImportError, OSError):
        return None
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    if cudart.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
        return None
    return (total.value - free.value) / 2**20


def _on_the_gpu(spec: dict, session, feed: dict, providers: list, threads: int) -> dict:
    """A GPU cell's device-resident figures: the same session with its inputs and outputs on the GPU (I/O binding),
    for CUDA the same again replayed as a CUDA graph (a session of its own), for TensorRT a second session's start
    from the engine cache. What cannot be measured becomes the cell's note, not a failure."""
    import onnxruntime as ort

    warmup, runs, found, notes = int(spec["warmup"]), int(spec["runs"]), {}, []
    if session.get_inputs()[0].shape[0] == 1 and len(next(iter(feed.values()))) > 1:
        return {"note": "no device-resident timing: the graph's batch is fixed at 1"}
    # the output buffers' shapes and types, from a plain run: a CUDA-graph session must never run unbound
    outputs = dict(zip((o.name for o in session.get_outputs()), session.run(None, feed)))
    try:
        found["device_ms"] = device_runs(session, feed, outputs, "cuda", warmup, runs)
    except Exception as e:  # onnxruntime's untyped errors
        notes.append(f"I/O binding: {_one_line(e)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    if spec["provider"] == "CUDAExecutionProvider":
        try:
            graph = ort.InferenceSession(spec["artifact"], sess_options=options,
                                         providers=[("CUDAExecutionProvider", _CUDA_GRAPH)])
            found["graph_ms"] = device_runs(graph, feed, outputs, "cuda", warmup, runs)
        except Exception as e:  # a graph with CPU nodes or shape-dependent control flow cannot be captured
            notes.append(f"CUDA graph: {_one_line(e)}")
    else:
        try:
            t0 = time.perf_counter()
            ort.InferenceSession(spec["artifact"], sess_options=options, providers=providers)
            found["cached_create_ms"] = (time.perf_counter() - t0) * 1e3
        except Exception as e:  # onnxruntime's untyped errors
            notes.append(f"second session from the engine cache: {_one_line(e)}")
    return {**found, "note": "; ".join(notes)}


def device_runs(session, feed: dict, outputs: dict, device: str, warmup: int, runs: int) -> list[float]:
    """Latencies (ms) of `session` with its inputs and outputs resident on `device` ("cuda", or "cpu" where
    there is none): the inputs are copied there once and the outputs go to buffers allocated there once, shaped
    like `outputs` (name -> an array of a plain run), so a timed run moves nothing between host and device; the
    fixed addresses also let a CUDA-graph session replay its capture."""
    import numpy as np
    import onnxruntime as ort

    binding, keep = session.io_binding(), []  # keep: the OrtValues must outlive the binding's use of them
    for name, array in feed.items():
        keep.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, 0))
        binding.bind_ortvalue_input(name, keep[-1])
    for name, array in outputs.items():
        keep.append(ort.OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype, device, 0))
        binding.bind_ortvalue_output(name, keep[-1])
    return _time_runs(lambda: session.run_with_iobinding(binding), warmup, runs)


def _run_torch(spec: dict, batch, meta, started: float) -> dict:
    import torch

    from edgepipe.models import build

    device = spec.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        return {"status": "unavailable", "runtime": f"torch {torch.__version__}",
                "reason": f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)"}
    torch.set_num_threads(int(spec["threads"]))
    import_ms, rss_before = (time.perf_counter() - started) * 1e3, _rss_mb()
    t0 = time.perf_counter()
    module = build(spec["model_name"], cache_dir=Path(spec["cache_dir"]) if spec.get("cache_dir") else None)
    module = module.to(device)
    session_ms = (time.perf_counter() - t0) * 1e3
    host = torch.from_numpy(batch)
    resident = host.to(device)
    autocast = torch.autocast("cuda", dtype=torch.float16) if spec.get("autocast") else contextlib.nullcontext()

    def with_copies():  # numpy in, numpy out: what a caller of the eager model gets
        with autocast:
            return [t.cpu() for t in _tensors(module(host.to(device)))]

    def on_device():
        with autocast:
            module(resident)
        torch.cuda.synchronize()

    with torch.inference_mode():
        t0 = time.perf_counter()
        with_copies()
        first_ms = (time.perf_counter() - t0) * 1e3
        latencies = _time_runs(with_copies, int(spec["warmup"]), int(spec["runs"]))
        device_ms = _time_runs(on_device, int(spec["warmup"]), int(spec["runs"])) if device == "cuda" else None
    gpu = {"device_ms": device_ms, "gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20} if device_ms else {}
    return {"status": "ok", "latencies_ms": latencies, "import_ms": import_ms, "session_create_ms": session_ms,
            "first_inference_ms": first_ms, "rss_before_load_mb": rss_before, "runtime": f"torch {torch.__version__}",
            **gpu}


def _tensors(output) -> list:
    """A model's output (a tensor, or tuples and lists of them) as a flat list of tensors."""
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return [output]


def _run_opencv(spec: dict, batch, meta, started: float) -> dict:
    import cv2

    cv2.setNumThreads(int(spec["threads"]))
    import_ms, rss_before = (time.perf_counter() - started) * 1e3, _rss_mb()
    runtime = f"opencv {cv2.__version__}"
    t0 = time.perf_counter()
    try:
        net = cv2.dnn.readNetFromONNX(str(spec["artifact"]))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        session_ms = (time.perf_counter() - t0) * 1e3
        names = net.getUnconnectedOutLayersNames()

        def infer():
            net.setInput(batch)
            return net.forward(names)

        t0 = time.perf_counter()
        infer()
        first_ms = (time.perf_counter() - t0) * 1e3
    except cv2.error as e:  # OpenCV cannot parse or run the graph: its own message, on one line
        return {"status": "failed", "reason": f"OpenCV DNN: {_opencv_reason(e)}", "runtime": runtime}
    latencies = _time_runs(infer, int(spec["warmup"]), int(spec["runs"]))
    return {"status": "ok", "latencies_ms": latencies, "import_ms": import_ms, "session_create_ms": session_ms,
            "first_inference_ms": first_ms, "rss_before_load_mb": rss_before, "runtime": runtime}


def _time_runs(infer, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        infer()
    latencies = []
    for _ in range(runs):
        t0 = time.perf_counter()
        infer()
        latencies.append((time.perf_counter() - t0) * 1e3)
    return latencies


def _nodes_by_provider(profile: Path) -> dict[str, int]:
    """Provider -> number of distinct graph nodes it ran, from an onnxruntime profile (a fused EP subgraph is one)."""
    try:
        events = json.loads(profile.read_text())
    finally:
        profile.unlink(missing_ok=True)
    nodes: dict[str, set[str]] = {}
    for event in events:
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider:
            nodes.setdefault(provider, set()).add(event["name"].removesuffix("_kernel_time"))
    return {provider: len(names) for provider, names in sorted(nodes.items())}


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's getrusage ru_maxrss carries the parent's peak over fork + exec, so a worker started by a big parent
    would report the parent's figure; VmHWM is the high-water mark of this process's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (bytes on macOS)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def _opencv_reason(error: BaseException) -> str:
    """OpenCV's message is 'OpenCV(v) file:line: error: (code) detail in function ...'; keep the detail."""
    text = " ".join(str(error).split())
    return text.split(" error: ", 1)[-1][:300]


def main() -> int:
    """Read the spec on stdin, write the result on stdout; stdout is redirected to stderr meanwhile, so that
    libraries printing (onnxruntime, OpenVINO, torch) cannot corrupt the answer."""
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        result = run_cell(json.loads(sys.stdin.read()))
    except Exception as e:  # the cell failed: report it as data, the parent decides what to do
        result = {"status": "failed", "reason": _one_line(e)}
    result["peak_rss_mb"] = _rss_mb()
    with os.fdopen(answer_fd, "w") as out:
        out.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
