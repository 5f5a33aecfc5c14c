"""The maths of the ClArC family and RRR, checked against independent hand computations.

Every expected value below is computed with functional ops from the network's own
parameters (no ``LatentModel`` hooks, no method code), in float64 so that tolerances can
be tight. Tiny networks keep the whole file fast on a CPU.
"""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiasbench.core.randomness import derive_seed
from debiasbench.methods.clarc import ClArCMethod, project_length, shift_to_length
from debiasbench.contract.config import resolve_config
from debiasbench.contract.method import Batch, RunContext
from debiasbench.models.build import build_model
from debiasbench.models.latent import LatentModel
from debiasbench.methods.aclarc import AClArC
from debiasbench.methods.pclarc import PClArC, ProjectedModel
from debiasbench.methods.rrclarc import RRClArC
from debiasbench.methods.rrr import RRR

DTYPE = torch.float64
N, K, C, H, W = 6, 3, 4, 5, 5  # samples, classes, latent channels, spatial size
DETERMINISTIC_TARGETS = ("all_logits", "max_logit", "target_logit", "logprobs", "log_softmax")
ALL_TARGETS = ("random_logits", *DETERMINISTIC_TARGETS)
RTOL, ATOL = 1e-5, 1e-10


# --------------------------------------------------------------------------- fixtures / helpers


def child(net: nn.Module, name: str) -> nn.Module:
    """``net.<name>`` as a module (``nn.Module.__getattr__`` is typed ``Tensor | Module``)."""
    return net.get_submodule(name)


def conv_layer(net: nn.Module, name: str = "conv") -> nn.Conv2d:
    """``net.<name>``, a ``Conv2d``."""
    layer = child(net, name)
    assert isinstance(layer, nn.Conv2d)
    return layer


def linear_layer(net: nn.Module, name: str = "fc") -> nn.Linear:
    """``net.<name>``, a ``Linear``."""
    layer = child(net, name)
    assert isinstance(layer, nn.Linear)
    return layer


def tiny_net(nonlinear_head: bool = False, seed: int = 0) -> nn.Sequential:
    """conv -> ReLU (the latent) -> [1x1 conv -> tanh] -> mean pool -> fc, in float64.

    The linear head (avg pool + fc) is the brief's network: its logits are linear in the
    latent, so the penalty does not depend on the backbone. The nonlinear head makes the
    second-order path reach the conv weights too.
    """
    with torch.random.fork_rng():  # seeded init without touching the global RNG of other tests
        torch.manual_seed(seed)
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv2d(3, C, 3, padding=1), act=nn.ReLU())
        if nonlinear_head:
            layers["head_conv"] = nn.Conv2d(C, C, 1)
            layers["head_act"] = nn.Tanh()
        layers.update(pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(C, K))
        return nn.Sequential(layers).to(DTYPE)


def latent_model(nonlinear_head: bool = False, seed: int = 0) -> LatentModel:
    return LatentModel(tiny_net(nonlinear_head, seed), "act", K)


def hand_latent(net: nn.Module, x: Tensor) -> Tensor:
    """The latent of ``x`` by hand: ReLU(conv(x))."""
    return F.relu(F.conv2d(x, conv_layer(net).weight, conv_layer(net).bias, padding=1))


def hand_head(net: nn.Module, a: Tensor) -> Tensor:
    """Logits of latent ``a`` by hand: [tanh(1x1 conv)] -> mean over space -> linear."""
    if hasattr(net, "head_conv"):
        a = torch.tanh(F.conv2d(a, conv_layer(net, "head_conv").weight, conv_layer(net, "head_conv").bias))
    return F.linear(a.mean(dim=(2, 3)), linear_layer(net).weight, linear_layer(net).bias)


def hand_shift(a: Tensor, v: Tensor, target: float | Tensor, only_down: bool = False) -> Tensor:
    """Every position of sample i moved by s_i * v, s_i = target - <max over space of a_i, v>."""
    lengths = torch.einsum("nc,c->n", a.amax(dim=(2, 3)), v)
    shift = target - lengths
    if only_down:
        shift = torch.where(shift < 0, shift, torch.zeros_like(shift))
    return a + shift[:, None, None, None] * v[None, :, None, None]


