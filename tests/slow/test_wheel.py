"""A wheel built from the repository, installed into a fresh virtual environment with no path back to the source
tree, run from a folder outside it: what `pip install edgepipe` gives a user or a device. An editable install
would hide a module or page missing from the wheel, or a generic top-level name; this does not."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SKIP_IN_COPY = shutil.ignore_patterns(".git", ".venv", ".ci-cache", "build", "dist", "*.egg-info", "__pycache__",
                                      ".pytest_cache")


def _run(*command, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=900,
                            env=environment)
    assert result.returncode == expect, f"{' '.join(map(str, command))} exited {result.returncode}:\n" \
                                        f"{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel's core install (numpy, onnxruntime, opencv, tqdm): its bin/ folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=SKIP_IN_COPY)  # a copy, so the build leaves nothing in the checkout
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist", source, cwd=root)
    wheel = next((root / "dist").glob("edgepipe-*.whl"))
    base_python = getattr(sys, "_base_executable", sys.executable)  # not this venv's: no editable path inherited
    _run(base_python, "-m", "venv", root / "venv", cwd=root)
    bin_dir = root / "venv" / "bin"
    _run(bin_dir / "pip", "install", "-q", wheel, cwd=root)
    (root / "wheel_path").write_text(str(wheel))
    return bin_dir


@pytest.fixture()
def outside(tmp_path) -> Path:
    """A working folder outside the repository, as a device or a user's project would be."""
    assert REPO not in tmp_path.parents
    return tmp_path


def test_the_wheel_installs_one_namespace(venv, outside):
    code = ("import edgepipe, edgepipe.runtime, edgepipe.apps, json, os, sys, sysconfig; "
            "print(json.dumps({'file': edgepipe.__file__, 'site': os.listdir(sysconfig.get_paths()['purelib']), "
            "'path': sys.path}))")
    found = json.loads(_run(venv / "python", "-c", code, cwd=outside).stdout)
    assert "site-packages" in found["file"] and str(REPO) not in found["file"]
    assert not {"pipeline", "models", "apps", "common"} & set(found["site"]), found["site"]
    assert not [p for p in found["path"] if p.startswith(str(REPO))]
    pages = _run(venv / "python", "-c", "import edgepipe.apps, pathlib; p = pathlib.Path(edgepipe.apps.__file__); "
                 "print(sorted(x.name for x in p.parent.rglob('*.py')))", cwd=outside).stdout
    for name in ("Home.py", "common.py", "1_Face_recognition.py", "2_Object_detection.py", "3_Model_lab.py"):
        assert name in pages


def test_core_install_runs_help_the_runtime_snippet_and_run(venv, outside, artifacts, group_photos):
    assert "usage: edgepipe" in _run(venv / "edgepipe", "--help", cwd=outside).stdout
    snippet = re.search(r"```python\n(from edgepipe\.runtime import .+?)```", (REPO / "README.md").read_text(),
                        re.S).group(1)
    shutil.copy(artifacts["nanodet_g.coco"], outside)
    shutil.copy(group_photos[0], outside / "street.jpg")
    out = _run(venv / "python", "-c", snippet, cwd=outside).stdout
    assert re.search(r"^person 0\.\d+ \[", out, re.M), out[:500]
    out = _run(venv / "edgepipe", "run", "nanodet_g.coco.fp32.onnx", "street.jpg", "--out", "boxes.jpg",
               cwd=outside).stdout
    assert "detections" in out and (outside / "boxes.jpg").stat().st_size > 0
    torch_free = "import sys, edgepipe.runtime, edgepipe.run; sys.exit('torch' in sys.modules)"
    _run(venv / "python", "-c", torch_free, cwd=outside)


@pytest.mark.parametrize("command, extra", [
    (("zoo", "list"), "torch"), (("export", "nanodet_g.coco", "--out", "x"), "torch"), (("demo",), "demo"),
    (("run", "a.onnx", "photos", "--out", "x.parquet", "--engine", "ray"), "ray")])
def test_core_install_names_the_missing_extra_in_one_line(venv, outside, command, extra):
    result = _run(venv / "edgepipe", *command, cwd=outside, expect=2)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"needs the '{extra}' extra" in result.stderr and f"pip install 'edgepipe[{extra}]'" in result.stderr
    assert not (outside / "x").exists()


def test_torch_extra_lists_the_zoo(venv, outside):
    wheel = Path((venv.parent.parent / "wheel_path").read_text())
    _run(venv / "pip", "install", "-q", f"edgepipe[torch] @ {wheel.as_uri()}", cwd=outside)
    out = _run(venv / "edgepipe", "zoo", "list", cwd=outside).stdout
    for name in ("blazeface_back.mediapipe", "blazeface_front.mediapipe", "dlib_resnet29.facerec", "nanodet_g.coco",
                 "yunet.opencv", "sface.opencv"):
        assert name in out
