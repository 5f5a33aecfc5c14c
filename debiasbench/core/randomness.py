"""Named random streams of a run, each derived from the run seed by hashing its name.

A method that needs randomness of its own (an auxiliary model's initialisation, the order
an auxiliary model sees the data, a random projection) asks the run context for a stream
by name: ``ctx.stream("jtt.identifier_order")``. Its seed is a hash of the run seed and
the name, the way a sweep derives trial seeds from ``trial_seed``, the method and the
trial number. So streams never collide by accident (as hand-picked offsets added to the
seed did), adding a stream does not shift any other, and the same run key gives the same
numbers whatever else the method draws. Generated datasets name their draws the same way
from their own ``seed`` parameter (``stream(seed, "colored_digits.val")``).

``RandomStreams`` remembers every generator it handed out, so a checkpoint can keep their
states and a resumed run continues each one where the killed run left it.

Two ways to make code that draws from torch's global generator (module initialisation,
``torch.distributions``, which take no generator) reproducible, for two purposes:

- ``init(name)``: every entry draws the same numbers (the stream's seed). For one-off
  initialisation: an auxiliary model built twice is built alike. Entered again while the
  run's steps run (``stepping``) it raises ``RepeatedInitError``; elsewhere a repeated
  entry warns (``RepeatedInitWarning``): per-step draws inside it would repeat every step.
- ``random(name)``: every entry draws new numbers. The block's seed is the next draw of
  the CPU stream ``name``, which advances and is checkpointed, so the draws differ per
  step, repeat across identical runs and continue after a resume. For per-step draws
  (a mixing weight from ``Beta``, dropout masks of one's own).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from typing import Iterator, Mapping

import torch
from torch import Tensor

__all__ = ["RandomStreams", "RepeatedInitError", "RepeatedInitWarning", "derive_seed", "seeded", "stream"]


def derive_seed(seed: int, name: str) -> int:
    """A 63-bit seed for the stream ``name`` of a run seeded with ``seed``.

    ``random.Random`` hashes a string seed with SHA-512, the same derivation as the
    sweep's trial seeds; the result fits ``torch.Generator.manual_seed``."""
    return random.Random(f"{seed}:{name}").getrandbits(63)


def stream(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator for the stream ``name`` of ``seed`` (``derive_seed``): how code
    outside a run, such as a generated dataset drawing from ``dataset_params.seed``, names
    its draws ("colored_digits.val") instead of adding offsets to the seed."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, name))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block on torch's global generators seeded with ``seed`` (CPU, and CUDA where
    ``device`` is a GPU), then restore them: for code that draws from the global state and
    takes no generator, such as module initialisation, without disturbing the run's own."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class RepeatedInitError(RuntimeError):
    """``init(name)`` entered again while the run's steps run: it would draw the same
    numbers at every step."""


class RepeatedInitWarning(UserWarning):
    """``init(name)`` entered again outside the steps: the block draws what it drew before."""


def _repeated_init(name: str) -> str:
    return (f"init({name!r}) entered again: it draws the same numbers on every entry (one-off "
            f"initialisation); for draws that must differ per step use random({name!r}) around code "
            f"that uses torch's global generator (torch.distributions) or pass stream({name!r}) "
            "as generator=")


class RandomStreams:
    """The named generators of one run (see the module docstring).

    ``train`` is the runner's own stream (the training order); it is seeded with the run
    seed itself, not a hash, so that vanilla training, the reference every method is
    compared with, draws what it always drew.
    """

    TRAIN = "train"

    def __init__(self, seed: int, device: torch.device, train: torch.Generator | None = None):
        """``train``: an existing training-order generator to adopt as that stream."""
        self.seed = seed
        self.device = device
        self._streams: dict[str, torch.Generator] = {
            self.TRAIN: train if train is not None else torch.Generator(device=device).manual_seed(seed)}
        self._inits: set[str] = set()
        self._stepping = False

    def get(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """The generator named ``name`` (the same object on every call), on the run's
        device unless ``device`` says otherwise (e.g. ``"cpu"`` for host-side draws)."""
        device = torch.device(device) if device is not None else self.device
        key = name if device == self.device else f"{name}@{device.type}"
        if key not in self._streams:
            self._streams[key] = torch.Generator(device=device).manual_seed(derive_seed(self.seed, name))
        return self._streams[key]

    def init(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A block whose global-RNG draws (weight initialisation) come from stream ``name``:
        the same draws on every entry. A repeated entry raises ``RepeatedInitError`` while
        ``stepping``, and warns (``RepeatedInitWarning``) otherwise."""
        if name in self._inits:
            if self._stepping:
                raise RepeatedInitError(_repeated_init(name))
            warnings.warn(_repeated_init(name), RepeatedInitWarning, stacklevel=3)
        self._inits.add(name)
        return seeded(derive_seed(self.seed, name), self.device)

    def random(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A block whose global-RNG draws (``torch.distributions``) are new on every entry:
        seeded with the next draw of the CPU stream ``name`` (which advances and is kept in
        checkpoints), on the run's device's generators, which are restored afterwards."""
        seed = int(torch.randint(0, 2**62, (), generator=self.get(name, "cpu")))
        return seeded(seed, self.device)

    @contextlib.contextmanager
    def stepping(self) -> Iterator[None]:
        """The run's training steps run inside the block: ``init`` may not repeat a name."""
        before, self._stepping = self._stepping, True
        try:
            yield
        finally:
            self._stepping = before

    def state_dict(self) -> dict[str, Tensor]:
        """Every stream handed out so far, by name, as CPU tensors (for a checkpoint)."""
        return {name: generator.get_state().cpu() for name, generator in self._streams.items()}

    def load_state_dict(self, states: Mapping[str, Tensor]) -> None:
        """Continue every stream of ``states`` where it was saved; streams are created on
        their saved device first if this run has not asked for them yet."""
        for key, state in states.items():
            name, _, device_type = key.partition("@")
            generator = self.get(name, device_type or None)
            generator.set_state(state.cpu())
