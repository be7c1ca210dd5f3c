"""Repository rules that code review would otherwise have to catch."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 600
ALLOWED_LONG: set[str] = set()  # files allowed over MAX_LINES, with a split plan in review


def test_no_god_files():
    for folder in ("pipeline", "models"):
        for path in (REPO / folder).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            rel = str(path.relative_to(REPO))
            assert lines <= MAX_LINES or rel in ALLOWED_LONG, f"{rel} has {lines} lines (> {MAX_LINES})"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme)
    assert match, "README.md must mark its test command with <!-- test-command -->"
    command = match.group(1).strip()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines, f".ci/run does not run the README's test command {command!r}"


def test_never_torch_load_without_weights_only():
    for folder in ("pipeline", "models", "apps"):
        for path in (REPO / folder).rglob("*.py"):
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if "torch.load(" in line:
                    assert "weights_only=True" in line, f"{path.name}:{lineno} torch.load without weights_only=True"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file, nested ones included."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_the_zoo_is_one_way_and_imports_at_the_top():
    """Importers parse their format and know no architecture; architectures import importers, at the top."""
    import ast

    for path in (REPO / "models" / "weights").glob("*.py"):
        bad = [m for _, m in _imports(path) if m.startswith(("edgepipe.models.zoo", "edgepipe.models.registry"))]
        assert not bad, f"models/weights/{path.name} imports {bad[0]}: an importer must not know the architecture"
    for path in (REPO / "models" / "zoo").glob("*.py"):
        tree = ast.parse(path.read_text())
        first_def = min((n.lineno for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))), default=None)
        late = [(line, m) for line, m in _imports(path) if first_def and line > first_def]
        assert not late, f"models/zoo/{path.name}:{late[0][0]} imports {late[0][1]} below the code"