def make_batch(seed: int = 1, mask: Tensor | None = None) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, H, W, generator=g, dtype=DTYPE)
    y = torch.randint(0, K, (N,), generator=g)
    if mask is None:
        mask = torch.rand(N, 1, H, W, generator=g) < 0.3
    return Batch(x=x, y=y, bias=torch.zeros(N, dtype=torch.long), artifact=torch.zeros(N, dtype=torch.bool),
                 mask=mask, index=torch.arange(N))


def unit(seed: int = 2, dim: int = C) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=g, dtype=DTYPE)
    return v / v.norm()


def make_ctx(model: LatentModel, method: str = "rrclarc", seed: int = 0, dataset=None) -> RunContext:
    config = resolve_config({"method": method, "dataset": "synthetic_artifacts", "device": "cpu", "seed": seed})
    return RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(seed))


def make_rrclarc(model: LatentModel, v: Tensor, target: str, lam: float = 2.0, seed: int = 0) -> RRClArC:
    hp = {"lambda": lam, "target": target, "cav_kind": "pattern", "finetune": "all"}
    method = RRClArC(hp, make_ctx(model, "rrclarc", seed))
    method.cav = v
    return method


def hand_target(logits: Tensor, y: Tensor, target: str, signs: Tensor | None = None) -> Tensor:
    """The per-sample scalar whose latent gradient is penalised, written out directly."""
    if target == "all_logits":
        return logits.sum(1)
    if target == "max_logit":
        return logits.max(1).values
    if target == "target_logit":
        return logits[torch.arange(len(y)), y]
    if target == "logprobs":  # the RR-ClArC authors' (softmax + 1e-5).log().mean(1)
        return torch.log(torch.exp(logits - logits.logsumexp(1, keepdim=True)) + 1e-5).mean(1)
    if target == "log_softmax":
        return F.log_softmax(logits, 1).mean(1)
    assert target == "random_logits" and signs is not None
    return (logits * signs).sum(1)


