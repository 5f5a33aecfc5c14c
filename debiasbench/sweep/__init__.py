"""Sweeps: grids of runs expanded from a sweep file, resumed by run key, and the
launchers that execute them (this process, worker processes, a Ray cluster, Slurm).

May import: ``core``, ``data``, ``models``, ``contract``, ``track``, ``run``.
"""
