"""An architecture for debiasbench's ``--model``: a builder declared in the
``debiasbench.models`` entry-point group.

A builder takes ``(num_classes, in_channels=3)`` (and ``input_shape``, one sample's
``(C, H, W)``, if it declares it) and returns the network and the name of its latent
layer, the activation that CAV-based methods read and edit. It only builds: debiasbench
wraps the network, loads pretrained weights and moves it to the device.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def stripe_cnn(num_classes: int, in_channels: int = 3) -> tuple[nn.Module, str]:
    """Two conv-ReLU blocks with 5x5 kernels and a linear head, for stripe orientation.

    Two 5x5 layers see a 9x9 patch, enough for a stripe and its neighbours at any angle;
    global pooling lets the same network take any image size. The latent is ``block2``.
    """
    net = nn.Sequential(
        OrderedDict(
            block1=nn.Sequential(nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU()),
            block2=nn.Sequential(nn.Conv2d(16, 32, 5, padding=2), nn.ReLU()),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(32, num_classes),
        )
    )
    return net, "block2"
