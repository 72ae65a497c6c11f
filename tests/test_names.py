"""What a task and the machinery share is named once, in luigiflow.names, and the package
hands it to tasks before luigi or mlflow are loaded."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO

from luigiflow import names

SHARED_LITERALS = {names.VALIDATED, names.REJECTED}


def test_the_package_exports_the_shared_names_without_loading_luigi_or_mlflow():
    code = (
        "import sys\n"
        "from luigiflow import REJECTED, VALIDATED, VALIDATION, REGISTRATION, Registration\n"
        "print([m for m in ('luigi', 'mlflow') if m in sys.modules])\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO / "src")},
    )
    assert found.stdout.strip() == "[]"


def test_no_verdict_is_spelled_out_but_in_names():
    """A task that defined its own VALIDATED could rename it and silently break
    `--require-validated`; the machinery's copies would drift the same way."""
    spelled = []
    for folder in ("luigiflow", "tasks"):
        for path in sorted((REPO / "src" / folder).glob("*.py")):
            if folder == "luigiflow" and path.name in ("names.py", "__init__.py"):
                continue  # the names themselves, and the package's list of what it exports
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in SHARED_LITERALS:
                    spelled.append(f"{folder}/{path.name}:{node.lineno}")
    assert spelled == []
