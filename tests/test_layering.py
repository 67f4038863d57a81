"""The physics package stands alone: ``operators`` never imports ``ctbird``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_importing_operators_does_not_import_ctbird():
    code = (
        "import sys, operators, operators.radon, operators.blur, operators.noise; "
        "print(operators.__file__); print('ctbird' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    path, leaked = out.stdout.split()
    assert Path(path).resolve().is_relative_to(REPO / "operators")
    assert leaked == "False"


def test_no_operators_module_mentions_ctbird_imports():
    offenders = []
    for file in (REPO / "operators").rglob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{file.name}: {n}" for n in names if n.split(".")[0] == "ctbird"]
    assert offenders == []


def test_ctbird_builds_on_operators():
    import ctbird.errors
    import operators.errors

    assert issubclass(ctbird.errors.ShapeError, operators.errors.OperatorError)
