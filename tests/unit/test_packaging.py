"""The distribution installs one namespace, `edgepipe`, and importing any part of it leaves `sys.path` alone."""

import ast
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (a dev dependency)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"pipeline": "edgepipe", "models": "edgepipe.models", "apps": "edgepipe.apps"}  # folder -> package
OLD_ROOTS = {"pipeline", "models", "apps", "common"}  # top-level names the code used before the namespace


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _package_folders() -> dict[str, Path]:
    """Every folder holding Python files, by the package name it installs as."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.parent.relative_to(REPO / folder).parts
            if "__pycache__" not in parts:
                found[".".join((package, *parts))] = path.parent
    return found


def _modules() -> list[str]:
    """Every importable module of the package but the Streamlit scripts (they draw a page when imported)."""
    names = []
    for package, folder in _package_folders().items():
        if package.startswith("edgepipe.apps"):
            continue
        names += [package if p.stem == "__init__" else f"{package}.{p.stem}" for p in sorted(folder.glob("*.py"))]
    return names + ["edgepipe.apps"]


def test_pyproject_installs_every_package_folder_under_edgepipe():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == sorted(_package_folders())
    assert setuptools["package-dir"] == {package: folder for folder, package in FOLDERS.items()}
    assert _pyproject()["project"]["scripts"] == {"edgepipe": "edgepipe.cli:main"}


def test_no_source_imports_the_old_top_level_names():
    for folder in (*FOLDERS, "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                bad = [n for n in names if n.split(".")[0] in OLD_ROOTS]
                assert not bad, f"{path.relative_to(REPO)} imports {bad[0]}; everything is under `edgepipe` now"


def test_importing_every_module_leaves_sys_path_and_the_top_level_alone(tmp_path):
    # onnxruntime.quantization appends onnxruntime/transformers (which holds a `models/` package) to sys.path
    # when imported: the crash of `edgepipe quantize` in issue #19 came from there.
    code = ("import importlib, sys\n"
            "before = list(sys.path)\n"
            f"for name in {_modules()!r}:\n"
            "    importlib.import_module(name)\n"
            "    if sys.path != before:\n"
            "        sys.exit(f'importing {name} changed sys.path: {sorted(set(sys.path) ^ set(before))}')\n"
            f"stray = sorted(m for m in sys.modules if m in {sorted(OLD_ROOTS)!r})\n"
            "sys.exit(f'generic top-level modules loaded: {stray}' if stray else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:] or result.stdout
