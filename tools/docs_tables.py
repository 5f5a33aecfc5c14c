"""The docs' tables that the code declares: run config keys, methods' hparams, datasets.

The run keys (``debiasbench.contract.config.RUN_KEYS``), every built-in method's
``hparams`` and ``requires`` and every built-in dataset's ``params`` are declared once, as
``HParam``s with a default, the values allowed, a search space and a help string. The
docs show them as tables rendered from those declarations, so a new key, a changed
default or a renamed hparam cannot leave the docs behind: each table sits in a docs page
between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``, this script rewrites
the blocks, and ``tests/test_docs.py`` fails while a committed block differs from what
the code renders.

    python tools/docs_tables.py --write    # rewrite the blocks in docs/
    python tools/docs_tables.py --check    # exit 1 naming each stale block
    python tools/docs_tables.py NAME       # print one block

Built-ins are the entry points of the ``debiasbench`` distribution itself (as the
registry loads them), so plugins installed beside it never appear in these tables.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from debiasbench.contract.config import NESTED_KEYS, RUN_KEYS, RunConfig
from debiasbench.core.hparams import Choice, HParam, IntUniform, LogUniform, Uniform
from debiasbench.core.registry import BUILTIN_DISTRIBUTION
from debiasbench.data.image_files import ImageFileDataset, image_params

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
START = "<!-- generated: {name} -->"
END = "<!-- end generated -->"
COMMAND = "python tools/docs_tables.py --write"


# --- cells -----------------------------------------------------------------------------

def literal(value: Any) -> str:
    """A value as a user writes it in YAML or ``--set``: ``null``, ``true``, ``1e-05``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    return str(value)


def code(value: Any) -> str:
    """``value`` as a code span (a pipe inside one does not end a table cell)."""
    return f"`{literal(value)}`"


#: Characters of declared text that Markdown would read as markup: ``N*3*S*S`` as
#: emphasis, ``<root>`` as an HTML tag, ``|`` as the end of a table cell.
_MARKUP = {"*": "\\*", "<": "&lt;", "|": "\\|", "[": "\\[", "]": "\\]"}


def cell(text: str) -> str:
    """Declared text (help strings, descriptions) as one line of Markdown: shown as
    written, except that its own code spans stay code spans."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(part if part.startswith("`") else "".join(_MARKUP.get(c, c) for c in part) for part in parts)


def allowed(spec: HParam) -> str:
    """What a user may set: the choices as code spans, else the declaration's own words."""
    if spec.choices is None:
        return cell(spec.describe())
    text = ", ".join(code(c) for c in spec.choices)
    return text + (" or `null`" if spec.optional or spec.default is None else "")


def searched(spec: HParam) -> str:
    """The distribution a random-search sweep draws from (``n_trials``), or "-"."""
    space = spec.space
    if isinstance(space, Choice):
        return "one of " + ", ".join(code(v) for v in space.values)
    if isinstance(space, LogUniform):
        return f"log-uniform {code(space.low)} to {code(space.high)}"
    if isinstance(space, Uniform):
        return f"uniform {code(space.low)} to {code(space.high)}"
    if isinstance(space, IntUniform):
        return f"integers {code(space.low)} to {code(space.high)}"
    return "-"


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def hparam_table(declared: Mapping[str, HParam], prefix: str) -> str:
    """One row per declaration: name, default, allowed values, search space, help."""
    return table(["name", "default", "allowed", "searched", "description"],
                 ([f"`{prefix}{name}`", code(spec.default), allowed(spec), searched(spec), cell(spec.help)]
                  for name, spec in declared.items()))


# --- the built-ins -----------------------------------------------------------------------

def builtins(group: str) -> dict[str, Any]:
    """Name -> object of the entry points ``debiasbench`` itself declares in ``group``."""
    found = {}
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        if getattr(dist, "name", None) == BUILTIN_DISTRIBUTION:
            found[ep.name] = ep.load()
    return dict(sorted(found.items()))


