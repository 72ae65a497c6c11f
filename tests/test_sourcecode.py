"""The code digest follows every project module a task imports, and nothing else."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from luigiflow.sourcecode import code_digest, module_digests, project_modules

REPO_SRC = Path(__file__).resolve().parents[1] / "src"

Write = Callable[..., None]


@pytest.fixture
def src(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway source root on sys.path; the modules imported from it are forgotten after."""
    root = tmp_path / "src"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "")).startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.fixture
def write(src: Path) -> Write:
    """Write dedented source files under the source root: write(**{"pkg/a.py": "..."})."""

    def write_files(**files: str) -> None:
        for relative, source in files.items():
            path = src / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()

    return write_files


TASK = """
    class Task:
        def run(self):
            from mytasks.helpers import clean
            return clean(1)
"""


def test_helper_imported_inside_a_function_counts(src: Path, write: Write) -> None:
    write(**{"mytasks/__init__.py": "", "mytasks/a.py": TASK})
    write(**{"mytasks/helpers.py": "def clean(x):\n    return x + 1\n"})
    task = importlib.import_module("mytasks.a").Task

    assert project_modules("mytasks.a", src) == ["mytasks.a", "mytasks.helpers"]
    assert "mytasks.helpers" not in sys.modules  # found by reading, not by importing
    before = code_digest(task, src)
    write(**{"mytasks/helpers.py": "def clean(x):\n    return x + 2\n"})
    assert code_digest(task, src) != before, "an edited file is read again"


def test_helper_of_a_helper_counts(src: Path, write: Write) -> None:
    write(**{"mytasks/__init__.py": "", "mytasks/a.py": TASK})
    write(**{"mytasks/helpers.py": "def clean(x):\n    from . import deeper\n    return x\n"})
    write(**{"mytasks/deeper.py": "LIMIT = 3\n"})
    task = importlib.import_module("mytasks.a").Task

    before = module_digests(task, src)
    assert set(before) == {"mytasks.a", "mytasks.helpers", "mytasks.deeper"}
    write(**{"mytasks/deeper.py": "LIMIT = 4\n"})
    after = module_digests(task, src)
    assert after["mytasks.deeper"] != before["mytasks.deeper"]
    assert after["mytasks.a"] == before["mytasks.a"]


def test_constant_from_another_module_counts(src: Path, write: Write) -> None:
    write(**{"mytasks/__init__.py": "", "mytasks/consts.py": "ID = 'PassengerId'\n"})
    write(**{"mytasks/a.py": "from .consts import ID\n\nclass Task:\n    key = ID\n"})
    task = importlib.import_module("mytasks.a").Task

    before = code_digest(task, src)
    assert project_modules("mytasks.a", src) == ["mytasks.a", "mytasks.consts"]
    write(**{"mytasks/consts.py": "ID = 'Name'\n"})
    assert code_digest(task, src) != before


def test_top_level_module_outside_the_package_counts(src: Path, write: Write) -> None:
    task_source = "class Task:\n    def run(self):\n        import features\n"
    write(**{"mytasks/__init__.py": "", "mytasks/a.py": task_source})
    write(**{"features.py": "def encode(x):\n    return x\n"})

    assert project_modules("mytasks.a", src) == ["features", "mytasks.a"]


def test_imports_under_type_checking_and_try_count(src: Path, write: Write) -> None:
    write(
        **{
            "mytasks/__init__.py": "",
            "mytasks/typing_only.py": "",
            "mytasks/optional.py": "",
            "mytasks/a.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from mytasks.typing_only import Thing
                try:
                    import mytasks.optional
                except ImportError:
                    pass
                class Task: ...
            """,
        }
    )
    assert project_modules("mytasks.a", src) == [
        "mytasks.a",
        "mytasks.optional",
        "mytasks.typing_only",
    ]


def test_comments_docstrings_and_formatting_do_not_count(src: Path, write: Write) -> None:
    write(**{"mytasks/__init__.py": "", "mytasks/a.py": TASK})
    write(**{"mytasks/helpers.py": "def clean(x):\n    return x + 1\n"})
    task = importlib.import_module("mytasks.a").Task
    before = module_digests(task, src)

    helper = '"""Helpers."""\n\n\ndef clean( x ):  # tidy\n    """Add one."""\n    return (x+1)\n'
    write(**{"mytasks/helpers.py": helper})
    assert module_digests(task, src) == before


def test_libraries_are_left_out_and_never_imported(
    src: Path, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    library_was_loaded = "sklearn" in sys.modules
    boom = "raise RuntimeError('a library must not be imported')\n"
    write(
        **{
            ".venv/lib/site-packages/fakelib/__init__.py": boom,
            ".venv/lib/site-packages/fakelib/sub.py": boom,
            "site-packages/otherlib.py": boom,
            "mytasks/__init__.py": "",
            "mytasks/a.py": """
                import json
                class Task:
                    def run(self):
                        from fakelib import sub
                        import otherlib
                        from sklearn.linear_model import LogisticRegression
                        return json, sub, otherlib, LogisticRegression
            """,
        }
    )
    monkeypatch.syspath_prepend(str(src / ".venv/lib/site-packages"))
    monkeypatch.syspath_prepend(str(src / "site-packages"))

    assert project_modules("mytasks.a", src) == ["mytasks.a"]
    assert "fakelib" not in sys.modules
    assert "otherlib" not in sys.modules
    if not library_was_loaded:
        assert "sklearn" not in sys.modules


def test_package_init_counts_only_when_names_come_from_it(src: Path, write: Write) -> None:
    write(
        **{
            "mytasks/__init__.py": "from mytasks.helpers import *\nVERSION = 1\n",
            "mytasks/helpers.py": "",
            "mytasks/a.py": "from mytasks import helpers\n",
            "mytasks/b.py": "from mytasks import VERSION\n",
            "mytasks/c.py": "import mytasks.helpers\n",
        }
    )
    assert project_modules("mytasks.a", src) == ["mytasks.a", "mytasks.helpers"]
    assert project_modules("mytasks.c", src) == ["mytasks.c", "mytasks.helpers"]
    assert project_modules("mytasks.b", src) == ["mytasks", "mytasks.b", "mytasks.helpers"]


def test_the_project_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_SRC))
    evaluator = importlib.import_module("tasks.evaluator").Evaluator

    modules = set(module_digests(evaluator, REPO_SRC))

    assert {"tasks.metrics", "tasks.preprocessor", "tasks.splitter", "tasks.trainer"} <= modules
    assert "tasks" not in modules
    assert not any(name.startswith("luigiflow") for name in modules)