def hand_rrclarc(net: nn.Module, batch: Batch, v: Tensor, target: str, lam: float,
                 signs: Tensor | None = None, frozen_backbone: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, ce, penalty) of RR-ClArC by hand: CE + lam * mean_i (mean_space(dT_i/da_i) . v)^2."""
    a = hand_latent(net, batch.x)
    if frozen_backbone:
        a = a.detach().requires_grad_(True)
    logits = hand_head(net, a)
    ce = F.cross_entropy(logits, batch.y)
    (g,) = torch.autograd.grad(hand_target(logits, batch.y, target, signs).sum(), a, create_graph=True)
    pooled = g.mean(dim=(2, 3))
    penalty = (pooled @ v).pow(2).mean()
    return ce + lam * penalty, ce, penalty


def balanced_lambda(net: nn.Module, batch: Batch, v: Tensor, target: str) -> float:
    """A lambda that makes lambda * penalty equal CE, so neither term is lost in the other's rounding.

    Penalties span decades across targets (logprobs' latent gradients nearly cancel).
    """
    with torch.enable_grad():
        _, ce, penalty = hand_rrclarc(net, batch, v, target, 1.0)
    assert float(penalty.detach()) > 1e-30
    return float(ce.detach() / penalty.detach())


def per_class_dots(net: nn.Module, batch: Batch, v: Tensor) -> Tensor:
    """[N, K]: <mean_space(d logit_k / d a_i), v> for every sample and class."""
    a = hand_latent(net, batch.x)
    logits = hand_head(net, a)
    rows = []
    for k in range(K):
        (g,) = torch.autograd.grad(logits[:, k].sum(), a, retain_graph=True)
        rows.append(g.mean(dim=(2, 3)) @ v)
    return torch.stack(rows, 1).detach()


def grads(loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    return list(torch.autograd.grad(loss, params, allow_unused=False))


def assert_close(actual: Tensor, expected: Tensor, rtol: float = RTOL, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=rtol, atol=atol)


def assert_same_parameter_gradients(loss: Tensor, expected: Tensor, model: nn.Module) -> None:
    """Both losses give every parameter of ``model`` the same gradient."""
    params = list(model.parameters())
    for got, want in zip(grads(loss, params), grads(expected, params)):
        assert_close(got, want)


# --------------------------------------------------------------------------- 1. RR-ClArC


@pytest.mark.parametrize("nonlinear_head", [False, True], ids=["linear_head", "tanh_head"])
@pytest.mark.parametrize("target", DETERMINISTIC_TARGETS)
def test_rrclarc_loss_and_parameter_gradients_equal_a_hand_autograd_computation(target: str, nonlinear_head: bool):
    model = latent_model(nonlinear_head)
    batch, v = make_batch(), unit()
    lam = balanced_lambda(model.net, batch, v, target)
    method = make_rrclarc(model, v, target, lam)

    loss, logs = method.loss(model, batch)
    expected, ce, penalty = hand_rrclarc(model.net, batch, v, target, lam)
    assert_close(loss, expected)
    assert_close(logs["ce"], ce)
    assert_close(logs["penalty"], penalty)
    assert_same_parameter_gradients(loss, expected, model)


@pytest.mark.parametrize("target", DETERMINISTIC_TARGETS)
def test_rrclarc_penalty_gradient_reaches_fc_weight_through_the_second_order_path(target: str):
    """d penalty / d fc.weight is not zero and matches the hand value (create_graph=True)."""
    model = latent_model()
    batch, v = make_batch(), unit()
    method = make_rrclarc(model, v, target, lam=1.0)
    loss, _ = method.loss(model, batch)
    _, ce, hand_penalty = hand_rrclarc(model.net, batch, v, target, 1.0)
    (penalty_grad,) = torch.autograd.grad(loss - ce, [linear_layer(model.net).weight], retain_graph=True)  # = penalty
    (hand_grad,) = torch.autograd.grad(hand_penalty, [linear_layer(model.net).weight])
    assert float(hand_grad.abs().max()) > 1e-8
    assert_close(penalty_grad, hand_grad)


def test_rrclarc_random_logits_is_reproducible_from_the_generator_seed():
    model = latent_model()
    batch, v = make_batch(), unit()
    first = make_rrclarc(model, v, "random_logits", seed=7).loss(model, batch)[0]
    second = make_rrclarc(model, v, "random_logits", seed=7).loss(model, batch)[0]
    assert torch.equal(first.detach(), second.detach())


def test_rrclarc_random_logits_penalty_equals_hand_computation_with_the_same_sign_draw():
    model = latent_model(nonlinear_head=True)
    batch, v, lam = make_batch(), unit(), 2.0
    method = make_rrclarc(model, v, "random_logits", lam, seed=3)
    # The method draws randint(0, 2, logits.shape) from the run's stream "rrclarc.signs"; replay that draw.
    replay = torch.Generator().manual_seed(derive_seed(3, "rrclarc.signs"))
    signs = torch.randint(0, 2, (N, K), generator=replay).to(DTYPE) * 2 - 1

    loss, logs = method.loss(model, batch)
    expected, ce, penalty = hand_rrclarc(model.net, batch, v, "random_logits", lam, signs=signs)
    assert_close(loss, expected)
    assert_close(logs["penalty"], penalty)
    assert_same_parameter_gradients(loss, expected, model)


def test_rrclarc_random_logits_penalty_lies_between_zero_and_its_largest_value_over_sign_choices():
    """(sum_k s_k c_ik)^2 <= (sum_k |c_ik|)^2 for any signs s; the mean over i keeps the bound."""
    model = latent_model(nonlinear_head=True)
    batch, v = make_batch(), unit()
    dots = per_class_dots(model.net, batch, v)
    upper = dots.abs().sum(1).pow(2).mean()
    for seed in range(5):
        _, logs = make_rrclarc(model, v, "random_logits", seed=seed).loss(model, batch)
        assert 0.0 <= float(logs["penalty"]) <= float(upper) * (1 + 1e-9)


def test_rrclarc_all_logits_penalty_is_the_squared_sum_of_per_class_projections():
    model = latent_model(nonlinear_head=True)
    batch, v = make_batch(), unit()
    dots = per_class_dots(model.net, batch, v)
    _, logs = make_rrclarc(model, v, "all_logits").loss(model, batch)
    assert_close(logs["penalty"], dots.sum(1).pow(2).mean())


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_rrclarc_penalty_is_zero_when_the_cav_is_orthogonal_to_every_fc_row(target: str):
    """With a linear head every latent gradient is a combination of fc's rows."""
    model = latent_model()
    weight = linear_layer(model.net).weight.detach()  # [K, C] with K < C: a null direction exists
    v = torch.linalg.svd(weight, full_matrices=True).Vh[-1]
    assert float((weight @ v).abs().max()) < 1e-12 and abs(float(v.norm()) - 1) < 1e-12
    batch = make_batch()
    loss, logs = make_rrclarc(model, v, target, lam=1e6).loss(model, batch)
    assert abs(float(logs["penalty"])) < 1e-20
    assert_close(loss, logs["ce"], atol=1e-12)


# --------------------------------------------------------------------------- 2. frozen backbone


@pytest.mark.parametrize("nonlinear_head", [False, True], ids=["linear_head", "tanh_head"])
@pytest.mark.parametrize("target", DETERMINISTIC_TARGETS)
def test_rrclarc_loss_backpropagates_to_fc_weight_when_the_backbone_is_frozen(target: str, nonlinear_head: bool):
    model = latent_model(nonlinear_head)
    batch, v = make_batch(), unit()
    lam = balanced_lambda(model.net, batch, v, target)
    for p in conv_layer(model.net).parameters():
        p.requires_grad_(False)
    method = make_rrclarc(model, v, target, lam)

    loss, _ = method.loss(model, batch)
    loss.backward()
    assert conv_layer(model.net).weight.grad is None
    fc_grad = linear_layer(model.net).weight.grad
    assert fc_grad is not None

    expected, ce, _ = hand_rrclarc(model.net, batch, v, target, lam, frozen_backbone=True)
    assert_close(loss, expected)
    (want,) = torch.autograd.grad(expected, [linear_layer(model.net).weight], retain_graph=True)
    assert_close(fc_grad, want)
    (ce_only,) = torch.autograd.grad(ce, [linear_layer(model.net).weight])
    assert not torch.allclose(fc_grad, ce_only)  # the penalty's gradient is in there too


# --------------------------------------------------------------------------- 3. P-ClArC projection


def random_latent(seed: int = 5, n: int = N) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, H, W, generator=g, dtype=DTYPE)


