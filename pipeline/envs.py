"""Runtime environments for what cannot share one Python environment with edgepipe: execution providers whose
onnxruntime builds replace the `onnxruntime` module, and face_recognition (dlib), the peer `faces bench` times.
`create_env(name, cache_dir)` builds one, `env_python(name, cache_dir)` finds its interpreter and
`probe_env(name, cache_dir)` asks it what it has (its onnxruntime's providers, or its packages' versions).

"main" is the interpreter running edgepipe (onnxruntime with the CPU provider); the managed ones are venvs under
`CACHE/envs/NAME` built from the pinned requirements below, created only on an explicit `create_env` call.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgepipe.errors import BenchmarkError
from edgepipe.sources import default_cache_dir

__all__ = ["clean_env", "create_env", "env_python", "probe_env"]

log = logging.getLogger(__name__)

MAIN_ENV = "main"
# env name -> pip requirements. The bench worker needs onnxruntime (one build), numpy and opencv in each EP env.
_REQUIREMENTS = {
    "openvino": ("onnxruntime-openvino==1.24.1", "numpy", "opencv-python-headless"),
    # cuda/cudnn extras bring the CUDA 12 and cuDNN 9 libraries as pip packages; TensorRT needs its own libraries.
    "gpu": ("onnxruntime-gpu[cuda,cudnn]==1.31.1", "numpy", "opencv-python-headless"),
    # face_recognition's own requirement is `dlib`, a source build; dlib-bin is the same library prebuilt, so
    # face_recognition itself goes in after it without its dependencies (_NO_DEPS). Its models package imports
    # pkg_resources, which setuptools 81 dropped.
    "face_recognition": ("dlib-bin==20.0.1.post1", "face_recognition_models==0.3.0", "numpy", "pillow", "click",
                         "setuptools<81"),
}
_NO_DEPS = {"face_recognition": ("face_recognition==1.3.0",)}
_ORT_PROBE = ("import json, onnxruntime as ort; "
              "print(json.dumps({'onnxruntime': ort.__version__, 'providers': ort.get_available_providers()}))")
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
    return _env_dir(name, cache_dir) / "bin" / "python"


def create_env(name: str, cache_dir: Path | None = None) -> Path:
    """Create (or update) the managed venv `CACHE/envs/NAME` with its pinned onnxruntime build, then probe it.

    Args:
        name: "openvino", "gpu" or "face_recognition".
        cache_dir: cache root (default: `default_cache_dir()`).

    Returns:
        The environment's directory.

    Raises:
        BenchmarkError: unknown name, venv creation or pip failed, or the probe fails afterwards.
    """
    env_dir = _env_dir(name, cache_dir)
    fresh = not env_dir.exists()
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    python = env_dir / "bin" / "python"
    steps = [([sys.executable, "-m", "venv", str(env_dir)], "venv"),
             ([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *_REQUIREMENTS[name]], "pip")]
    if name in _NO_DEPS:
        steps.append(([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                       *_NO_DEPS[name]], "pip --no-deps"))
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
                                 f"{_last_line(result.stderr or result.stdout)}")
    probe = probe_env(name, cache_dir)
    if probe["reason"]:
        raise BenchmarkError(f"environment {name!r} was created at {env_dir} but {probe['reason']}")
    requirements = (*_REQUIREMENTS[name], *_NO_DEPS.get(name, ()))
    (env_dir / "edgepipe-env.json").write_text(json.dumps({"requirements": requirements, **probe}, indent=1))
    return env_dir


def probe_env(name: str, cache_dir: Path | None = None) -> dict:
    """Ask an environment's interpreter what it has; never raises for a broken env.

    Returns:
        {"env", "python", "onnxruntime", "providers", "versions", "reason"}: onnxruntime's version and providers for
        an EP environment, the packages' `versions` for face_recognition; `reason` is "" for a usable environment,
        else one line saying why it is not (interpreter missing, a package does not import, ...).
    """
    python = env_python(name, cache_dir)
    found = {"env": name, "python": str(python), "onnxruntime": None, "providers": [], "versions": {}, "reason": ""}
    what = "face_recognition" if name in _PROBES else "onnxruntime"
    if not python.exists():
        hint = f"; create it with `edgepipe env create {name}`" if name != MAIN_ENV else ""
        return {**found, "reason": f"no {name!r} environment at {python.parent.parent}{hint}"}
    try:
        result = subprocess.run([str(python), "-c", _PROBES.get(name, _ORT_PROBE)], capture_output=True, text=True,
                                timeout=120,
                                env=clean_env())
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


def clean_env() -> dict[str, str]:
    """This process's environment without the variables that would make another interpreter import our packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
