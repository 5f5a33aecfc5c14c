"""Networks with a named latent layer: ``LatentModel``.

Many debiasing methods act on one intermediate activation: CAVs are fitted on it,
P-ClArC projects it, RRR-style penalties take gradients with respect to it, and
corrections fine-tune only what comes after it. ``LatentModel`` gives every method the
same view of that activation, whatever the architecture, through forward hooks, so that
any torchvision, timm or plugin network works without being rewritten.

ImageNet weights expect inputs normalised with the dataset's mean and std, while every
input in this harness is an image in [0, 1]. The normalisation therefore lives in the
``LatentModel`` (in front of ``net``, outside ``net``'s state dict), so training,
evaluation, CAVs, per-sample gradients and explanations all get it without knowing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from debiasbench.core.errors import UserError, unknown_name_message


Edit = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Normalization:
    """What inputs a network's weights expect: ``(x - mean) / std`` per channel.

    ``in_channels`` is the number of channels the data has: equal to ``len(mean)``, or 1
    for a grey image, which is repeated to ``len(mean)`` channels first (a grey photo shown
    as RGB), so the pretrained first convolution stays exactly the library's.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_channels: int

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std need one value per channel, got {self.mean} and {self.std}")
        if self.in_channels not in (1, len(self.mean)):
            raise ValueError(f"in_channels must be 1 or {len(self.mean)}, got {self.in_channels}")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std must be positive, got {self.std}")


#: Attribute of a network that records the ``Normalization`` its weights expect. Every
#: ``LatentModel`` built around that network (a method's test-time wrapper, say, made as
#: ``LatentModel(model.net, ...)``) then normalises its inputs the same way. A plain
#: attribute: it is not a tensor, so ``net.state_dict()`` does not change.
NORMALIZATION_ATTRIBUTE = "debiasbench_input_normalization"


