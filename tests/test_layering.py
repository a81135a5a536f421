"""Import direction: server -> engines; the engine core never imports HTTP code."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"fastapi", "starlette", "uvicorn", "server", "httpx"}


def test_engines_do_not_import_http_or_server():
    for path in (ROOT / "engines").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_import_direction_inside_engines_and_server():
    rules = {
        "engines/config": ("engines.data", "engines.transforms", "engines.tasks", "engines.serving"),
        "engines/data": ("engines.transforms", "engines.tasks", "engines.serving"),
        "engines/transforms": ("engines.tasks", "engines.serving"),
        "engines/tasks": ("engines.serving",),
        "engines/training": ("engines.serving",),
        "engines/evaluation": ("engines.serving",),
        "engines/export": ("engines.serving",),
        "server/jobs": ("server.protocols", "fastapi"),
        "server/cli": ("server.protocols",),
    }
    for folder, forbidden in rules.items():
        for path in (ROOT / folder).rglob("*.py"):
            for name in _imports(path):
                assert not name.startswith(forbidden), f"{path.relative_to(ROOT)} imports {name}"


def test_layout_check_passes():
    import json
    import subprocess
    import sys

    tool = ROOT.parent / "shared" / "tools" / "layout_check.py"
    if not tool.exists():
        import pytest

        pytest.skip("../shared/tools/layout_check.py is not beside the project")
    run = subprocess.run([sys.executable, str(tool), str(ROOT)], capture_output=True, text=True)
    assert run.returncode == 0, json.loads(run.stdout)
