"""Networks with a named latent layer (``LatentModel``), the built-in builders and
ImageNet weights from the libraries' standard caches.

May import: ``debiasbench.core``.
"""