def set_by(key: str, default: Any, datasets: Mapping[str, Any], methods: Mapping[str, Any]) -> str:
    """Which datasets' and methods' ``train_defaults`` change a run key's default, grouped
    by the value they set (a method's wins over a dataset's)."""
    groups: dict[str, dict[str, list[str]]] = {}
    for kind, owners in (("datasets", datasets), ("methods", methods)):
        for name, cls in owners.items():
            value = cls.train_defaults.get(key, default)
            if value != default:
                groups.setdefault(literal(value), {}).setdefault(kind, []).append(name)
    parts = []
    for value, kinds in groups.items():
        who = [("on " if kind == "datasets" else "for ") + ", ".join(names) for kind, names in kinds.items()]
        parts.append(f"`{value}` " + " and ".join(who))
    return cell("; ".join(parts)) or "-"


def config_keys() -> str:
    """The run keys: declared default, allowed values, search space, help, and the
    datasets and methods that change the default."""
    datasets, methods = builtins("debiasbench.datasets"), builtins("debiasbench.methods")
    rows = [[f"`{key}`", code(spec.default), allowed(spec), searched(spec), described(key, spec),
             set_by(key, spec.default, datasets, methods)] for key, spec in RUN_KEYS.items()]
    where = {"dataset_params": "the dataset's parameters (see [Datasets](datasets.md))",
             "hparams": "the method's hyper-parameters (see [Methods](methods.md))"}
    owner = {"dataset_params": "the dataset", "hparams": "the method"}
    rows += [[f"`{key}.<name>`", f"declared by {owner[key]}", f"declared by {owner[key]}",
              f"declared by {owner[key]}", where[key], "-"] for key in NESTED_KEYS]
    return table(["key", "default", "allowed", "searched", "description", "default changed"], rows)


def described(key: str, spec: HParam) -> str:
    """A run key's help, and whether it is left out of the run key (``NON_SEMANTIC``:
    keys that change where or how fast a run happens, not its result)."""
    text = cell(spec.help)
    if key in RunConfig.NON_SEMANTIC:
        text += " Not part of the run key."
    return text


def needs(cls: Any) -> str:
    parts = [f"`{r}`" for r in sorted(cls.requires)]
    if cls.starts_from_vanilla:
        parts.append("a vanilla base run")
    return ", ".join(parts) or "-"


def training_defaults(defaults: Mapping[str, Any]) -> str:
    return ", ".join(f"`{k}: {literal(v)}`" for k, v in defaults.items()) or "-"


def methods() -> str:
    """A summary row per method, then each method's hparams."""
    found = builtins("debiasbench.methods")
    out = [table(["method", "what it does", "needs", "training defaults"],
                 ([f"[`{name}`](#{anchor(name)})", cell(cls.description), needs(cls),
                   training_defaults(cls.train_defaults)] for name, cls in found.items()))]
    for name, cls in found.items():
        out.append(f"{heading(name, cls)} Needs: {needs(cls)}. {source(cls)}")
        out.append(hparam_table(cls.hparams, "hparams.") if cls.hparams else "No hyper-parameters.")
    return "\n\n".join(out)


def datasets() -> str:
    """A summary row per dataset, the parameters every image-file dataset shares, then
    each dataset's own parameters (and the shared ones it declares differently)."""
    found = builtins("debiasbench.datasets")
    shared = image_params()
    out = [table(["dataset", "what it is", "provides", "training defaults"],
                 ([f"[`{name}`](#{anchor(name)})", cell(cls.description), provides(cls),
                   training_defaults(cls.train_defaults)] for name, cls in found.items())),
           "### Parameters of every image-file dataset {#image-file-parameters}\n\n"
           "The datasets read from downloaded files take these, and their own below.",
           hparam_table(shared, "dataset_params.")]
    for name, cls in found.items():
        text = f"{heading(name, cls)} {source(cls)}"
        own = cls.params
        if issubclass(cls, ImageFileDataset):
            text += f"\n\nFiles: `{cls.layout}`." if cls.layout else ""
            own = {k: v for k, v in cls.params.items() if shared.get(k) != v}
            text += ("\n\nThe [image-file parameters](#image-file-parameters), and:" if own else
                     "\n\nThe [image-file parameters](#image-file-parameters) as declared there.")
        out.append(text)
        if own:
            out.append(hparam_table(own, "dataset_params."))
    return "\n\n".join(out)


