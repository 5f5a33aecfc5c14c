"""LatentModel and the model builders: shapes, latent access and edits, gradients, loading."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import torch
from torch import Tensor, nn

from debiasbench.core.errors import UserError
from debiasbench.models.build import build_model
from debiasbench.models.latent import LatentModel
from debiasbench.core.registry import MODELS

ARCHS = [
    "small_cnn",
    "resnet18",
    "efficientnet_b0",
    "timm:resnet18",
    pytest.param("vgg16", marks=pytest.mark.slow),
]

DEFAULT_LATENT = {
    "small_cnn": "block3",
    "resnet18": "layer4",
    "efficientnet_b0": "features.8",
    "timm:resnet18": "layer4",
    "vgg16": "features.28",
}


def _build(arch: str, num_classes: int = 3, **kwargs) -> LatentModel:
    """A seeded model in eval mode (deterministic BN, dropout and stochastic depth).

    BN statistics are first estimated on one random batch: with the initial running
    statistics a deep random EfficientNet shrinks its activations to ~1e-14 in eval mode,
    which would make every comparison of logits meaningless.
    """
    torch.manual_seed(0)
    model = build_model(arch, num_classes, **kwargs)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.momentum = None  # cumulative average: one batch gives exactly its statistics
            m.reset_running_stats()
        with torch.no_grad():
            model.train()(torch.randn(8, kwargs.get("in_channels", 3), 32, 32))
    return model.eval()


def _batch(channels: int = 3, size: int = 32) -> Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))


def _logits_of_zero_latent(model: LatentModel) -> Tensor:
    """What each network's head computes from an all-zero latent, written out by hand."""
    net = model.net
    if model.arch == "vgg16":  # ReLU, max-pool and average-pool keep zeros at zero
        return cast(nn.Sequential, net.classifier)(torch.zeros(2, 512 * 7 * 7))
    if model.arch == "efficientnet_b0":
        return cast(nn.Linear, cast(nn.Sequential, net.classifier)[1]).bias.expand(2, -1)
    if model.arch == "timm:resnet18":
        get_classifier = cast(Callable[[], nn.Linear], net.get_classifier)
        return get_classifier().bias.expand(2, -1)
    return cast(nn.Linear, net.fc).bias.expand(2, -1)  # global average pool of zeros is zero


@pytest.mark.parametrize("arch", ARCHS)
def test_builds_with_requested_classes_and_default_latent(arch: str) -> None:
    model = _build(arch)
    assert isinstance(model, LatentModel)
    assert (model.arch, model.num_classes, model.latent_layer) == (arch, 3, DEFAULT_LATENT[arch])
    assert model(_batch()).shape == (2, 3)


@pytest.mark.parametrize("arch", ARCHS)
def test_latent_is_readable_and_matches_forward_with_latent(arch: str) -> None:
    model = _build(arch)
    x = _batch()
    with torch.no_grad():
        latent = model.latent(x)
        logits, latent2 = model.forward_with_latent(x)
        plain = model(x)
    assert latent.dim() == 4 and latent.shape[0] == 2
    torch.testing.assert_close(latent, latent2)
    torch.testing.assert_close(logits, plain)


@pytest.mark.parametrize("arch", ARCHS)
def test_zeroing_the_latent_changes_logits_to_the_head_applied_to_zeros(arch: str) -> None:
    model = _build(arch)
    x = _batch()
    with torch.no_grad():
        logits = model(x)
        edited, latent = model.forward_with_latent(x, edit=torch.zeros_like)
        expected = _logits_of_zero_latent(model)
    assert not torch.allclose(logits, edited)
    assert torch.count_nonzero(latent) == 0
    torch.testing.assert_close(edited, expected)


def test_edit_equals_running_the_head_on_the_edited_latent_by_hand() -> None:
    model = _build("small_cnn")
    x = _batch()
    with torch.no_grad():
        logits, latent = model.forward_with_latent(x, edit=lambda z: 2 * z - 0.5)
        net = cast(nn.Sequential, model.net)
        by_hand = net[5:](2 * net[:5](x) - 0.5)  # block3 is the 5th child
    torch.testing.assert_close(latent, 2 * model.latent(x) - 0.5)
    torch.testing.assert_close(logits, by_hand)


@pytest.mark.parametrize("arch", ARCHS)
def test_second_order_penalty_on_latent_gradient_reaches_parameters(arch: str) -> None:
    model = _build(arch)
    model.zero_grad(set_to_none=True)
    logits, latent = model.forward_with_latent(_batch())
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), latent, create_graph=True)
    assert grad.shape == latent.shape and grad.requires_grad
    penalty = grad.pow(2).sum()
    penalty.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(torch.count_nonzero(g) > 0 for g in grads)


def test_latent_is_not_overwritten_by_an_inplace_activation_after_it() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    model = LatentModel(net, "0", num_classes=2)
    x = torch.randn(16, 4)
    logits, latent = model.forward_with_latent(x)
    torch.testing.assert_close(latent, net[0](x))
    assert (latent < 0).any()  # pre-ReLU values survive
    (grad,) = torch.autograd.grad(logits.sum(), latent)
    assert grad.shape == latent.shape


def test_hooks_are_removed_even_when_the_edit_fails() -> None:
    model = _build("small_cnn")

    def broken(z: Tensor) -> Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.forward_with_latent(_batch(), edit=broken)
    model.latent(_batch())
    assert not model.latent_module._forward_hooks
    assert not any(m._forward_pre_hooks for m in model.modules())