def test_shift_to_length_brings_every_sample_to_the_target_length():
    a, v = random_latent(), unit()
    for target in (-1.5, 0.0, 0.7, torch.tensor(2.5, dtype=DTYPE)):
        out = shift_to_length(a, v, target)
        assert_close(project_length(out, v), torch.full((N,), float(target), dtype=DTYPE), atol=1e-5)


def test_project_length_is_the_max_pooled_activation_dotted_with_the_cav():
    a, v = random_latent(), unit()
    assert_close(project_length(a, v), a.amax(dim=(2, 3)) @ v)


def test_shift_to_length_matches_the_hand_shift_and_leaves_a_sample_at_the_target_unchanged():
    a, v = random_latent(), unit()
    target = project_length(a, v)[2]
    out = shift_to_length(a, v, target)
    assert_close(out, hand_shift(a, v, target))
    assert_close(out[2], a[2], atol=1e-12)
    assert not torch.allclose(out[0], a[0])


def test_shift_to_length_changes_each_position_only_along_the_cav_and_by_the_same_amount():
    a, v = random_latent(), unit()
    change = shift_to_length(a, v, 1.0) - a
    along = torch.einsum("nchw,c->nhw", change, v)
    orthogonal = change - along[:, None] * v[None, :, None, None]
    assert float(orthogonal.abs().max()) < 1e-12  # the component orthogonal to v is unchanged
    assert_close(along, along[:, :1, :1].expand_as(along), atol=1e-12)  # one shift per sample
    assert_close(along[:, 0, 0], 1.0 - project_length(a, v))


def test_shift_to_length_removes_an_artifact_added_along_the_cav_at_every_position():
    clean, v = random_latent(), unit()
    c = torch.linspace(-2.0, 3.0, N, dtype=DTYPE)
    artifact = clean + c[:, None, None, None] * v[None, :, None, None]
    for target in (0.0, 1.3):
        assert_close(shift_to_length(artifact, v, target), shift_to_length(clean, v, target), atol=1e-12)


def test_shift_to_length_only_down_moves_only_samples_above_the_target():
    a, v = random_latent(), unit()
    lengths = project_length(a, v)
    target = lengths.median()
    above, below = lengths > target, lengths <= target
    assert above.any() and below.any()
    out = shift_to_length(a, v, target, only_down=True)
    assert_close(out[below], a[below], atol=0.0)
    assert_close(project_length(out[above], v), torch.full((int(above.sum()),), float(target), dtype=DTYPE),
                 atol=1e-5)
    assert_close(out, hand_shift(a, v, target, only_down=True))


