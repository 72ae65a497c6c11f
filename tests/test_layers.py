"""Layers of src/luigiflow, read from the source with `ast` (nothing is imported).

Its modules must not import each other in a cycle, counting every import statement: at module
level, inside functions, and under `if TYPE_CHECKING:`. And the machinery never imports the
user's `tasks` package: the runner hands it the task modules to load.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "src" / "luigiflow"
Graph = dict[str, dict[str, int]]  # module -> {module it imports: line of the first import}


def module_name(path: Path, package_dir: Path) -> str:
    """`luigiflow.plan` for `luigiflow/plan.py`, `luigiflow` for `luigiflow/__init__.py`."""
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(node: ast.AST, importer: str, is_package: bool) -> list[str]:
    """The dotted names an import statement reaches, made absolute.

    `import a.b` reaches `a.b`; `from a import b, c` reaches `a.b` and `a.c` (each is a module
    or a name in `a`); `from . import b` and `from .b import c` are resolved against the
    importer's package. Any other node reaches nothing.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    source = node.module or ""
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        if node.level - 1 >= len(package):
            return []  # above the top of the package: not ours
        base = ".".join(package[: len(package) - (node.level - 1)])
        source = f"{base}.{source}" if source else base
    return [f"{source}.{alias.name}" for alias in node.names]


def owning_module(name: str, modules: Iterable[str]) -> str | None:
    """The longest of `modules` that `name` is or lies in (`a.b.C` -> `a.b`), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def import_graph(package_dir: Path) -> Graph:
    """Which modules of the package each of its modules imports, wherever the import stands."""
    files = {module_name(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}
    graph: Graph = {name: {} for name in files}
    for importer, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for name in imported_names(node, importer, path.name == "__init__.py"):
                target = owning_module(name, files)
                if target is not None and target != importer:
                    line = graph[importer].get(target, node.lineno)
                    graph[importer][target] = min(line, node.lineno)
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle, as modules in import order with the first repeated last; or None.

    Depth-first: a module met again while it is still on the current path closes a cycle.
    """
    path: list[str] = []
    finished: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in finished:
            return None
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        finished.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def reachable(graph: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """The modules `start` imports, directly or through others."""
    seen: set[str] = set()
    stack = list(graph.get(start, ()))
    while stack:
        module = stack.pop()
        if module not in seen:
            seen.add(module)
            stack.extend(graph.get(module, ()))
    return seen


def explain(cycle: list[str], graph: Graph) -> str:
    """The cycle, where each of its imports stands, and every module caught in a cycle with it
    (all of them have to be untangled, not just this one loop)."""
    lines = [f"import cycle: {' -> '.join(cycle)}"]
    for importer, target in pairwise(cycle):
        lines.append(f"  {importer} imports {target} (line {graph[importer][target]})")
    tangled = sorted(m for m in reachable(graph, cycle[0]) if cycle[0] in reachable(graph, m))
    lines.append(f"modules in cycles with {cycle[0]}: {', '.join(tangled)}")
    return "\n".join(lines)


def tasks_imports(package_dir: Path) -> list[str]:
    """`file:line` of every import of the `tasks` package, by statement or by a literal
    `importlib.import_module("tasks…")` / `__import__("tasks…")`."""

    def is_tasks(name: object) -> bool:
        return isinstance(name, str) and (name == "tasks" or name.startswith("tasks."))

    found = []
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                hit = any(is_tasks(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                hit = node.level == 0 and is_tasks(node.module)
            elif isinstance(node, ast.Call) and node.args:
                function = node.func
                called = getattr(function, "attr", getattr(function, "id", None))
                argument = node.args[0]
                hit = called in ("import_module", "__import__") and is_tasks(
                    getattr(argument, "value", None)
                )
            else:
                hit = False
            if hit:
                found.append(f"{path.relative_to(package_dir.parent)}:{node.lineno}")
    return found


def write_package(root: Path, name: str, files: dict[str, str]) -> Path:
    package = root / name
    package.mkdir()
    for file, code in files.items():
        (package / file).write_text(code)
    return package


# the real package ------------------------------------------------------------------------------
def test_luigiflow_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "luigiflow" in graph and any(graph.values()), f"no imports read from {PACKAGE}"
    cycle = find_cycle(graph)
    assert cycle is None, explain(cycle, graph)


def test_luigiflow_never_imports_the_users_tasks():
    assert (PACKAGE / "task.py").is_file()
    assert tasks_imports(PACKAGE) == []


# the checks themselves, on packages written for the test ----------------------------------------
def test_the_graph_sees_every_form_and_a_cycle_through_a_function(tmp_path):
    package = write_package(
        tmp_path,
        "fakepkg",
        {
            "__init__.py": "VERSION = 1\n",
            "a.py": "import os\n\nfrom fakepkg import b\n",
            "b.py": (
                "from typing import TYPE_CHECKING\n"
                "\n"
                "if TYPE_CHECKING:\n"
                "    from fakepkg.c import C\n"
                "\n"
                "\n"
                "def later():\n"
                "    from . import a\n"
                "\n"
                "    return a\n"
            ),
            "c.py": "import fakepkg.d\nfrom .e import E\n",
            "d.py": "from fakepkg import VERSION\n",
            "e.py": "E = 1\n",
        },
    )
    graph = import_graph(package)
    assert {module: set(targets) for module, targets in graph.items()} == {
        "fakepkg": set(),
        "fakepkg.a": {"fakepkg.b"},  # from pkg import module
        "fakepkg.b": {"fakepkg.c", "fakepkg.a"},  # TYPE_CHECKING; `from . import` in a function
        "fakepkg.c": {"fakepkg.d", "fakepkg.e"},  # import pkg.module; from .module import name
        "fakepkg.d": {"fakepkg"},  # a name from the package's __init__
        "fakepkg.e": set(),
    }
    assert graph["fakepkg.b"]["fakepkg.a"] == 8
    cycle = find_cycle(graph)
    assert cycle == ["fakepkg.a", "fakepkg.b", "fakepkg.a"]
    assert explain(cycle, graph).splitlines() == [
        "import cycle: fakepkg.a -> fakepkg.b -> fakepkg.a",
        "  fakepkg.a imports fakepkg.b (line 3)",
        "  fakepkg.b imports fakepkg.a (line 8)",
        "modules in cycles with fakepkg.a: fakepkg.a, fakepkg.b",
    ]


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, None),  # a diamond is no cycle
        ({"a": {"b"}, "b": {"c"}, "c": {"d"}, "d": {"b"}}, ["b", "c", "d", "b"]),
        ({"a": set(), "b": {"b"}}, ["b", "b"]),
    ],
)
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_the_tasks_check_sees_every_form(tmp_path):
    package = write_package(
        tmp_path,
        "fakepkg",
        {
            "__init__.py": "",
            "clean.py": "import tasksmith\nfrom .tasks import x\nfrom mytasks import tasks\n",
            "dirty.py": (
                "import importlib\n"
                "import tasks\n"
                "\n"
                "\n"
                "def load():\n"
                "    from tasks.trainer import Trainer\n"
                '    importlib.import_module("tasks.evaluator")\n'
                '    return __import__("tasks")\n'
            ),
        },
    )
    assert tasks_imports(package) == [f"fakepkg/dirty.py:{line}" for line in (2, 6, 7, 8)]