def provides(cls: Any) -> str:
    """What the dataset gives as it is, and what an injected artifact adds (real data)."""
    text = ", ".join(f"`{p}`" for p in sorted(cls.provides)) or "-"
    spec = cls.params.get("artifact")
    kinds = [k for k in (spec.choices or ()) if k != "none"] if spec is not None else []
    if kinds and "none" in (spec.choices or ()):
        params = {**{k: s.default for k, s in cls.params.items()}, "artifact": kinds[0]}
        added = sorted(set(cls.provides_for(params)) - set(cls.provides))
        if added:
            text += "; with `artifact` set: " + ", ".join(f"`{p}`" for p in added)
    return text


def heading(name: str, cls: Any) -> str:
    """A method's or dataset's section: its name as a heading, then its description."""
    return f"### `{name}` {{#{anchor(name)}}}\n\n{cell(cls.description)}"


def source(cls: Any) -> str:
    """A link to the API reference of the module that defines ``cls``."""
    return f"Code: [`{cls.__module__}`][{cls.__module__}]."


def anchor(name: str) -> str:
    """The heading id of a method's or dataset's section: its name."""
    return name


#: Block name -> (page under docs/, renderer).
BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "config-keys": ("configuration.md", config_keys),
    "methods": ("methods.md", methods),
    "datasets": ("datasets.md", datasets),
}


# --- blocks in pages ---------------------------------------------------------------------

def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(START.format(name=name)) + r"\n(.*?)" + re.escape(END), re.S)


class MissingBlock(Exception):
    """A page, or the markers of a block in it, is not where ``BLOCKS`` says."""


def read_page(docs: Path, page: str) -> str:
    path = docs / page
    if not path.is_file():
        raise MissingBlock(f"docs/{page} not found (it holds generated tables)")
    return path.read_text(encoding="utf-8")


def committed(text: str, name: str, page: str) -> str:
    """The body of block ``name`` in a page's text; missing markers are an error."""
    match = _pattern(name).search(text)
    if match is None:
        raise MissingBlock(f"docs/{page}: no block {START.format(name=name)} ... {END}")
    return match.group(1)


def render(name: str) -> str:
    """The block's body as the code declares it (ends with one newline)."""
    return BLOCKS[name][1]().rstrip("\n") + "\n"


def stale(docs: Path = DOCS) -> list[str]:
    """``docs/PAGE (block NAME)`` for every block whose committed body is not the rendering."""
    out = []
    for name, (page, _) in BLOCKS.items():
        if committed(read_page(docs, page), name, page) != render(name):
            out.append(f"docs/{page} (block {name})")
    return out


def write(docs: Path = DOCS) -> list[str]:
    """Rewrite every block in place; returns the pages changed."""
    changed = []
    for name, (page, _) in BLOCKS.items():
        path = docs / page
        text = read_page(docs, page)
        committed(text, name, page)
        match = _pattern(name).search(text)
        assert match is not None
        block = START.format(name=name) + "\n" + render(name) + END
        new = text[:match.start()] + block + text[match.end():]
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(f"docs/{page}")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("block", nargs="?", choices=sorted(BLOCKS), help="print this block")
    parser.add_argument("--write", action="store_true", help="rewrite the blocks in docs/")
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed block is stale")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except MissingBlock as exc:
        print(f"docs_tables: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.write:
        for page in write():
            print(f"rewrote {page}")
        return 0
    if args.check:
        behind = stale()
        for where in behind:
            print(f"{where} differs from the code's declarations; run `{COMMAND}`", file=sys.stderr)
        return 1 if behind else 0
    for name in [args.block] if args.block else sorted(BLOCKS):
        print(render(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
