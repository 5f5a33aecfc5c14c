"""Foundations every other part stands on: user errors, declared values (``HParam``),
name registries, named random streams, atomic files, mean +- standard error, machine
resources.

May import: nothing of debiasbench (only the standard library, numpy, torch).
"""
