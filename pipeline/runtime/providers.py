"""Which onnxruntime execution providers really run in this interpreter, and in one line why one does not.

onnxruntime lists a provider as available when its build has it, not when it can run: onnxruntime-gpu on a host
without a GPU lists TensorRT and CUDA, then drops them at session creation, prints why to stderr and carries on on
the CPU. `check(provider)` opens a one-node session on the provider and reads `get_providers()`; `explain` turns
what onnxruntime and its library preloading printed into that one line; `probe(providers)` does both for several
and adds the CUDA and cuDNN versions the loaded libraries report; `session_providers(device)` is the providers
argument `load(path, device=...)` passes, TensorRT's engine and timing caches under the cache root included.

This file imports only the standard library at the top and onnxruntime inside its functions, so `edgepipe.envs`
can run its source (`python -c SOURCE PROVIDER...`, which prints `probe`'s answer as one JSON line) in another
environment's interpreter, where nothing of ours is importable.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import glob
import json
import os
import re
import sys
import tempfile
from pathlib import Path

__all__ = ["DEVICES", "captured", "check", "explain", "not_listed", "preload", "probe", "session_providers"]

DEVICES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
           "openvino": "OpenVINOExecutionProvider"}
NVIDIA = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
TENSORRT_LIBRARY = "libnvinfer.so.10"  # what onnxruntime-gpu 1.2x-1.31's TensorRT provider library links
TENSORRT_HOW = ("install TensorRT 10: `edgepipe env create gpu --tensorrt` on a host that reaches pypi.nvidia.com, "
                "or NVIDIA's TensorRT 10 tar/deb with its lib folder on LD_LIBRARY_PATH")
# One Relu on a float[1] (ONNX IR 7, opset 13), so no onnx package is needed where this runs; a test rebuilds it.
PROBE_MODEL = base64.b64decode("CAcSCGVkZ2VwaXBlOjcKDAoBeBIBeSIEUmVsdRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQK"
                               "AggBQgQKABAN")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_REASON = 600


@contextlib.contextmanager
def captured():
    """Collect what this process writes to its stdout and stderr file descriptors meanwhile (onnxruntime's C++ log,
    its Python prints) instead of letting it reach the terminal; the text, ANSI colours removed, is the yielded
    list's one item on exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, text = (os.dup(1), os.dup(2)), []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, target in zip(saved, (1, 2)):
                os.dup2(fd, target)
                os.close(fd)
            sink.seek(0)
            text.append(_ANSI.sub("", sink.read().decode(errors="replace")))


def preload(provider: str) -> None:
    """Load what an NVIDIA provider links before onnxruntime looks for it: CUDA and cuDNN from the nvidia-* pip
    packages (onnxruntime's `preload_dlls`, which prints a line per library it cannot load) and, for TensorRT,
    the libraries of a `tensorrt_libs` pip package; nothing for other providers."""
    if provider not in NVIDIA:
        return
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):
            ort.preload_dlls()
    if provider == "TensorrtExecutionProvider":
        for folder in sys.path:  # libnvinfer.so.10 sorts before the parser and plugin libraries that need it
            for library in sorted(glob.glob(os.path.join(folder, "tensorrt_libs", "lib*.so*"))):
                with contextlib.suppress(OSError):
                    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)


def check(provider: str, options: dict | None = None) -> str:
    """"" when a one-node session on `provider` keeps it, else one line saying why not (`explain`)."""
    import onnxruntime as ort

    missing = not_listed(provider)
    if missing:
        return missing
    error = None
    with captured() as text:
        preload(provider)
        try:
            active = ort.InferenceSession(PROBE_MODEL, providers=[(provider, options or {})]).get_providers()
        except Exception as e:  # onnxruntime's own untyped errors (a bad provider option, a broken library)
            active, error = [], e
    return "" if provider in active else explain(provider, text[0], error)


