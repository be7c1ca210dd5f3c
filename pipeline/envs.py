"""Runtime environments for execution providers whose onnxruntime builds cannot share one Python environment:
`create_env(name, cache_dir)` builds one, `env_python(name, cache_dir)` finds its interpreter and
`probe_env(name, cache_dir)` asks it which providers its onnxruntime has.

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

__all__ = ["create_env", "env_python", "probe_env"]

log = logging.getLogger(__name__)

MAIN_ENV = "main"
# env name -> pip requirements. The worker needs onnxruntime (one build), numpy and opencv in each.
_REQUIREMENTS = {
    "openvino": ("onnxruntime-openvino==1.24.1", "numpy", "opencv-python-headless"),
    # cuda/cudnn extras bring the CUDA 12 and cuDNN 9 libraries as pip packages; TensorRT needs its own libraries.
    "gpu": ("onnxruntime-gpu[cuda,cudnn]==1.31.1", "numpy", "opencv-python-headless"),
}
_PROBE = ("import json, onnxruntime as ort; "
          "print(json.dumps({'onnxruntime': ort.__version__, 'providers': ort.get_available_providers()}))")
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
        name: "openvino" or "gpu".
        cache_dir: cache root (default: `default_cache_dir()`).

    Returns:
        The environment's directory.

    Raises:
        BenchmarkError: unknown name, venv creation or pip failed, or onnxruntime does not import afterwards.
    """
    env_dir = _env_dir(name, cache_dir)
    fresh = not env_dir.exists()
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    python = env_dir / "bin" / "python"
    steps = [([sys.executable, "-m", "venv", str(env_dir)], "venv"),
             ([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *_REQUIREMENTS[name]], "pip")]
    for cmd, what in steps:
        log.info("%s: %s", name, " ".join(cmd))
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, env=_clean_env())
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
    (env_dir / "edgepipe-env.json").write_text(json.dumps({"requirements": _REQUIREMENTS[name], **probe}, indent=1))
    return env_dir


def probe_env(name: str, cache_dir: Path | None = None) -> dict:
    """Ask an environment's interpreter for its onnxruntime version and providers; never raises for a broken env.

    Returns:
        {"env", "python", "onnxruntime", "providers", "reason"}: `reason` is "" for a usable environment, else one
        line saying why it is not (interpreter missing, onnxruntime does not import, ...).
    """
    python = env_python(name, cache_dir)
    found = {"env": name, "python": str(python), "onnxruntime": None, "providers": [], "reason": ""}
    if not python.exists():
        hint = f"; create it with `edgepipe env create {name}`" if name != MAIN_ENV else ""
        return {**found, "reason": f"no {name!r} environment at {python.parent.parent}{hint}"}
    try:
        result = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120,
                                env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        return {**found, "reason": f"the {name!r} environment's python {python} does not run: {type(e).__name__}: {e}"}
    if result.returncode != 0:
        return {**found, "reason": f"onnxruntime does not import in the {name!r} environment ({python}): "
                                   f"{_last_line(result.stderr)}"}
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {**found, "reason": f"the {name!r} environment's python {python} gave no probe answer"}
    return {**found, "onnxruntime": answer["onnxruntime"], "providers": answer["providers"]}


def _clean_env() -> dict[str, str]:
    """This process's environment without the variables that would make another interpreter import our packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
