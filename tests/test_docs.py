"""The docs: the site builds with `mkdocs build --strict` (no broken link or anchor, every page
in the nav, every `:::` reference found), the architecture page's module table is the one the
source gives, and the README stays a short door into them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from test_layers import import_graph

PACKAGE = REPO / "src" / "luigiflow"


def _generator():
    """scripts/module_table.py, loaded as a module."""
    spec = importlib.util.spec_from_file_location(
        "module_table", REPO / "scripts" / "module_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


module_table = _generator()


@pytest.fixture(scope="module")
def found() -> list:
    """The package's modules as the generator reads them."""
    return module_table.modules()


@pytest.mark.slow  # about 3 s: mkdocs, the theme and griffe reading the package
def test_the_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    built = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    api = (site / "tasks" / "index.html").read_text(encoding="utf-8")
    for name in ("PipelineTask", "requires", "InputFile", "RegisteredModel"):
        assert f'id="luigiflow.task.{name}"' in api, f"{name} missing from the API"
    assert 'id="luigiflow.values.FollowsRunConfig"' in api
    assert "fonts.googleapis" not in (site / "index.html").read_text(encoding="utf-8")


# the architecture page -----------------------------------------------------------------------
def page_rows(page: str) -> dict[str, tuple[int, set[str]]]:
    """The page's module table: module -> (lines, imports), read back from its Markdown."""
    start, end = page.index(module_table.BEGIN), page.index(module_table.END)
    rows = {}
    for line in page[start:end].splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        imports = set(re.findall(r"`([^`]+)`", cells[3]))
        rows[cells[0].strip("`")] = (int(cells[1]), imports)
    return rows


def test_the_architecture_page_holds_the_generated_table(found):
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    expected = module_table.with_table(page, module_table.table(found))
    assert page == expected, "the module table is stale: python scripts/module_table.py --write"


def test_the_table_lists_every_module_its_lines_and_imports():
    """Read back from the page and checked against the source with the layers test's own
    import graph, so that the generator cannot be wrong in the same way as the page."""
    rows = page_rows((REPO / "docs" / "architecture.md").read_text(encoding="utf-8"))
    files = {path.stem: path for path in PACKAGE.glob("*.py")}
    assert set(rows) == set(files)
    graph = import_graph(PACKAGE)
    for name, path in files.items():
        lines, imports = rows[name]
        assert lines == len(path.read_text(encoding="utf-8").splitlines()), name
        dotted = "luigiflow" if name == "__init__" else f"luigiflow.{name}"
        found = {target.removeprefix("luigiflow.") for target in graph[dotted]}
        found = {"__init__" if target == "luigiflow" else target for target in found}
        assert imports == found, name


def test_each_row_comes_after_the_modules_it_imports(found):
    order = [module.name for module in module_table.ordered(found)]
    rows = {module.name: module for module in found}
    for position, name in enumerate(order):
        assert set(rows[name].imports) <= set(order[:position]), name


# the generator, on a package written for the test ---------------------------------------------
def test_the_generator_reads_every_form_of_import(tmp_path):
    package = tmp_path / "fakepkg"
    package.mkdir()
    files = {
        "__init__.py": '"""The package."""\n',
        "a.py": '"""A first. More."""\n\nimport fakepkg.b\nfrom fakepkg import Name, c\n',
        "b.py": (
            '"""B, e.g. the base. Then more."""\n'
            "from typing import TYPE_CHECKING\n\n"
            "if TYPE_CHECKING:\n    from .c import C\n\n\n"
            "def later():\n    from . import d\n\n    return d\n"
        ),
        "c.py": '"""C: a | b."""\nimport os\nfrom fakepkg.d import D\nfrom .. import other\n',
        "d.py": "D = 1\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    found = {module.name: module for module in module_table.modules(package)}
    assert {name: module.imports for name, module in found.items()} == {
        "__init__": (),
        "a": ("__init__", "b", "c"),  # `from pkg import Name` is a name of __init__
        "b": ("c", "d"),  # under TYPE_CHECKING; relative, in a function
        "c": ("d",),  # `from .. import` is outside the package
        "d": (),
    }
    assert found["a"].responsibility == "A first."
    assert found["b"].responsibility == "B, e.g. the base."
    assert found["c"].lines == 4
    table = module_table.table(list(found.values()))
    assert "| `c` | 4 | C: a \\| b. | `d` |" in table
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [
        "`__init__`",
        "`d`",
        "`c`",
        "`b`",
        "`a`",
    ]


def test_the_generator_refuses_a_cycle_and_a_page_without_markers():
    cycle = [
        module_table.Module("a", 1, "", ("b",)),
        module_table.Module("b", 1, "", ("a",)),
    ]
    with pytest.raises(ValueError, match="import cycle: a -> b -> a"):
        module_table.ordered(cycle)
    with pytest.raises(ValueError, match="markers"):
        module_table.with_table("no markers here", "| table |")


# the README --------------------------------------------------------------------------------------
def test_the_readme_is_short_and_its_links_lead_into_the_docs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) < 8 * 1024
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links, "the README links into docs/"
    for link in links:
        assert (REPO / link).is_file(), link
    for command in ("make run", "make test", "make test-fast", "make docs"):
        assert command in readme
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test", "test-fast", "docs"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), target


def test_every_page_is_in_the_nav():
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {path.name for path in (REPO / "docs").glob("*.md")}
    assert pages == set(re.findall(r":\s*([\w-]+\.md)\s*$", config, re.MULTILINE))