def not_listed(provider: str) -> str:
    """"" when this onnxruntime build has `provider`, else one line naming the build and what it has."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider in available:
        return ""
    build = {"CUDAExecutionProvider": "onnxruntime-gpu", "TensorrtExecutionProvider": "onnxruntime-gpu",
             "OpenVINOExecutionProvider": "onnxruntime-openvino"}.get(provider)
    return (f"{provider} is not among onnxruntime {ort.__version__}'s providers {available} (in {sys.executable})"
            + (f"; it comes with {build} (`edgepipe env create`)" if build else ""))


def explain(provider: str, printed: str, error: BaseException | None = None) -> str:
    """Why `provider` did not make it into a session, from what onnxruntime printed while creating it (and the
    exception, if it raised): the missing driver or library first, then onnxruntime's own words, on one line."""
    lines = [line.strip() for line in printed.splitlines() if line.strip()]
    causes = []
    if provider in NVIDIA and not _loads("libcuda.so.1"):
        causes.append("no NVIDIA driver on this host (libcuda.so.1 does not load)")
    if provider == "TensorrtExecutionProvider" and not _loads(TENSORRT_LIBRARY):
        causes.append(f"TensorRT is not installed ({TENSORRT_LIBRARY} does not load): {TENSORRT_HOW}")
    for line in lines:
        preloading = re.match(r"Failed to load (\S+?): (?:\1: )?(.+)", line)  # onnxruntime.preload_dlls' print
        if preloading:
            causes.append(f"{preloading[1]} does not load ({preloading[2].rstrip('.')})")
            break
    for line in lines:
        library = re.search(r"Failed to load library (\S+) with error: (.+)", line)
        if library:
            causes.append(f"{os.path.basename(library[1])} does not load: {library[2].rstrip('.')}")
            break
    said = next((line.split("] ", 1)[-1] for line in lines if "Failed to create" in line), None)
    if said:
        causes.append("onnxruntime: " + said.split(" Please install")[0].rstrip("."))
    if error is not None:
        causes.append(f"{type(error).__name__}: {' '.join(str(error).split())[:200]}")
    if not causes:
        causes.append(f"onnxruntime dropped it at session creation: {lines[-1][:200] if lines else 'no message'}")
    return f"{provider} does not run here: {'; '.join(causes)}"[:_MAX_REASON]


def probe(providers: list[str]) -> dict:
    """onnxruntime's version and listed providers, `usable` (provider -> "" or why not, from `check`), the CUDA
    version a GPU build targets and, for one, the CUDA driver, runtime and cuDNN versions their libraries report."""
    import onnxruntime as ort

    usable = {provider: check(provider) for provider in providers}
    try:
        from onnxruntime.capi import build_and_package_info as build
    except ImportError:
        build = None
    cuda = getattr(build, "cuda_version", None) or None
    versions = library_versions(cuda) if cuda else dict.fromkeys(("cuda_driver", "cuda_runtime", "cudnn"))
    return {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(), "usable": usable,
            "cuda_build": cuda, **versions}


def library_versions(cuda_build: str | None = None) -> dict:
    """The CUDA driver's, CUDA runtime's and cuDNN's versions as their libraries report them (None where one does
    not load), e.g. {"cuda_driver": "13.0", "cuda_runtime": "13.0", "cudnn": "9.10.2"}."""
    major = (cuda_build or "13").split(".")[0]

    def call(library: str, function: str) -> int | None:
        try:
            lib = ctypes.CDLL(library)
        except OSError:
            return None
        if function == "cudnnGetVersion":
            getattr(lib, function).restype = ctypes.c_size_t
            return int(getattr(lib, function)())
        value = ctypes.c_int()
        return value.value if getattr(lib, function)(ctypes.byref(value)) == 0 else None

    def cuda(value: int | None) -> str | None:
        return None if value is None else f"{value // 1000}.{value % 1000 // 10}"

    cudnn = call("libcudnn.so.9", "cudnnGetVersion")
    return {"cuda_driver": cuda(call("libcuda.so.1", "cuDriverGetVersion")),
            "cuda_runtime": cuda(call(f"libcudart.so.{major}", "cudaRuntimeGetVersion")),
            "cudnn": None if cudnn is None else f"{cudnn // 10000}.{cudnn % 10000 // 100}.{cudnn % 100}"}


def session_providers(device: str, *, threads: int = 0, fp16: bool = False, int8: bool = False,
                      cache_dir: str | Path | None = None, gpu: str = "gpu0") -> list:
    """The onnxruntime providers argument for `device` (cpu, cuda, tensorrt or openvino). TensorRT keeps its
    engines and timing cache under `CACHE/tensorrt/GPU/` (onnxruntime names each engine by the graph and its
    shapes; the folder keys the GPU), with CUDA behind it for what TensorRT does not take."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "openvino":
        return [("OpenVINOExecutionProvider", {"device_type": "CPU", **({"num_of_threads": str(threads)}
                                                                         if threads else {})})]
    cuda = ("CUDAExecutionProvider", {"device_id": "0"})
    if device == "cuda":
        return [cuda]
    root = Path(cache_dir or os.environ.get("EDGEPIPE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME")
                                                                    or Path.home() / ".cache") / "edgepipe")
    folder = str(root.expanduser() / "tensorrt" / re.sub(r"[^A-Za-z0-9_.-]+", "_", gpu))
    return [("TensorrtExecutionProvider", {
        "device_id": "0", "trt_engine_cache_enable": "True", "trt_engine_cache_path": folder,
        "trt_timing_cache_enable": "True", "trt_timing_cache_path": folder,
        "trt_fp16_enable": str(fp16), "trt_int8_enable": str(int8)}), cuda]


def _loads(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


if __name__ == "__main__":  # python -c "$(cat providers.py)" PROVIDER ...: onnxruntime's prints stay out of the answer
    with captured() as _noise:
        _answer = probe(sys.argv[1:])
    print(json.dumps(_answer))