def test_shift_to_length_works_on_flat_latents():
    g = torch.Generator().manual_seed(9)
    a, v = torch.randn(N, C, generator=g, dtype=DTYPE), unit()
    out = shift_to_length(a, v, 0.5)
    assert_close(out @ v, torch.full((N,), 0.5, dtype=DTYPE))
    change = out - a
    assert_close(change - (change @ v)[:, None] * v, torch.zeros_like(change), atol=1e-12)


@pytest.mark.parametrize("only_down", [False, True])
def test_projected_model_output_equals_the_head_applied_to_the_hand_projected_latent(only_down: bool):
    model = latent_model(nonlinear_head=True)
    batch, v = make_batch(), unit()
    target = torch.tensor(0.2, dtype=DTYPE)
    projected = ProjectedModel(model, v, target, only_down=only_down)
    with torch.no_grad():
        a = hand_latent(model.net, batch.x)
        expected_latent = hand_shift(a, v, target, only_down)
        expected = hand_head(model.net, expected_latent)
        assert_close(projected(batch.x), expected)
        logits, latent = projected.forward_with_latent(batch.x)
        assert_close(logits, expected)
        assert_close(latent, expected_latent)
        assert_close(model(batch.x), hand_head(model.net, a))  # the wrapped model is unchanged


def test_pclarc_eval_model_projects_to_the_clean_length():
    model = latent_model()
    batch, v = make_batch(), unit()
    for shift, only_down in (("both", False), ("down", True)):
        method = PClArC({"cav_kind": "pattern", "finetune": "after_latent", "shift": shift},
                        make_ctx(model, "pclarc"))
        method.cav, method.clean_length = v, torch.tensor(0.4, dtype=DTYPE)
        with torch.no_grad():
            expected = hand_head(model.net, hand_shift(hand_latent(model.net, batch.x), v, 0.4, only_down))
            assert_close(method.eval_model(model)(batch.x), expected)


# --------------------------------------------------------------------------- 4. A-ClArC


@pytest.mark.parametrize("nonlinear_head", [False, True], ids=["linear_head", "tanh_head"])
def test_aclarc_loss_is_cross_entropy_of_the_head_on_latents_shifted_to_the_artifact_length(nonlinear_head: bool):
    model = latent_model(nonlinear_head)
    batch, v = make_batch(), unit()
    method = AClArC({"cav_kind": "pattern", "finetune": "all"}, make_ctx(model, "aclarc"))
    method.cav, method.artifact_length = v, torch.tensor(1.7, dtype=DTYPE)

    loss, logs = method.loss(model, batch)
    shifted = shift_to_length(hand_latent(model.net, batch.x), v, method.artifact_length)
    assert_close(shifted, hand_shift(hand_latent(model.net, batch.x), v, 1.7))
    expected = F.cross_entropy(hand_head(model.net, shifted), batch.y)
    assert_close(loss, expected)
    assert_close(logs["ce"], expected)
    assert_same_parameter_gradients(loss, expected, model)


# --------------------------------------------------------------------------- 5. RRR


def make_rrr(model: LatentModel, lam: float = 3.0) -> RRR:
    """RRR with Ross et al.'s objective (the authors' one: tests/test_authors_clarc.py)."""
    return RRR({"lambda": lam, "finetune": "all", "objective": "ross"}, make_ctx(model, "rrr"))


