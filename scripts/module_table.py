"""The module table of docs/architecture.md, read from src/luigiflow with `ast` (nothing is
imported): a row per module with its lines, its responsibility (the first sentence of its
docstring) and the luigiflow modules it imports, wherever the import stands (at module level,
in a function, under `if TYPE_CHECKING:`).

Rows are ordered so that a module comes after every module it imports (then by name): the
package has no import cycle (tests/test_layers.py), so the table reads from the ground up.

    python scripts/module_table.py           # print the table
    python scripts/module_table.py --write   # put it into docs/architecture.md, in place

tests/test_docs.py checks that the page holds what `--write` would put there.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "luigiflow"
PAGE = REPO / "docs" / "architecture.md"
BEGIN = "<!-- module-table: begin (python scripts/module_table.py --write) -->"
END = "<!-- module-table: end -->"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\[])")  # not after "e.g." before a word


@dataclass(frozen=True)
class Module:
    name: str  # the file's stem: `plan`, `__init__`
    lines: int
    responsibility: str
    imports: tuple[str, ...]  # names of the package's other modules, sorted


def modules(package: Path = PACKAGE) -> list[Module]:
    """Every .py file of the package (not its subfolders), read from its source."""
    files = {path.stem: path for path in sorted(package.glob("*.py"))}
    found = []
    for name, path in files.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        imported = {
            target
            for node in ast.walk(tree)
            for target in _imported(node, package.name, set(files))
            if target != name
        }
        found.append(Module(name, len(text.splitlines()), _summary(tree), tuple(sorted(imported))))
    return found


def _imported(node: ast.AST, package: str, names: set[str]) -> list[str]:
    """The package's modules (of `names`) an import statement reaches: `import luigiflow.plan`
    and `from luigiflow.plan import Plan` reach `plan`; `from luigiflow import plan, Thing`
    reaches `plan`, and `__init__` for `Thing`. Relative imports are read alike."""
    if isinstance(node, ast.Import):
        return [m for alias in node.names if (m := _module_of(alias.name, package)) in names]
    if not isinstance(node, ast.ImportFrom) or node.level > 1:  # level 2: above the package
        return []
    source = node.module or ""
    if node.level == 1:
        source = f"{package}.{source}" if source else package
    if source == package:
        return [alias.name if alias.name in names else "__init__" for alias in node.names]
    module = _module_of(source, package)
    return [module] if module in names else []


def _module_of(dotted: str, package: str) -> str:
    """`luigiflow.plan` (or `luigiflow.plan.Plan`) -> `plan`; outside the package -> ""."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == package and len(parts) > 1 else ""


def _summary(tree: ast.Module) -> str:
    """The first sentence of the module's docstring, on one line."""
    paragraph = " ".join((ast.get_docstring(tree) or "").split("\n\n")[0].split())
    return SENTENCE_END.split(paragraph, maxsplit=1)[0]


def ordered(found: list[Module]) -> list[Module]:
    """Each module after all those it imports, then by name; a cycle is an error."""
    by_name = {module.name: module for module in found}
    depth: dict[str, int] = {}

    def level(name: str, path: tuple[str, ...] = ()) -> int:
        if name in path:
            raise ValueError(f"import cycle: {' -> '.join((*path, name))}")
        if name not in depth:
            below = [level(n, (*path, name)) for n in by_name[name].imports]
            depth[name] = 1 + max(below, default=-1)
        return depth[name]

    return sorted(found, key=lambda module: (level(module.name), module.name))


def table(found: list[Module]) -> str:
    """The Markdown table (imports that `__init__` gets are its lazily exported names)."""
    rows = [
        "| module | lines | responsibility | imports |",
        "| --- | ---: | --- | --- |",
    ]
    for module in ordered(found):
        imports = ", ".join(f"`{name}`" for name in module.imports) or "—"
        text = module.responsibility.replace("|", "\\|")
        rows.append(f"| `{module.name}` | {module.lines} | {text} | {imports} |")
    return "\n".join(rows)


def with_table(page: str, rows: str) -> str:
    """The page with `rows` between its two markers."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{PAGE.name} needs the markers {BEGIN!r} and {END!r}, in that order")
    return page[: start + len(BEGIN)] + "\n" + rows + "\n" + page[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"update {PAGE.relative_to(REPO)}")
    args = parser.parse_args(argv)
    rows = table(modules())
    if not args.write:
        print(rows)
        return 0
    page = PAGE.read_text(encoding="utf-8")
    updated = with_table(page, rows)
    if updated != page:
        PAGE.write_text(updated, encoding="utf-8")
        print(f"{PAGE.relative_to(REPO)}: module table updated")
    else:
        print(f"{PAGE.relative_to(REPO)}: module table already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
