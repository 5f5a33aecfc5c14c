"""``make lint``'s mypy run over the tree as it is, without a tree of links.

``methods/`` and ``datasets/`` are installed as ``debiasbench.methods`` and
``debiasbench.datasets`` (``package-dir`` in pyproject.toml). mypy derives a module's
name from its folder, so given the folders it would check ``methods.jtt`` while the code
imports ``debiasbench.methods.jtt``. Here each of their files is handed to mypy with the
name it is installed under, through mypy's build API; messages name the files in the
repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mypy import build
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parents[1]
#: Repository folder -> the package it is installed as.
MAPPED = {"methods": "debiasbench.methods", "datasets": "debiasbench.datasets"}


def main(paths: list[str]) -> int:
    sources, options = process_options(["--config-file", str(ROOT / "mypy.ini"), *paths])
    for folder, package in MAPPED.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            module = package if path.stem == "__init__" else f"{package}.{path.stem}"
            sources.append(BuildSource(str(path.relative_to(ROOT)), module, None))
    try:
        result = build.build(sources, options)
        messages = result.errors
    except build.CompileError as exc:
        messages = exc.messages
    for line in messages:
        print(line)
    errors = sum(1 for line in messages if ": error:" in line)
    print(f"typecheck: {errors} error(s) in {len(sources)} files", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["debiasbench", "tests"]))
