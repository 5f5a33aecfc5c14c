"""Training building blocks the runner and methods share: one optimiser step
(``TrainingStep``), the one epoch loop (``loop``: the runner's, auxiliary models' and
the mining peers'), peer-picking mining, losses, batched per-sample gradients, device
samplers, class weights.

May import: ``debiasbench.core``, ``debiasbench.data``, ``debiasbench.models``,
``debiasbench.contract``.
"""
