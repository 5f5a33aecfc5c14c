"""Training building blocks the runner and methods share: one optimiser step
(``TrainingStep``), the epoch loop of auxiliary models, peer-picking mining, losses,
batched per-sample gradients, device samplers, class weights.

May import: ``debiasbench.core``, ``debiasbench.data``, ``debiasbench.models``,
``debiasbench.contract``.
"""
