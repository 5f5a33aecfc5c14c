"""The docs say what the code declares, and the README keeps its promises.

The tables of run keys, methods' hyper-parameters and datasets' parameters in ``docs/``
are rendered from the declarations by ``tools/docs_tables.py`` and committed between
marker comments; a changed declaration must come with its regenerated table. The README
is the short entry point: at most 200 lines, with the two commands CI runs on a fresh
machine, and links into ``docs/`` that lead somewhere.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _docs_tables() -> ModuleType:
    """``tools/docs_tables.py`` as a module (``tools/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_tables = _docs_tables()


@pytest.mark.parametrize("name", sorted(docs_tables.BLOCKS))
def test_generated_table_matches_the_declarations(name: str) -> None:
    page, _ = docs_tables.BLOCKS[name]
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    committed = docs_tables.committed(text, name, page)
    assert committed == docs_tables.render(name), (
        f"docs/{page}: the generated block {name!r} differs from what the code declares; "
        f"run `{docs_tables.COMMAND}` and commit the result")


def test_write_then_check_finds_nothing_stale(tmp_path: Path) -> None:
    """--write leaves pages that --check accepts, and touches only the marked blocks."""
    for page, _ in docs_tables.BLOCKS.values():
        source = (ROOT / "docs" / page).read_text(encoding="utf-8")
        (tmp_path / page).write_text(source.replace(docs_tables.END, "stale row\n" + docs_tables.END, 1),
                                     encoding="utf-8")
    assert len(docs_tables.stale(tmp_path)) == len(docs_tables.BLOCKS)
    docs_tables.write(tmp_path)
    assert docs_tables.stale(tmp_path) == []
    for page, _ in docs_tables.BLOCKS.values():
        assert (tmp_path / page).read_text(encoding="utf-8") == (ROOT / "docs" / page).read_text(encoding="utf-8")


def test_a_page_without_its_markers_is_named(tmp_path: Path) -> None:
    for other, _ in docs_tables.BLOCKS.values():
        (tmp_path / other).write_text((ROOT / "docs" / other).read_text(encoding="utf-8"), encoding="utf-8")
    page, _ = docs_tables.BLOCKS["methods"]
    (tmp_path / page).write_text("# Methods\n", encoding="utf-8")
    with pytest.raises(docs_tables.MissingBlock, match=f"docs/{page}: no block"):
        docs_tables.write(tmp_path)


def test_generated_tables_name_every_builtin_method_and_dataset() -> None:
    methods, datasets = docs_tables.render("methods"), docs_tables.render("datasets")
    for name in docs_tables.builtins("debiasbench.methods"):
        assert f"### `{name}`" in methods
    for name in docs_tables.builtins("debiasbench.datasets"):
        assert f"### `{name}`" in datasets


def test_every_declaration_has_a_help_string() -> None:
    """A blank description cell is a declaration that says nothing to its user."""
    from debiasbench.contract.config import RUN_KEYS

    declared = {f"run key {key}": spec for key, spec in RUN_KEYS.items()}
    for name, cls in docs_tables.builtins("debiasbench.methods").items():
        declared.update({f"{name}: hparams.{key}": spec for key, spec in cls.hparams.items()})
    for name, cls in docs_tables.builtins("debiasbench.datasets").items():
        declared.update({f"{name}: dataset_params.{key}": spec for key, spec in cls.params.items()})
    assert [where for where, spec in declared.items() if not spec.help.strip()] == []


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_keeps_the_two_commands() -> None:
    """CI runs these on a fresh machine (.ci/run): the README must show them as commands."""
    commands = [line.split("#")[0].strip() for line in README.read_text(encoding="utf-8").splitlines()]
    assert "make demo" in commands
    assert "make test" in commands


def test_readme_links_into_docs_exist() -> None:
    text = README.read_text(encoding="utf-8")
    targets = sorted(set(re.findall(r"\]\((docs/[^)#]+)", text)))
    assert targets, "the README links into docs/"
    assert [t for t in targets if not (ROOT / t).is_file()] == []
