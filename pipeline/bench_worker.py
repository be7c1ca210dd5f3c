"""One benchmark cell in a fresh process: `python -m edgepipe.bench_worker` reads a JSON cell spec on stdin and
writes one JSON result on stdout; `run_cell(spec) -> dict` is the same in-process.

Runs in whichever environment provides the cell's execution provider, so it imports only the stdlib and
`edgepipe.runtime` (onnxruntime, numpy, opencv) at the top; the torch baseline imports torch and the zoo itself.
Being a fresh process makes the peak RSS the cell's own and the session creation a true cold start.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import time
from pathlib import Path

__all__ = ["run_cell"]

_NVIDIA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def run_cell(spec: dict) -> dict:
    """Measure one cell.

    Args:
        spec: {"kind": "ort" | "torch" | "opencv-dnn", "artifact", "meta" (the artifact's contract JSON), "image",
            "threads", "batch", "warmup", "runs"}, plus for "ort": "provider", "providers", "strict_ep",
            "profile_dir", and "raw_inputs" ({input: [dims, dtype]}) for a file without a contract; for "torch":
            "model_name", "cache_dir".

    Returns:
        {"status": "ok", "latencies_ms", "import_ms", "session_create_ms", "first_inference_ms",
        "rss_before_load_mb", "runtime", ...} or {"status": "unavailable" | "failed", "reason"}; "peak_rss_mb"
        is added by `main`.
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

    from edgepipe.runtime.session import load

    provider = spec["provider"]
    if provider in _NVIDIA_PROVIDERS:
        if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* pip packages of this env
            try:
                ort.preload_dlls()
            except Exception:  # a missing library is reported below as the provider's absence
                pass
        try:
            ctypes.CDLL("libcuda.so.1")
        except OSError:
            return {"status": "unavailable", "reason": f"{provider}: no NVIDIA driver on this host (libcuda.so.1 "
                                                       "does not load)"}
    available = ort.get_available_providers()
    if provider not in available:
        return {"status": "unavailable", "reason": f"{provider} is not among onnxruntime {ort.__version__}'s "
                                                   f"providers {available} in {sys.executable}"}
    options = ort.SessionOptions()
    options.enable_profiling = True  # for the first run only: end_profiling() below stops it
    options.profile_file_prefix = str(Path(spec["profile_dir"]) / "ort_profile")
    if spec["strict_ep"]:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    import_ms, rss_before = (time.perf_counter() - started) * 1e3, _rss_mb()
    t0 = time.perf_counter()
    try:
        providers = [tuple(p) if isinstance(p, list) else p for p in spec["providers"]]  # JSON made tuples lists
        if meta is None:  # no contract: a plain session on the given feed (`batch` is then {input: array})
            options.intra_op_num_threads, options.log_severity_level = int(spec["threads"]), 3
            session = ort.InferenceSession(spec["artifact"], sess_options=options, providers=providers)
            infer = lambda: session.run(None, batch)  # noqa: E731
        else:
            model = load(spec["artifact"], providers=providers, intra_op_threads=int(spec["threads"]),
                         session_options=options)
            session, infer = model.session, lambda: model.run(batch)
    except Exception as e:  # ArtifactError wrapping onnxruntime's (e.g. strict fallback refused)
        return {"status": "failed", "reason": _one_line(e)}
    session_ms = (time.perf_counter() - t0) * 1e3
    active = session.get_providers()
    if provider not in active:  # onnxruntime drops a provider that fails to initialise and carries on on CPU
        return {"status": "unavailable", "reason": f"{provider} failed to initialise; the session runs on {active}"}
    t0 = time.perf_counter()
    try:
        infer()
    except Exception as e:  # a contract-less graph may refuse the made-up data (a shape the model cannot take)
        return {"status": "failed", "reason": _one_line(e)}
    first_ms = (time.perf_counter() - t0) * 1e3
    nodes_by_ep = _nodes_by_provider(Path(session.end_profiling()))
    latencies = _time_runs(infer, int(spec["warmup"]), int(spec["runs"]))
    return {"status": "ok", "latencies_ms": latencies, "import_ms": import_ms, "session_create_ms": session_ms,
            "first_inference_ms": first_ms, "rss_before_load_mb": rss_before, "nodes_by_ep": nodes_by_ep,
            "providers": active, "runtime": f"onnxruntime {ort.__version__}"}


def _run_torch(spec: dict, batch, meta, started: float) -> dict:
    import torch

    from edgepipe.models import build

    torch.set_num_threads(int(spec["threads"]))
    import_ms, rss_before = (time.perf_counter() - started) * 1e3, _rss_mb()
    t0 = time.perf_counter()
    module = build(spec["model_name"], cache_dir=Path(spec["cache_dir"]) if spec.get("cache_dir") else None)
    session_ms = (time.perf_counter() - t0) * 1e3
    x = torch.from_numpy(batch)
    with torch.inference_mode():
        t0 = time.perf_counter()
        module(x)
        first_ms = (time.perf_counter() - t0) * 1e3
        latencies = _time_runs(lambda: module(x), int(spec["warmup"]), int(spec["runs"]))
    return {"status": "ok", "latencies_ms": latencies, "import_ms": import_ms, "session_create_ms": session_ms,
            "first_inference_ms": first_ms, "rss_before_load_mb": rss_before, "runtime": f"torch {torch.__version__}"}


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
