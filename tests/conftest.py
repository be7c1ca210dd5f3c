"""Shared fixtures: the shared evaluation data and a weight cache for the whole test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`$EDGEPIPE_SHARED_DATA`, else `../shared/data` beside the repository; fails loudly when absent."""
    path = Path(os.environ.get("EDGEPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (path / "lfw_10ids").is_dir():
        pytest.fail(f"shared evaluation data not found at {path}; set EDGEPIPE_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The weight cache the tests share ($EDGEPIPE_CACHE in CI, the user's cache otherwise)."""
    from edgepipe.sources import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def group_photos(shared_data) -> list[Path]:
    return sorted((shared_data / "group_photos").glob("*.jpg"))


@pytest.fixture(scope="session")
def newcomer_cache(cache_dir, tmp_path_factory) -> Path:
    """A cache with the session's verified weights but no artifacts, envs or gallery of its own: what a
    newcomer's cache holds after the first fetch."""
    root = tmp_path_factory.mktemp("cache")
    for name in ("files", "weights"):
        (cache_dir / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(cache_dir / name, target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def main_job(newcomer_cache, tmp_path_factory) -> subprocess.CompletedProcess:
    """README's first command, `edgepipe build` on its defaults, run once through the installed console script
    from a folder outside the repository; its artifacts (in `newcomer_cache/artifacts`) serve the whole session,
    so every slow test works on what a newcomer's first command made."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["EDGEPIPE_CACHE"] = str(newcomer_cache)
    return subprocess.run([str(Path(sys.executable).with_name("edgepipe")), "build"], capture_output=True,
                          text=True, timeout=1800, env=env, cwd=tmp_path_factory.mktemp("newcomer"))


@pytest.fixture(scope="session")
def artifacts(main_job, newcomer_cache) -> dict[str, Path]:
    """Every zoo model's fp32 artifact as the main job wrote it (real weights, parity measured): name -> path."""
    from edgepipe.models import list_models

    if main_job.returncode != 0:
        pytest.fail(f"`edgepipe build` exited {main_job.returncode}:\n{main_job.stderr[-3000:]}")
    return {name: newcomer_cache / "artifacts" / f"{name}.fp32.onnx" for name in list_models()}


@pytest.fixture(scope="session")
def built_with_data(artifacts, shared_data, cache_dir, tmp_path_factory):
    """`edgepipe build --no-bench --data` on LFW, COCO and WIDER FACE over a copy of the session's artifacts (one
    of them made stale first: its JSON no longer describes its file): (folder, exit code, stdout, the artifacts'
    mtimes before). Its evaluations are the local engine's figures the Ray engine's are compared with."""
    import contextlib
    import io
    import json
    import shutil

    from edgepipe.cli import main

    folder = tmp_path_factory.mktemp("built")
    for onnx_path in artifacts.values():
        for path in (onnx_path, onnx_path.with_suffix(".json")):
            shutil.copy(path, folder / path.name)
    stale = folder / "blazeface_front.mediapipe.fp32.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "sha256": "0" * 64}))
    exported = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.onnx")}
    data = [str(shared_data / name) for name in ("lfw_10ids", "coco_val_mini", "widerface_val_100")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # --no-bench: README's first command covers the benchmark and report
        code = main(["--cache-dir", str(cache_dir), "build", "--out", str(folder), "--no-bench",
                     *sum((["--data", d] for d in data), [])])
    return folder, code, out.getvalue(), exported
