"""The code behind a run: what shapes a task's outputs, digested for its cache fingerprint,
and where the run's code came from (the git commit, whether the tree was dirty, the diff, and
the versions of the libraries that shape results).

A task's code is its module and every project module that module imports, transitively and
anywhere in its source: at module level, inside functions and methods, under
`if TYPE_CHECKING`, in try/except. Imports are read from the syntax tree of each file rather
than from the imported module's namespace, so a helper imported lazily inside `run()`, a helper
of a helper, and a constant taken from another module (a str has no `__module__`) all count,
whether or not they have been imported yet.

A project module is one whose source file lies under `source_root`, outside any `site-packages`
or `.venv` folder, and outside luigiflow itself: framework code moves outputs around but does
not shape them. Library modules are never imported to decide this (importing sklearn alone
takes seconds): only a top-level lookup is made, which imports nothing, and files of project
submodules are found by path.

Not seen: modules imported dynamically with a computed name (`importlib.import_module(name)`).

Modules are compared as syntax trees without docstrings, so comments, docstrings and formatting
do not change the digest, and any change to what the code does does.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import platform
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

EXCLUDED_FOLDERS = frozenset({"site-packages", ".venv"})
FRAMEWORK = "luigiflow"
LIBRARIES = ("luigi", "mlflow", "scikit-learn", "pandas", "pyarrow")


def project_modules(module_name: str, source_root: Path) -> list[str]:
    """`module_name` and, transitively, every project module it imports, sorted."""
    return sorted(_project_files(module_name, source_root))


def module_digests(cls: type, source_root: Path) -> dict[str, str]:
    """Module name -> sha256 of its normalized source, for the modules that make up `cls`."""
    return {
        name: _file_digest(path, *_version(path))
        for name, path in sorted(_project_files(cls.__module__, source_root).items())
    }


def code_digest(cls: type, source_root: Path) -> str:
    """One digest of the code of `cls`."""
    digest = hashlib.sha256()
    for name, module_digest in sorted(module_digests(cls, source_root).items()):
        digest.update(f"{name}\0{module_digest}\n".encode())
    return digest.hexdigest()


def imported_libraries(cls: type, source_root: Path) -> set[str]:
    """The modules from outside the project that the code of `cls` may import (lazily inside
    functions too), and those luigiflow's own modules may import when a task runs."""
    root = source_root.resolve()
    files = _project_files(cls.__module__, source_root)
    files.update({f"{FRAMEWORK}.{p.stem}": p for p in Path(__file__).parent.glob("*.py")})
    found: set[str] = set()
    for name, path in files.items():
        for module in _imported_modules(name, path, root, *_version(path)):
            if _source_file(module, root) is None and module.partition(".")[0] != FRAMEWORK:
                found.add(module)
    return found


def _project_files(module_name: str, source_root: Path) -> dict[str, Path]:
    """Module name -> source file, for `module_name` and the project modules it reaches.

    The starting module counts even when it lies outside `source_root` (a task defined in a
    script): its code is the task's code whatever its location.
    """
    root = source_root.resolve()
    start = _source_file(module_name, root) or _loaded_file(module_name)
    if start is None:
        return {}
    found, todo = {module_name: start}, [module_name]
    while todo:
        name = todo.pop()
        for imported in _imported_modules(name, found[name], root, *_version(found[name])):
            if imported not in found and (path := _source_file(imported, root)):
                found[imported] = path
                todo.append(imported)
    return found


@cache
def _imported_modules(name: str, path: Path, root: Path, mtime_ns: int, size: int) -> set[str]:
    """The modules whose code `name` (source file `path`) may run: `from A import B` means
    module `A.B` if there is one, else the names defined in `A` itself. Read once per
    version of the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            if base is None:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                taken = alias.name != "*" and _source_file(submodule, root)
                modules.add(submodule if taken else base)
    return modules


def _absolute(module: str | None, level: int, package: str) -> str | None:
    """The absolute name of `from <level dots><module> import ...` written in `package`."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level > len(parts):
        return None  # beyond the top-level package: Python refuses it too
    return ".".join([*parts[: len(parts) - level + 1], *([module] if module else [])])


@cache
def _source_file(name: str, root: Path) -> Path | None:
    """The .py file of `name` if it is a project module under `root`, found without
    importing anything: a top-level `find_spec` only searches `sys.path`. Looked up once per
    process: project files do not come and go while a runner plans."""
    top, *rest = name.split(".")
    if top == FRAMEWORK:
        return None
    spec = _top_level_spec(top)
    if spec is None:
        return None
    if not rest:
        candidates = [Path(spec.origin)] if spec.has_location and spec.origin else []
    else:
        bases = [Path(folder).joinpath(*rest) for folder in spec.submodule_search_locations or []]
        candidates = [c for b in bases for c in (b.parent / f"{b.name}.py", b / "__init__.py")]
    return next((c.resolve() for c in candidates if _in_project(c, root)), None)


def _top_level_spec(top: str):
    try:
        return importlib.util.find_spec(top)
    except (ImportError, ValueError):  # ValueError: in sys.modules without a spec (__main__)
        return None


def _in_project(path: Path, root: Path) -> bool:
    if path.suffix != ".py" or not path.is_file():
        return False
    try:
        relative = path.resolve().relative_to(root)
    except ValueError:
        return False
    return not EXCLUDED_FOLDERS.intersection(relative.parts)


def _loaded_file(name: str) -> Path | None:
    file = getattr(sys.modules.get(name), "__file__", None)
    return Path(file) if file and file.endswith(".py") else None


def _version(path: Path) -> tuple[int, int]:
    """What identifies a file's content for the caches below: an edited file is read again."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@cache
def _file_digest(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(_normalized_source(path).encode()).hexdigest()


def _normalized_source(path: Path) -> str:
    """The module's syntax tree without docstrings: what it does, not how it is written."""
    tree = ast.parse(path.read_bytes())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
            node.body = body[1:] or [ast.Pass()]  # a docstring is not behaviour
    return ast.dump(tree, annotate_fields=False)


def unqualified_loads(cls: type) -> set[str]:
    """The names a task class reads with `load("x")` / `input_path("x")` without `of=`, found
    in its source, so that an ambiguous name is refused before the run rather than mid-run."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] in ("luigiflow", "luigi", "builtins"):
            continue  # the machinery's own classes, which load what their callers name
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("load", "input_path")
                and not any(keyword.arg == "of" for keyword in node.keywords)
            ):
                named = [k.value for k in node.keywords if k.arg == "name"]
                for argument in [*node.args[:1], *named]:
                    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                        names.add(argument.value)
    return names


# Where a run's code came from ---------------------------------------------------------------
@dataclass(frozen=True)
class GitState:
    commit: str
    dirty: bool
    diff: str  # `git diff HEAD` plus the untracked files, empty when the tree is clean


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def git_state(root: Path) -> GitState | None:
    """The state of the work tree at `root`, or None when it is not a git checkout."""
    try:
        _git(root, "rev-parse", "--is-inside-work-tree")
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        diff = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff")
    except subprocess.CalledProcessError:  # a repository without commits yet
        commit, diff = "none", ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard").splitlines()
    if untracked:
        diff += "\n# Untracked files (not in the diff):\n" + "".join(
            f"#   {f}\n" for f in untracked
        )
    return GitState(commit=commit, dirty=bool(diff.strip()), diff=diff)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape results (read without importing them)."""
    return {"python": platform.python_version(), **{name: version(name) for name in LIBRARIES}}


@cache
def version(name: str) -> str:
    """An installed distribution's version, read once per process (each read scans metadata)."""
    from importlib.metadata import version as installed

    return installed(name)
