"""The client is light: importing it loads no torch, MONAI, SimpleITK, nibabel or server code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
HEAVY = ("torch", "monai", "SimpleITK", "nibabel", "scipy", "skimage", "fastapi", "starlette", "server", "engines")


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          env={"PYTHONPATH": str(CLIENT_DIR), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_loads_nothing_heavy():
    loaded = run(f"import sys, aiaa_client, aiaa_client.cli; "
                 f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    assert loaded == "[]"


def test_masks_decode_and_save_without_nibabel(tmp_path):
    out = tmp_path / "mask.nii"
    code = f"""
import sys
sys.modules['nibabel'] = None  # as if the extra were not installed
import numpy as np
from aiaa_client._protocol import Reply, parse_result
from aiaa_client import write_nifti
mask = np.zeros((4, 5, 6), np.uint8); mask[1, 2, 3] = 2
reply = Reply(200, {{'content-type': 'application/octet-stream'}}, write_nifti(mask, np.diag([2.0, 3.0, 4.0, 1.0])))
result = parse_result(reply)
assert np.array_equal(result.mask, mask) and result.affine[2, 2] == 4.0
result.save({str(out)!r})
try:
    result.to_nibabel()
except ImportError:
    print('ok')
"""
    assert run(code) == "ok"
    assert out.read_bytes()[344:348] == b"n+1\x00"


def test_sources_import_neither_the_server_nor_heavy_packages():
    import ast

    for path in (CLIENT_DIR / "aiaa_client").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                assert name.split(".")[0] not in set(HEAVY) - {"nibabel"}, f"{path.name} imports {name}"