class InputNormalization(nn.Module):
    """Applies a ``Normalization``; its constants are non-persistent buffers.

    Buffers, so ``.to(device)`` moves them with the model and ``functional_call`` sees
    them; non-persistent, so neither ``LatentModel.state_dict()`` nor ``net.state_dict()``
    changes and checkpoints load with ``strict=True`` as before.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, normalization: Normalization, device: torch.device | None = None):
        super().__init__()
        self.normalization = normalization
        shape = (1, len(normalization.mean), 1, 1)
        self.register_buffer("mean", torch.tensor(normalization.mean, device=device).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(normalization.std, device=device).view(shape), persistent=False)

    @property
    def in_channels(self) -> int:
        return self.normalization.in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input normalisation expects [N, {self.in_channels}, H, W] images, got {tuple(x.shape)}"
            )
        channels = self.mean.shape[1]
        if self.in_channels != channels:
            x = x.expand(-1, channels, -1, -1)
        mean, std = self.mean, self.std
        if mean.device != x.device or (x.is_floating_point() and mean.dtype != x.dtype):
            dtype = x.dtype if x.is_floating_point() else mean.dtype
            mean, std = mean.to(x.device, dtype), std.to(x.device, dtype)
        return (x - mean) / std

    def relevance_to_input(self, relevance: Tensor) -> Tensor:
        """Relevance of the normalised tensor ``[N, len(mean), H, W]`` in the input's channels.

        A per-channel affine map moves no relevance between pixels, so the map is the
        same; a repeated grey channel gets the sum of its copies' relevance (a copy hands
        all its relevance back to its source), which keeps the total.
        """
        if self.in_channels != relevance.shape[1]:
            return relevance.sum(dim=1, keepdim=True)
        return relevance

    def extra_repr(self) -> str:
        n = self.normalization
        return f"mean={n.mean}, std={n.std}, in_channels={n.in_channels}"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; afterwards every module gets back its own
    training flag (``model.train(was_training)`` would also unfreeze BatchNorm layers a
    correction keeps in eval mode)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class _LatentReached(Exception):
    """Raised from a hook to stop a forward pass once the latent is known (saves compute)."""


class LatentModel(nn.Module):
    """A classifier ``net`` plus the dotted name of the submodule whose output is "the latent".

    ``forward`` is the plain network; ``forward_with_latent`` also returns (and may edit)
    the latent activation. The wrapped ``net`` is not modified: hooks are added per call
    and always removed, so the model stays picklable, copyable and ``state_dict``-stable.

    ``normalization`` (default: what ``net`` records under ``NORMALIZATION_ATTRIBUTE``,
    set by ``build_model`` for ImageNet weights) is applied to every input before ``net``
    sees it, in ``forward``, ``forward_with_latent``, ``latent`` and
    ``parameters_after_latent``; it is recorded on ``net`` so every wrapper of the same
    network inherits it. Without one, inputs reach ``net`` untouched, as they always did.
    """

    def __init__(
        self,
        net: nn.Module,
        latent_layer: str,
        num_classes: int,
        arch: str = "custom",
        normalization: Normalization | None = None,
    ):
        super().__init__()
        self.net = net
        self.arch = arch
        self.num_classes = num_classes
        self.latent_layer = latent_layer
        _latent_module(net, latent_layer, arch)  # fail at construction, not at first use
        if normalization is None:
            normalization = getattr(net, NORMALIZATION_ATTRIBUTE, None)
        self.input_normalization: InputNormalization | None = None
        if normalization is not None:
            setattr(net, NORMALIZATION_ATTRIBUTE, normalization)
            self.input_normalization = InputNormalization(normalization, device=_device_of(net))
        self._inputs_normalized = False

    def normalize_input(self, x: Tensor) -> Tensor:
        """What ``net`` sees for input ``x``: ``x`` normalised, or ``x`` itself without a normalisation."""
        return x if self.input_normalization is None else self.input_normalization(x)

    @contextlib.contextmanager
    def inputs_already_normalized(self) -> Iterator[LatentModel]:
        """For the block, every forward takes ``normalize_input(x)`` instead of ``x``.

        Explanations use it: LRP treats the normalised tensor as the input, so the
        normalisation (a per-channel affine map, which no LRP rule covers) does not stand
        between the rules and the pixels. Sets a flag on this model: do not run it in
        another thread meanwhile.
        """
        previous = self._inputs_normalized
        self._inputs_normalized = True
        try:
            yield self
        finally:
            self._inputs_normalized = previous

    def _net_input(self, x: Tensor) -> Tensor:
        if self.input_normalization is None or self._inputs_normalized:
            return x
        return self.input_normalization(x)

    @property
    def latent_module(self) -> nn.Module:
        """The submodule whose output is the latent activation."""
        return self.net.get_submodule(self.latent_layer)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``x``."""
        return self.net(self._net_input(x))

    def forward_with_latent(self, x: Tensor, edit: Edit | None = None) -> tuple[Tensor, Tensor]:
        """``(logits, latent)``; with ``edit``, the rest of the network sees ``edit(latent)``.

        The returned latent is the (edited) tensor the head was computed from, so
        ``torch.autograd.grad(logits.sum(), latent, create_graph=True)`` works. The head
        receives a copy of it: an in-place activation after the latent layer (VGG's
        ``ReLU(inplace=True)``) would otherwise overwrite the returned latent.
        If the latent module runs more than once per forward, the last call is returned.
        """
        captured: list[Tensor] = []

        def hook(module: nn.Module, inputs: tuple, output: object) -> Tensor:
            out = self._check_output(output)
            if edit is not None:
                out = self._check_output(edit(out), what="edit result")
            captured.clear()
            captured.append(out)
            return out.clone()

        handle = self.latent_module.register_forward_hook(hook)
        try:
            logits = self.net(self._net_input(x))
        finally:
            handle.remove()
        if not captured:
            raise UserError(f"latent layer {self.latent_layer!r} of {self.arch!r} did not run in forward")
        return logits, captured[0]

    def latent(self, x: Tensor) -> Tensor:
        """The latent activation of ``x`` (its first call); the layers after it are not run."""
        captured: list[Tensor] = []

        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            captured.append(self._check_output(output))
            raise _LatentReached

        handle = self.latent_module.register_forward_hook(hook)
        try:
            self.net(self._net_input(x))
        except _LatentReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise UserError(f"latent layer {self.latent_layer!r} of {self.arch!r} did not run in forward")
        return captured[0]

    def parameters_after_latent(self, example_input: Tensor) -> list[nn.Parameter]:
        """Parameters of the modules that start running after the latent is produced.

        This is the "head" that corrections may fine-tune while the features stay frozen.
        The order is found from one no-grad forward of ``example_input`` in eval mode
        (training flags are restored, BN statistics untouched). A module that also runs
        before the latent (a shared module) is excluded, since training it would change
        the latent too. Parameters are listed once each, in execution order.
        """
        latent_module = self.latent_module
        owners = [m for m in self.net.modules() if next(m.parameters(recurse=False), None) is not None]
        before: set[int] = set()
        after: list[nn.Module] = []
        done = [False]

        def start(module: nn.Module, inputs: tuple) -> None:
            if not done[0]:
                before.add(id(module))
            elif id(module) not in before and module not in after:
                after.append(module)

        def finish(module: nn.Module, inputs: tuple, output: object) -> None:
            done[0] = True

        handles = [m.register_forward_pre_hook(start) for m in owners]
        handles.append(latent_module.register_forward_hook(finish))
        try:
            with eval_mode(self.net), torch.no_grad():
                self.net(self._net_input(example_input))
        finally:
            for h in handles:
                h.remove()
        if not done[0]:
            raise UserError(f"latent layer {self.latent_layer!r} of {self.arch!r} did not run in forward")
        params: list[nn.Parameter] = []
        seen: set[int] = set()
        for m in after:
            for p in m.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def _check_output(self, output: object, what: str = "output") -> Tensor:
        if not isinstance(output, Tensor):
            raise UserError(
                f"latent layer {self.latent_layer!r} of {self.arch!r}: {what} is a "
                f"{type(output).__name__}, not a tensor; choose another latent layer"
            )
        return output

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, latent_layer={self.latent_layer!r}, num_classes={self.num_classes}"


def _device_of(net: nn.Module) -> torch.device | None:
    """Where ``net``'s tensors live (None for a net without any): a wrapper built around an
    already moved network must put its normalisation constants there too."""
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return None


def _latent_module(net: nn.Module, name: str, arch: str) -> nn.Module:
    """``net.get_submodule(name)``, or a UserError that suggests a close module name."""
    if name:
        try:
            return net.get_submodule(name)
        except AttributeError:
            pass
    known = [n for n, _ in net.named_modules() if n]
    raise UserError(unknown_name_message(f"{arch} latent layer", name, known))
