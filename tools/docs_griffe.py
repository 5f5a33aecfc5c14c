"""A griffe extension for the API reference: ``methods/`` and ``datasets/`` as the
subpackages they are installed as.

``pyproject.toml`` maps the repository folders ``methods/`` and ``datasets/`` into the
package (``package-dir``), so the code imports ``debiasbench.methods.rrclarc``; griffe
reads the source tree and would find no ``debiasbench/methods`` folder. When it loads
``debiasbench`` this extension loads each folder and attaches it under its installed
name, so ``::: debiasbench.methods`` works and cross-references resolve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[1]
#: Installed name under ``debiasbench`` -> repository folder (as ``package-dir`` maps them).
MAPPED = {"methods": "methods", "datasets": "datasets"}


class MappedPackages(griffe.Extension):
    """Attach the mapped folders to the ``debiasbench`` package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "debiasbench":
            return
        for name, folder in MAPPED.items():
            module = loader.load(ROOT / folder)
            assert isinstance(module, griffe.Module)
            pkg.set_member(name, module)
