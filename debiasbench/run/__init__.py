"""One run from config to logged metrics: the runner, checkpoints, claims on run keys
and the vanilla model a post-hoc correction starts from.

May import: everything above it -- ``core``, ``data``, ``models``, ``evaluation``,
``contract``, ``train``, ``track`` -- and the built-in ``methods`` only through the
registry.
"""
