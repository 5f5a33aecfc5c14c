"""bFFHQ: faces whose age (young / old) is the label and gender the shortcut.

Read by the loader of the DisEnt file layout (``debiasbench.datasets.disent``, which also
reads ``cmnist`` and ``cifar10c``): ``root/bffhq/<percent>/align/<label>/*.png`` and
``root/bffhq/<percent>/conflict/<label>/*.png`` (training; ``percent`` the share of
bias-conflicting images, default ``0.5pct``), ``root/bffhq/valid/`` and ``root/bffhq/test/``
(searched recursively), files named ``<idx>_<label>_<bias>.png``. Kept as a module so the
``bffhq`` entry point and imports of ``debiasbench.datasets.bffhq.BFFHQ`` keep working.
"""

from __future__ import annotations

from debiasbench.datasets.disent import BFFHQ

__all__ = ["BFFHQ"]