def hand_rrr(net: nn.Module, batch: Batch, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    x = batch.x.detach().requires_grad_(True)
    logits = hand_head(net, hand_latent(net, x))
    ce = F.cross_entropy(logits, batch.y)
    (g,) = torch.autograd.grad(F.log_softmax(logits, 1).sum(), x, create_graph=True)
    assert batch.mask is not None
    mask = batch.mask.expand_as(g).to(g.dtype)
    penalty = ((mask * g) ** 2).sum(dim=(1, 2, 3)).mean()
    return ce + lam * penalty, ce, penalty


@pytest.mark.parametrize("nonlinear_head", [False, True], ids=["linear_head", "tanh_head"])
def test_rrr_loss_and_gradients_equal_ce_plus_masked_input_gradient_norm_by_hand(nonlinear_head: bool):
    model = latent_model(nonlinear_head)
    batch = make_batch()
    _, ce, penalty = hand_rrr(model.net, batch, 1.0)
    lam = float(ce.detach() / penalty.detach())  # lambda * penalty == CE: both terms count
    loss, logs = make_rrr(model, lam).loss(model, batch)
    expected, ce, penalty = hand_rrr(model.net, batch, lam)
    assert_close(loss, expected)
    assert_close(logs["penalty"], penalty)
    assert_close(logs["ce"], ce)
    assert_same_parameter_gradients(loss, expected, model)


def test_rrr_penalty_is_zero_when_the_mask_is_empty():
    model = latent_model(nonlinear_head=True)
    batch = make_batch(mask=torch.zeros(N, 1, H, W, dtype=torch.bool))
    loss, logs = make_rrr(model, lam=1e6).loss(model, batch)
    assert float(logs["penalty"]) == 0.0
    assert_close(loss, logs["ce"], atol=0.0)


def test_rrr_penalty_is_additive_over_disjoint_masks_and_a_channel_mask_broadcasts():
    model = latent_model(nonlinear_head=True)
    batch = make_batch()
    assert batch.mask is not None
    left = batch.mask.clone()
    left[..., W // 2:] = False
    right = batch.mask & ~left
    method = make_rrr(model)

    def penalty(mask: Tensor) -> Tensor:
        return method.loss(model, make_batch(mask=mask))[1]["penalty"]

    assert_close(penalty(left) + penalty(right), penalty(batch.mask))
    assert_close(penalty(batch.mask.expand(N, 3, H, W)), penalty(batch.mask))


def test_rrr_loss_backpropagates_to_fc_weight_when_the_backbone_is_frozen():
    model = latent_model(nonlinear_head=True)
    for p in conv_layer(model.net).parameters():
        p.requires_grad_(False)
    batch = make_batch()
    loss, _ = make_rrr(model).loss(model, batch)
    expected, _, _ = hand_rrr(model.net, batch, 3.0)
    (got,) = torch.autograd.grad(loss, [linear_layer(model.net).weight])
    (want,) = torch.autograd.grad(expected, [linear_layer(model.net).weight])
    assert_close(got, want)


# --------------------------------------------------------------------------- 6. trainable parameters


def fake_dataset(shape: tuple[int, ...]) -> SimpleNamespace:
    """Just what ``trainable_parameters`` reads: the image shape."""
    return SimpleNamespace(sample_shape=shape[1:])


def scoped(model: LatentModel, scope: str) -> list[int]:
    method = ClArCMethod({"cav_kind": "pattern", "finetune": scope},
                         make_ctx(model, "aclarc", dataset=fake_dataset((4, 3, 16, 16))))
    return [id(p) for p in method.trainable_parameters(model)]


def ids(*modules: nn.Module) -> list[int]:
    return [id(p) for m in modules for p in m.parameters()]


def test_finetune_scopes_on_small_cnn_train_only_fc_after_latent_or_linear_and_everything_for_all():
    model = build_model("small_cnn", 4)
    assert scoped(model, "after_latent") == ids(linear_layer(model.net))
    assert scoped(model, "linear") == ids(linear_layer(model.net))
    assert scoped(model, "all") == ids(model)
    assert len(scoped(model, "all")) > len(ids(linear_layer(model.net)))


def test_finetune_scopes_differ_when_linear_layers_sit_before_and_convs_after_the_latent():
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1), act=nn.ReLU(), conv2=nn.Conv2d(4, 4, 1), bn=nn.BatchNorm2d(4),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc1=nn.Linear(4, 5), fc2=nn.Linear(5, 3)))
    model = LatentModel(net, "act", 3)
    assert scoped(model, "after_latent") == ids(*(child(net, name) for name in ("conv2", "bn", "fc1", "fc2")))
    assert sorted(scoped(model, "linear")) == sorted(ids(child(net, "fc1"), child(net, "fc2")))
    assert scoped(model, "all") == ids(net)

    mlp = nn.Sequential(OrderedDict(flat=nn.Flatten(), lin1=nn.Linear(3 * 16 * 16, 8), act=nn.ReLU(),
                                    lin2=nn.Linear(8, 3)))
    model = LatentModel(mlp, "act", 3)
    assert scoped(model, "after_latent") == ids(child(mlp, "lin2"))
    assert sorted(scoped(model, "linear")) == sorted(ids(child(mlp, "lin1"), child(mlp, "lin2")))
