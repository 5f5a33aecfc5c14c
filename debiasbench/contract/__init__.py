"""The contract plugins implement and runs are described by: ``Method`` (with the
``Batch`` and ``RunContext`` it receives) and the run configuration (``RunConfig``, its
keys and the run key).

May import: ``debiasbench.core``, ``debiasbench.data``, ``debiasbench.models``,
``debiasbench.evaluation``.
"""
