"""debiasbench: a benchmark harness for methods that unlearn a model's shortcuts.

The packages, lowest first; each may import only those before it (enforced by
``tests/test_architecture.py``):

``core``        errors, declared values, registries, random streams, atomic files
``data``        the dataset contract, pixels, loaders, artifacts, real image files
``models``      networks with a named latent layer
``evaluation``  accuracies, CAVs, LRP relevance, heatmaps
``contract``    ``Method`` and the run configuration
``train``       one optimiser step, the shared epoch loop, mining, losses, samplers
``track``       the MLflow store
``run``         one run: the runner, checkpoints, claims
``sweep``       sweeps and their launchers
``report``      tables, model selection, the leaderboard
``testing``     the plugin contract kit; ``cli`` the ``debiasbench`` command

Built-in methods and datasets live in the repository's ``methods/`` and ``datasets/``
folders, installed as ``debiasbench.methods`` and ``debiasbench.datasets``; they may
import ``core`` to ``train``.
"""
