"""Data: the dataset contract (``Split``, ``Dataset``, views), where pixels come from
(in memory, a uint8 image cache resident or streamed), loaders, artifact injectors and
the readers of real image files.

May import: ``debiasbench.core``.
"""
