"""The one interface every debiasing method implements, and what the runner hands it.

A method says only what differs from plain training: its loss, optionally a sampler,
what it prepares (CAVs, auxiliary models), which parameters it trains and how the model
looks at test time. The runner owns the loop, optimiser, devices, seeds and logging.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiasbench.data.dataset import CAPABILITIES, Batch, BenchmarkDataset, Sampler
from debiasbench.core.hparams import HParam
from debiasbench.core.randomness import RandomStreams
from debiasbench.evaluation.explanation import ArtifactCav

if TYPE_CHECKING:
    from debiasbench.contract.config import RunConfig
    from debiasbench.models.latent import LatentModel

# ``Batch`` and ``Sampler`` live with the data (``debiasbench.data.dataset``); they are re-exported
# here so that a method file needs one import: ``from debiasbench.contract.method import Batch, Method``.
__all__ = ["Batch", "CAPABILITIES", "HParam", "Method", "RunContext", "Sampler"]


@dataclass
class RunContext:
    """Everything a method may look at while preparing and training.

    Randomness: ``generator`` is the runner's training-order stream. Every other random
    draw of a method comes from a stream named for its purpose: ``ctx.stream(name)`` for a
    ``torch.Generator`` that advances with every draw (``generator=`` of ``torch.rand``,
    ``randperm``, ...); ``with ctx.random(name):`` (or ``ctx.sample(name, distribution)``)
    around code that draws from torch's global generator and takes none
    (``torch.distributions``), new draws on every entry, for per-step randomness; ``with
    ctx.init(name):`` around one-off initialisation (building a model), the same draws on
    every entry, which is why entering it again while the run's steps run raises. Each
    stream's seed is derived from the run seed by hashing its name
    (``debiasbench.core.randomness``), and every stream handed out is kept in the run's
    checkpoints, so a resumed run ends as an uninterrupted one. Prefix names with the
    method's name (``"jtt.identifier_init"``) so that shared helpers never meet.
    """

    config: RunConfig
    dataset: BenchmarkDataset
    model: LatentModel
    device: torch.device
    generator: torch.Generator
    log_metrics: Callable[[Mapping[str, float]], None] = lambda metrics: None
    #: One line for the person running it (stderr), e.g. a setting the method is unsuited to.
    note: Callable[[str], None] = lambda message: None
    #: Per-class weights of the training cross-entropy (run key ``class_weights``), None: plain.
    class_weights: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: The run's named streams; built from ``config.seed`` with ``generator`` as ``train``.
    streams: RandomStreams | None = None

    def __post_init__(self) -> None:
        if self.streams is None:
            self.streams = RandomStreams(self.config.seed, self.device, train=self.generator)

    def stream(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """The generator named ``name``, seeded from the run seed and the name."""
        assert self.streams is not None
        return self.streams.get(name, device)

    def init(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A block whose draws from torch's global generator come from stream ``name``'s
        seed: the same on every entry, for one-off initialisation (an auxiliary model's
        weights). Not for per-step draws: entered again during training it raises
        ``debiasbench.core.randomness.RepeatedInitError``; use ``random`` there."""
        assert self.streams is not None
        return self.streams.init(name)

    def random(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A block whose draws from torch's global generator are new on every entry and
        reproducible: seeded from the next draw of stream ``name`` (checkpointed, so a
        resumed run draws what the uninterrupted one drew); the global state is restored
        afterwards. For per-step randomness from code that takes no generator, e.g.
        ``torch.distributions``."""
        assert self.streams is not None
        return self.streams.random(name)

    def sample(self, name: str, distribution: torch.distributions.Distribution,
               shape: tuple[int, ...] = ()) -> Tensor:
        """``distribution.sample(shape)`` drawn inside ``random(name)``: a new draw per call,
        e.g. ``ctx.sample("mixup.lambda", Beta(0.2, 0.2))`` once per step."""
        with self.random(name):
            return distribution.sample(torch.Size(shape))


#: The method whose trained model a correction (``starts_from_vanilla``) starts from.
BASE_METHOD = "vanilla"


class Method:
    """Base class of every method. Subclasses set ``name`` and override ``loss``.

    ``hparams`` declares the method's hyper-parameters (defaults and search spaces);
    an instance reads the resolved values as ``self.hp[name]``. ``requires`` names what
    the dataset must provide (a subset of ``CAPABILITIES``); the runner refuses a dataset
    that lacks one. ``starts_from_vanilla`` says the method corrects a trained model: the
    runner finds (or first trains) the vanilla run of the same dataset, model and seed and
    loads its weights before ``prepare``.
    ``train_defaults`` overrides run config defaults (epochs, lr, optimizer, ...) for
    this method unless the user sets them.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    hparams: ClassVar[dict[str, HParam]] = {}
    requires: ClassVar[frozenset[str]] = frozenset()
    starts_from_vanilla: ClassVar[bool] = False
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "pretrained_checkpoint" in getattr(cls, "requires", ()):
            raise TypeError(f"method {cls.name or cls.__name__!r}: 'pretrained_checkpoint' is no longer a "
                            "requirement; declare starts_from_vanilla = True instead")

    def __init__(self, hp: Mapping[str, Any], ctx: RunContext):
        self.hp = dict(hp)
        self.ctx = ctx

    @classmethod
    def check_config(cls, hp: Mapping[str, Any], dataset_cls: type, provides: frozenset[str]) -> None:
        """Refuse hyper-parameters that do not fit the dataset, before anything runs.

        ``provides`` is what the dataset gives under the run's ``dataset_params`` (an
        injected artifact adds bias labels and masks to a real dataset), so check it
        rather than ``dataset_cls.provides``.

        Raise ``debiasbench.core.errors.ConfigError`` naming the key (e.g. ``hparams.bias_source``
        = labels on a dataset without bias labels): the CLI shows it as one line, exit 2.
        """

    @classmethod
    def unsuited(cls, hp: Mapping[str, Any], dataset_cls: type, dataset_params: Mapping[str, Any]) -> str:
        """Why the method's own assumptions exclude this dataset ("" when they do not).

        A pair named here is refused with that reason unless the run key ``allow_unsuited``
        is set, and a sweep lists it as not a job: a result the method was never meant to
        give is not shown as its result. Decide from the class and ``dataset_params`` (e.g.
        ``dataset_cls.shortcut_in_one_class(dataset_params)``), nothing that needs the data.
        """
        return ""

    def prepare(self, ctx: RunContext) -> None:
        """Work before training: fit CAVs, train auxiliary models, score samples."""

    def sampler(self, ctx: RunContext) -> Sampler | None:
        """Order of training samples per epoch; None means a uniform shuffle."""
        return None

    def trainable_parameters(self, model: LatentModel) -> Iterable[nn.Parameter]:
        """Parameters the optimiser updates (corrections may fine-tune only the head)."""
        return model.parameters()

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss and named scalars to log: tensors (kept on the device, read
        once per epoch) or Python numbers."""
        raise NotImplementedError

    def cross_entropy(self, logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        """The run's training cross-entropy: class-weighted when the run key ``class_weights``
        says so, so that every method's objective is weighted alike.

        Each sample's CE is multiplied by its label's weight; ``mean`` is then divided by the
        summed weights of the batch (``torch.nn.CrossEntropyLoss(weight=...)``, which the
        RR-ClArC authors' pipeline uses), ``none`` returns the weighted per-sample terms for
        the method to reduce. Use it for the loss the run's model learns from; statistics a
        method derives from the CE (difficulty scores, group losses for weights) may use the
        plain one.
        """
        weight = self.ctx.class_weights
        return F.cross_entropy(logits, y, weight=None if weight is None else weight.to(logits.dtype),
                               reduction=reduction)

    def class_weighted_mean(self, per_sample: Tensor, y: Tensor) -> Tensor:
        """The mean of per-sample loss terms, class-weighted as ``cross_entropy``'s: each term
        times its label's weight, divided by the batch's summed weights; the plain mean when
        the run has no class weights. For a loss built per sample from the CE (focal loss,
        generalised CE), so that it is weighted like every other method's; ``cross_entropy``'s
        ``mean`` is ``class_weighted_mean(F.cross_entropy(logits, y, reduction="none"), y)``."""
        weight = self.ctx.class_weights
        if weight is None:
            return per_sample.mean()
        w = weight.to(device=per_sample.device, dtype=per_sample.dtype)[y]
        return (w * per_sample).sum() / w.sum()

    def state_dict(self) -> dict[str, Any]:
        """State the method changes while training (e.g. smoothed statistics), saved in
        each epoch's checkpoint so a resumed run ends as an uninterrupted one would.
        Tensors only. What ``prepare`` computes again is not needed here."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned (called after ``prepare`` on resume)."""

    def eval_model(self, model: LatentModel) -> nn.Module:
        """The model evaluated at test time (P-ClArC projects activations here)."""
        return model

    def artifact_cav(self) -> ArtifactCav:
        """The CAV the explanation phase fits to score ``tcav_score`` and ``cav_alignment``
        (``debiasbench.evaluation.explanation``). The default for every method; a family
        that trains with a CAV of its own kind (ClArC) evaluates with that kind."""
        return ArtifactCav()
