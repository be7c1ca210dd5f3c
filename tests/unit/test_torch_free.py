"""The runtime a device embeds must never pull in torch, the model zoo, or the build-side pipeline."""

import ast
import subprocess
import sys
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "pipeline" / "runtime"
ALLOWED_ROOTS = {"numpy", "onnxruntime", "cv2", "edgepipe"}


def test_runtime_never_imports_torch_or_models():
    code = ("import sys, edgepipe.runtime, edgepipe.runtime.draw; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')"
            " or (m.startswith('edgepipe.') and not m.startswith('edgepipe.runtime'))]; "
            "sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_quantize_evaluate_bench_and_report_never_import_torch():
    """Only export (and train) need torch: the stages after it run on a machine without it."""
    stages = ("edgepipe.artifact", "edgepipe.quantize", "edgepipe.evaluate", "edgepipe.benchmark", "edgepipe.report",
              "edgepipe.bench_worker", "edgepipe.run", "edgepipe.run_video", "edgepipe.video_out", "edgepipe.specs",
              "edgepipe.cli_args", "edgepipe.engine", "edgepipe.image_tasks")
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {stages!r}]; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(('edgepipe.models', "
            "'edgepipe.export'))]; sys.exit(str(bad[:5]) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_runtime_sources_import_only_allowed_modules():
    stdlib = set(sys.stdlib_module_names)
    for path in RUNTIME.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root in stdlib or root in ALLOWED_ROOTS, f"{path.name} imports {name}"
                if root == "edgepipe":
                    assert name.startswith("edgepipe.runtime"), f"{path.name} imports {name} outside the runtime"


def test_apps_import_only_the_runtime_and_report():
    apps = RUNTIME.parents[1] / "apps"
    allowed = ALLOWED_ROOTS | {"streamlit", "pandas", "altair", "av", "streamlit_webrtc"}
    stdlib = set(sys.stdlib_module_names)
    files = list(apps.rglob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                root = name.split(".")[0]
                assert root in stdlib or root in allowed, f"{path.name} imports {name}"
                if root == "edgepipe":
                    # edgepipe.specs: the zoo's default names; video_out, run_video: writing and tracking video (all
                    # torch-free, checked above)
                    assert name.startswith(("edgepipe.runtime", "edgepipe.report", "edgepipe.apps", "edgepipe.specs",
                                            "edgepipe.video_out", "edgepipe.run_video")), \
                        f"{path.name} imports {name}"