def _names(model: LatentModel, params: list[nn.Parameter]) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.net.named_parameters() if id(p) in ids}


def test_parameters_after_latent_of_resnet18_are_the_head_only() -> None:
    model = _build("resnet18").train()
    bn1 = cast(nn.BatchNorm2d, model.net.bn1)
    assert bn1.running_mean is not None
    running_mean = bn1.running_mean.clone()
    names = _names(model, model.parameters_after_latent(_batch()))
    assert names == {"fc.weight", "fc.bias"}
    assert "conv1.weight" not in names
    assert model.training and bn1.training  # mode restored
    torch.testing.assert_close(bn1.running_mean, running_mean)  # stats untouched


def test_parameters_after_latent_of_small_cnn_exclude_the_blocks() -> None:
    model = _build("small_cnn")
    names = _names(model, model.parameters_after_latent(_batch()))
    assert "fc.weight" in names
    assert not any(n.startswith(("block1.", "block3.")) for n in names)
    assert not model.training


def test_unknown_arch_error_suggests_resnet18() -> None:
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        build_model("resnet81", 3)


def test_unknown_timm_model_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown timm model 'resnet81'"):
        build_model("timm:resnet81", 3)


def test_unknown_latent_layer_is_a_user_error_naming_arch_and_close_names() -> None:
    with pytest.raises(UserError, match=r"resnet18 latent layer 'layer5'; did you mean 'layer\d'") as info:
        build_model("resnet18", 3, latent_layer="layer5")
    assert "\n" not in str(info.value)


def test_explicit_latent_layer_overrides_the_default() -> None:
    model = _build("resnet18", latent_layer="layer3")
    assert model.latent(_batch()).shape == (2, 256, 2, 2)


def test_builtin_models_are_registered() -> None:
    assert {"small_cnn", "resnet18", "vgg16", "efficientnet_b0"} <= set(MODELS.names())


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18", "efficientnet_b0", "timm:resnet18"])
def test_other_input_channel_counts_are_accepted(arch: str) -> None:
    assert _build(arch, in_channels=1)(_batch(channels=1)).shape == (2, 3)


@pytest.mark.parametrize("size", [8, 9, 13])
def test_small_cnn_accepts_small_and_odd_inputs(size: int) -> None:
    assert _build("small_cnn")(_batch(size=size)).shape == (2, 3)


@pytest.mark.parametrize(
    ("arch", "wrap"),
    [
        ("small_cnn", lambda m: m.net.state_dict()),
        ("small_cnn", lambda m: {"model": m.state_dict()}),  # LatentModel keys carry "net."
        ("small_cnn", lambda m: {"state_dict": m.net.state_dict(), "epoch": 3}),
        ("resnet18", lambda m: m.net.state_dict()),
    ],
    ids=["raw", "model-key", "state_dict-key", "resnet18-raw"],
)
def test_pretrained_with_other_num_classes_keeps_backbone_and_new_head(tmp_path, arch, wrap) -> None:
    source = _build(arch, num_classes=5)
    torch.manual_seed(123)  # a different init, so equal latents prove the weights were loaded
    for p in source.parameters():
        nn.init.normal_(p, std=0.05)
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(source), path)

    model = build_model(arch, 3, pretrained=str(path)).eval()  # keeps the loaded BN statistics
    x = _batch()
    with torch.no_grad():
        torch.testing.assert_close(model.latent(x), source.latent(x))
    assert cast(nn.Linear, model.net.fc).weight.shape[0] == 3
    assert model(x).shape == (2, 3)


def test_missing_pretrained_file_is_a_user_error_naming_the_path(tmp_path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(UserError, match="nope.pt"):
        build_model("small_cnn", 3, pretrained=str(path))


def test_unreadable_pretrained_file_is_a_one_line_user_error(tmp_path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read") as info:
        build_model("small_cnn", 3, pretrained=str(path))
    assert "\n" not in str(info.value)


def test_pretrained_with_no_fitting_tensor_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"something.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UserError, match="no tensors that fit"):
        build_model("small_cnn", 3, pretrained=str(path))


# --------------------------------------------------------------------------- mlp (LfF's Colored MNIST network)


def test_mlp_is_lffs_three_hidden_layers_of_100_with_the_last_hidden_output_as_latent() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", 10)
    linears = [m for m in model.net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3 * 28 * 28, 100), (100, 100), (100, 100), (100, 10)]
    x = torch.rand(4, 3, 28, 28)
    latent = model.latent(x)
    assert model.latent_layer == "feature" and latent.shape == (4, 100) and (latent >= 0).all()  # after the ReLU
    torch.testing.assert_close(cast(nn.Linear, model.net.classifier)(latent), model(x))
    assert _names(model, model.parameters_after_latent(x)) == {"classifier.weight", "classifier.bias"}


def test_mlp_takes_its_input_width_from_the_sample_shape_build_model_is_given() -> None:
    model = build_model("mlp", 2, input_shape=(1, 16, 12))
    assert cast(nn.Linear, cast(nn.Sequential, model.net.feature)[0]).in_features == 16 * 12
    assert model(torch.rand(5, 1, 16, 12)).shape == (5, 2)


def test_a_builder_without_input_shape_is_called_as_before() -> None:
    calls = []

    def old_style(num_classes: int, in_channels: int = 3):
        calls.append((num_classes, in_channels))
        return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, num_classes)), "0"

    with MODELS.override(old_style, name="test_old_style"):
        model = build_model("test_old_style", 3, input_shape=(1, 8, 8))
    assert calls == [(3, 1)] and model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
