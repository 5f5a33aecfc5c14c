"""Tracking: runs, params, metrics and tags in an MLflow store, written in batches.

May import: ``debiasbench.core``, ``debiasbench.contract``.
"""
