"""Networks with a named latent layer, and how they are built.

``latent``         ``LatentModel``: the activation methods act on, read, edited and differentiated
``architectures``  the built-in builders (``small_cnn``, ``mlp``, ``resnet18``, ``vgg16``,
                   ``efficientnet_b0``) and timm's by name
``pretrained``     ImageNet weights from the libraries' standard caches, or a file
``build``          ``build_model``: the one entry point to a network

May import: ``debiasbench.core``.
"""
