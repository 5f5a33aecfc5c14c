"""Input relevance (LRP / input x gradient), the artifact-relevance share and heatmap pictures."""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from typing import cast

import pytest
import torch
from torch import Tensor, nn

from debiasbench.core.errors import UserError
from debiasbench.evaluation.relevance import (
    EXPLANATION_METHODS,
    LRP_CANONIZERS,
    artifact_relevance,
    explanation_method,
    heatmap_grid,
    input_relevance,
)
from debiasbench.models.build import build_model
from debiasbench.models.latent import LatentModel, Normalization

LRP_ARCHS = ["small_cnn", "resnet18", pytest.param("vgg16", marks=pytest.mark.slow)]
HEAD = {"small_cnn": "fc", "resnet18": "fc", "vgg16": "classifier.6"}


def _model(arch: str, num_classes: int = 3, zero_biases: bool = False) -> LatentModel:
    """A seeded model in eval mode whose BN statistics come from one random train-mode batch.

    The initial running statistics (mean 0, var 1) make BN an identity, which would leave
    the canonizers' BN merge untested; a deep random net with them also shrinks its
    activations to nothing. ``zero_biases`` zeroes every bias and BN shift (``running_mean``
    and ``bias``; the scale stays non-trivial): the net is then positively homogeneous, so
    LRP must conserve the logit up to its stabilisers.
    """
    torch.manual_seed(0)
    model = build_model(arch, num_classes)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    model.eval()
    if zero_biases:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    assert module.running_mean is not None  # BN layers here track running statistics
                    module.running_mean.zero_()
                    module.bias.zero_()
                elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                    module.bias.zero_()
    return model


def _inputs(n: int = 2, seed: int = 1) -> Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, 3, 32, 32)


def _explained_logit(model: LatentModel, x: Tensor) -> tuple[Tensor, Tensor]:
    """(target = predicted class, its logit) per sample."""
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(dim=1)
    return target, logits.gather(1, target[:, None])[:, 0]


# --------------------------------------------------------------------------- conservation


def _assert_lrp_sums_to_the_logit(model, x: Tensor) -> None:
    """LRP explains ``model`` and each sample's input relevance sums to its explained logit."""
    target, logit = _explained_logit(model, x)
    relevance, method = input_relevance(model, x, target)
    assert method == "lrp"
    assert relevance.shape == x.shape
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logit, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("arch", LRP_ARCHS)
def test_lrp_relevance_sums_to_the_logit_when_the_model_has_no_biases(arch: str) -> None:
    # Measured relative errors: ~7e-5 (small_cnn, resnet18), ~5e-4 (vgg16, whose random-init
    # activations are tiny, so the 1e-6 stabilisers of its 16 layers weigh more). 2e-3 is a
    # few times that, and far below what a missing canonizer costs (tens of percent).
    _assert_lrp_sums_to_the_logit(_model(arch, zero_biases=True), _inputs())


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_lrp_relevance_sums_to_the_logit_less_what_the_biases_absorb(arch: str) -> None:
    # With biases (and BN shifts merged into the convolutions as biases) LRP is conservative
    # up to what biases absorb. The head's bias is absorbed exactly by the epsilon rule;
    # the rest (positive merged BN shifts under z+) is small. Measured over seeds 1-3, the
    # error relative to the logit less the head's bias, summed over 8 samples, is 0.1-0.3%
    # (small_cnn) and 1.7-3.2% (resnet18); single near-zero logits can be off by more, so
    # the check is on the sum, with 10% as the bound.
    model = _model(arch)
    x = _inputs(8)
    target, logit = _explained_logit(model, x)
    relevance, _ = input_relevance(model, x, target, method="lrp")
    bias_free = logit - cast(nn.Linear, model.net.get_submodule(HEAD[arch])).bias[target].detach()
    error = (relevance.sum(dim=(1, 2, 3)) - bias_free).abs().sum() / bias_free.abs().sum()
    assert error < 0.1


def test_lrp_of_the_mlp_sums_to_the_logit_without_biases_and_is_not_a_flat_map() -> None:
    # The flat rule would spread each first-layer neuron over the whole image (uniform
    # maps); the z^B rule for pixels in [0, 1] keeps the map input dependent and conserves.
    torch.manual_seed(0)
    model = build_model("mlp", 10).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.bias.zero_()
    x = torch.rand(4, 3, 28, 28)
    target, logit = _explained_logit(model, x)
    relevance, method = input_relevance(model, x, target)
    assert method == "lrp" and relevance.shape == x.shape
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logit, rtol=2e-3, atol=1e-6)
    flat = relevance.flatten(1)
    assert (flat.std(dim=1) > 0.1 * flat.abs().mean(dim=1)).all()


def test_lrp_without_the_resnet_canonizer_would_not_be_conservative(monkeypatch: pytest.MonkeyPatch) -> None:
    # Why the canonizer is required: without Sum modules each residual addition hands its
    # full relevance to both branches (measured: 256x the logit, 2 per block, 8 blocks).
    model = _model("resnet18", zero_biases=True)
    x = _inputs()
    target, logit = _explained_logit(model, x)
    monkeypatch.setitem(LRP_CANONIZERS, "resnet18", lambda: [])
    relevance, _ = input_relevance(model, x, target)
    assert ((relevance.sum(dim=(1, 2, 3)) / logit).abs() > 10).all()


def test_lrp_explains_the_requested_class_not_the_prediction() -> None:
    model = _model("small_cnn", zero_biases=True)
    x = _inputs()
    with torch.no_grad():
        logits = model(x)
    target = logits.argmin(dim=1)
    relevance, _ = input_relevance(model, x, target)
    expected = logits.gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), expected, rtol=2e-3, atol=1e-6)


def test_input_x_gradient_of_efficientnet_equals_a_hand_autograd_computation() -> None:
    model = _model("efficientnet_b0")
    x = _inputs()
    target = torch.tensor([0, 2])
    relevance, method = input_relevance(model, x, target)
    assert method == "input_x_gradient"

    leaf = x.clone().requires_grad_(True)
    logits = model(leaf)
    (gradient,) = torch.autograd.grad(logits[torch.arange(2), target].sum(), leaf)
    torch.testing.assert_close(relevance, x * gradient)


# --------------------------------------------------------------------------- method choice


def test_auto_picks_lrp_where_a_canonizer_exists_and_input_x_gradient_elsewhere() -> None:
    assert explanation_method(_model("resnet18")) == "lrp"
    assert explanation_method(_model("small_cnn")) == "lrp"
    assert explanation_method(_model("efficientnet_b0")) == "input_x_gradient"
    torch.manual_seed(0)
    timm_resnet = build_model("timm:resnet18", 3)
    assert explanation_method(timm_resnet) == "input_x_gradient"
    x = _inputs()
    _, used = input_relevance(timm_resnet.eval(), x, torch.tensor([0, 1]))
    assert used == "input_x_gradient"
    assert set(EXPLANATION_METHODS) == {"auto", "lrp", "input_x_gradient"}


def test_lrp_is_refused_for_an_architecture_without_a_canonizer() -> None:
    model = _model("efficientnet_b0")
    with pytest.raises(UserError, match="not conservative"):
        input_relevance(model, _inputs(), torch.tensor([0, 1]), method="lrp")


def test_unknown_method_and_bad_targets_are_rejected() -> None:
    model = _model("small_cnn")
    with pytest.raises(UserError, match="explanation method"):
        input_relevance(model, _inputs(), torch.tensor([0, 1]), method="gradcam")
    with pytest.raises(ValueError, match="lie in"):
        input_relevance(model, _inputs(), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[N\] class indices"):
        input_relevance(model, _inputs(), torch.tensor([0, 1, 2]))


# --------------------------------------------------------------------------- side effects


@pytest.mark.parametrize(
    "arch", ["small_cnn", "resnet18", "efficientnet_b0", pytest.param("vgg16", marks=pytest.mark.slow)]
)
def test_explaining_leaves_outputs_state_and_training_flag_unchanged(arch: str) -> None:
    model = _model(arch)
    x = _inputs()
    with torch.no_grad():
        before = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    model.train()

    input_relevance(model, x, torch.tensor([0, 1]))

    assert model.training and all(m.training for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), before)
    after = model.state_dict()
    assert after.keys() == state.keys()  # e.g. no bias added to bias-free convolutions
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert dict(model.named_parameters()).keys() == params.keys()
    assert all(p.grad is None for p in model.parameters())
    for module in model.modules():  # rule hooks and ResNet's Sum canonizer removed
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not hasattr(module, "canonizer_sum")


def test_works_on_frozen_parameters_under_no_grad_without_touching_the_callers_input() -> None:
    model = _model("resnet18", zero_biases=True)
    for p in model.parameters():
        p.requires_grad_(False)
    x = _inputs()
    target, logit = _explained_logit(model, x)
    with torch.no_grad():
        relevance, _ = input_relevance(model, x, target)
    assert not x.requires_grad and x.grad is None
    assert not relevance.requires_grad
    assert all(not p.requires_grad for p in model.parameters())
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logit, rtol=2e-3, atol=1e-6)


# --------------------------------------------------------------------------- artifact share


def test_artifact_relevance_is_one_when_all_relevance_lies_in_the_mask_and_zero_when_none_does() -> None:
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:4, 2:4] = True
    inside = torch.zeros(2, 3, 8, 8)
    inside[:, :, 2:4, 2:4] = torch.randn(2, 3, 2, 2)
    outside = torch.zeros(2, 3, 8, 8)
    outside[:, 0, 6:, 6:] = -1.0  # negative relevance counts by its magnitude
    for region in ("blur", "dilate"):  # (blur_fixed's 41 px Gaussian covers this 8x8 image)
        torch.testing.assert_close(artifact_relevance(inside, mask, region), torch.ones(2))
        torch.testing.assert_close(artifact_relevance(outside, mask, region), torch.zeros(2))


def test_artifact_relevance_dilation_grows_the_counted_area() -> None:
    # One masked pixel at (3, 3) with relevance 1, one pixel at (3, 4) (next to it) with
    # relevance 1, one at (3, 6) (3 pixels away) with relevance 2. Total 4.
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 3, 3] = 1.0
    relevance = torch.zeros(1, 1, 8, 8)
    relevance[0, 0, 3, 3] = 1.0
    relevance[0, 0, 3, 4] = -1.0
    relevance[0, 0, 3, 6] = 2.0
    shares = [float(artifact_relevance(relevance, mask, "dilate", dilation=d)) for d in (0, 1, 2, 3)]
    assert shares == pytest.approx([0.25, 0.5, 0.5, 1.0])


def test_artifact_relevance_is_zero_for_a_sample_without_relevance_and_per_sample_otherwise() -> None:
    mask = torch.zeros(3, 8, 8)  # [N, H, W] masks are accepted too
    mask[:, :4] = 1
    relevance = torch.zeros(3, 3, 8, 8)
    relevance[1, :, 0, 0] = 1.0  # all inside
    relevance[2, :, 0, 0] = 1.0
    relevance[2, :, 7, 7] = 1.0  # half inside
    share = artifact_relevance(relevance, mask, "dilate", dilation=0)
    torch.testing.assert_close(share, torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError):
        artifact_relevance(relevance, mask[:, :4], "dilate", dilation=0)


def _patch_model(region: tuple[slice, slice]) -> LatentModel:
    """conv-BN-ReLU (like a small_cnn block) + a linear head that sees only ``region``.

    The head reads the conv features of ``region`` shrunk by one pixel (its weights are
    zero elsewhere), so with the 3x3 convolution the logit depends on the input pixels of
    ``region`` only: its receptive field is exactly the region.
    """
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            block=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
            flatten=nn.Flatten(),
            fc=nn.Linear(8 * 32 * 32, 2),
        )
    )
    keep = torch.zeros(1, 8, 32, 32)
    keep[:, :, region[0].start + 1 : region[0].stop - 1, region[1].start + 1 : region[1].stop - 1] = 1
    with torch.no_grad():
        cast(nn.Linear, net.fc).weight.mul_(keep.flatten(1))
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 3, 32, 32))
    return LatentModel(net.eval(), "block", num_classes=2, arch="patch_net")


@pytest.mark.parametrize("method", ["lrp", "input_x_gradient"])
def test_relevance_of_a_model_that_only_reads_a_patch_lies_in_that_patch(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plain conv-BN Sequential is what the small_cnn canonizer is for; registering the
    # test architecture also exercises LRP_CANONIZERS as the extension point.
    monkeypatch.setitem(LRP_CANONIZERS, "patch_net", LRP_CANONIZERS["small_cnn"])
    region = (slice(8, 24), slice(10, 26))
    model = _patch_model(region)
    x = _inputs(4)
    mask = torch.zeros(4, 1, 32, 32)
    mask[:, :, region[0], region[1]] = 1
    relevance, used = input_relevance(model, x, torch.tensor([0, 1, 0, 1]), method=method)
    assert used == method
    # Both methods put (numerically) all relevance on the region the model sees; LRP's flat
    # first-layer rule spreads it over the 3x3 receptive fields, which stay inside the region.
    assert (artifact_relevance(relevance, mask, "dilate", dilation=0) > 0.99).all()
    # The same relevance scored against a mask one pixel smaller than what the model reads
    # loses the rim: dilating that mask by one pixel, or the authors' 41 px blur, recovers it.
    inner = torch.zeros_like(mask)
    inner[:, :, region[0].start + 1 : region[0].stop - 1, region[1].start + 1 : region[1].stop - 1] = 1
    assert (artifact_relevance(relevance, inner, "dilate", dilation=0) < 0.95).all()
    assert (artifact_relevance(relevance, inner, "dilate", dilation=1) > 0.99).all()
    assert (artifact_relevance(relevance, inner, "blur_fixed") > 0.99).all()


def test_input_x_gradient_of_a_linear_model_that_reads_a_patch_is_its_weights_times_the_input() -> None:
    # Any classifier module works with the default method, not only a LatentModel.
    torch.manual_seed(0)
    linear = nn.Linear(3 * 32 * 32, 2)
    patch = torch.zeros(1, 1, 32, 32)
    patch[:, :, 4:12, 20:30] = 1
    with torch.no_grad():
        linear.weight.mul_(patch.expand(1, 3, 32, 32).flatten(1))
    model = nn.Sequential(nn.Flatten(), linear)
    x = _inputs(2)
    target = torch.tensor([1, 0])
    relevance, used = input_relevance(model, x, target)
    assert used == "input_x_gradient"
    torch.testing.assert_close(relevance, x * linear.weight[target].detach().view(2, 3, 32, 32))
    torch.testing.assert_close(artifact_relevance(relevance, patch, "dilate", dilation=0), torch.ones(2))


# --------------------------------------------------------------------------- pictures


@pytest.mark.parametrize("with_mask", [True, False])
def test_heatmap_grid_writes_a_readable_png_with_one_row_per_sample(tmp_path: Path, with_mask: bool) -> None:
    from PIL import Image

    x = _inputs(3)
    relevance = torch.randn(3, 3, 32, 32)
    mask = (torch.rand(3, 1, 32, 32) > 0.8) if with_mask else None
    path = tmp_path / "plots" / "heatmaps.png"
    heatmap_grid(x, mask, relevance, path, max_samples=2)
    with Image.open(path) as image:
        image.load()
        width, height = image.size
    assert image.format == "PNG"
    assert height / width == pytest.approx(2 / 3, rel=0.02)  # 2 rows x 3 columns of square panels
    assert [p.name for p in path.parent.iterdir()] == ["heatmaps.png"]  # no temporary file left


def test_heatmap_relevance_is_red_for_the_class_blue_against_it_and_white_at_zero() -> None:
    from debiasbench.evaluation.heatmaps import relevance_colors

    colors = relevance_colors(torch.tensor([[2.0, -2.0, 0.0, 1.0]]))
    torch.testing.assert_close(colors[0, :3], torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(colors[0, 3], torch.tensor([1.0, 0.5, 0.5]))  # half the largest: pale red


def test_heatmap_grid_draws_every_mask_pixel_as_a_sharp_block(tmp_path: Path) -> None:
    """Pixels are enlarged, never interpolated: a checkerboard mask stays pure black and white."""
    import numpy as np
    from PIL import Image

    checkerboard = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    path = tmp_path / "heatmaps.png"
    heatmap_grid(torch.rand(1, 3, 8, 8), checkerboard[None, None], torch.randn(1, 3, 8, 8), path)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    from debiasbench.evaluation.heatmaps import PANEL_GAP, PANEL_MIN_SIDE, TITLE_BAND

    middle, half = pixels.shape[1] // 2, PANEL_MIN_SIDE // 2  # the mask panel is the middle one
    mask_panel = pixels[TITLE_BAND + PANEL_GAP + half, middle - half + 10: middle + half - 10]  # a row across it
    assert set(map(tuple, mask_panel)) == {(0, 0, 0), (255, 255, 255)}
    assert (np.diff(mask_panel[:, 0].astype(int)) != 0).sum() >= 6  # the squares alternate


def test_lrp_explains_the_latent_edit_of_a_wrapped_model():
    """A method's eval_model (P-ClArC) edits the latent in forward: LRP must see that edit."""
    from debiasbench.models.build import build_model
    from debiasbench.models.latent import LatentModel

    class Silenced(LatentModel):
        def forward(self, x):
            return self.forward_with_latent(x, edit=lambda a: a * 0)[0]

    torch.manual_seed(0)
    base = build_model("small_cnn", 3).eval()
    silenced = Silenced(base.net, base.latent_layer, 3, base.arch).eval()
    x = torch.rand(2, 3, 16, 16)
    target = torch.tensor([0, 1])
    plain, method = input_relevance(base, x, target)
    edited, _ = input_relevance(silenced, x, target)
    assert method == "lrp"
    assert plain.abs().sum() > 0
    assert edited.abs().sum() == 0  # nothing before the zeroed latent can matter


# --------------------------------------------------------------------------- normalised inputs

IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), in_channels=3)


def _normalised(model: LatentModel, in_channels: int = 3) -> LatentModel:
    """A copy of ``model``'s network behind ImageNet's input normalisation, as
    ``pretrained: imagenet`` builds it (random weights: conservation does not need real ones)."""
    normalization = Normalization(IMAGENET.mean, IMAGENET.std, in_channels)
    net = copy.deepcopy(model.net)
    return LatentModel(net, model.latent_layer, model.num_classes, model.arch, normalization=normalization).eval()


def _images(n: int = 2, channels: int = 3, seed: int = 1) -> Tensor:
    """Inputs as the harness feeds them: images in [0, 1]."""
    return torch.rand(n, channels, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", LRP_ARCHS)
def test_lrp_of_a_normalised_model_sums_to_the_logit_when_the_network_has_no_biases(arch: str) -> None:
    # The normalisation's shift would act as a bias of the first layer if relevance were
    # taken through it; explained on the normalised input, the bias-free network conserves.
    _assert_lrp_sums_to_the_logit(_normalised(_model(arch, zero_biases=True)), _images())


@pytest.mark.parametrize(("arch", "method"), [("small_cnn", "lrp"), ("resnet18", "lrp"),
                                              ("efficientnet_b0", "input_x_gradient")])
def test_a_normalised_model_is_explained_as_its_network_on_the_normalised_input(arch: str, method: str) -> None:
    bare = _model(arch)
    model = _normalised(bare)
    x = _images()
    target = torch.tensor([0, 2])
    relevance, used = input_relevance(model, x, target)
    expected, _ = input_relevance(bare, model.normalize_input(x), target)
    assert used == method
    torch.testing.assert_close(relevance, expected)


def test_a_grey_input_repeated_to_rgb_gets_one_channel_of_relevance_that_keeps_the_total() -> None:
    model = _normalised(_model("small_cnn", zero_biases=True), in_channels=1)
    x = _images(channels=1)
    target, logit = _explained_logit(model, x)
    for method in ("lrp", "input_x_gradient"):
        relevance, _ = input_relevance(model, x, target, method=method)
        assert relevance.shape == x.shape
        torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logit, rtol=2e-3, atol=1e-6)


def test_input_x_gradient_of_a_normalised_bias_free_network_sums_to_the_logit() -> None:
    # Euler's identity holds for the network on its own input; x * d logit / dx on the raw
    # pixels would miss the normalisation's shift (checked below to be far off).
    model = _normalised(_model("small_cnn", zero_biases=True))
    x = _images()
    target, logit = _explained_logit(model, x)
    relevance, method = input_relevance(model, x, target, method="input_x_gradient")
    assert method == "input_x_gradient"
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logit, rtol=1e-4, atol=1e-6)
    leaf = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf)
    raw = (x * gradient).sum(dim=(1, 2, 3))
    assert ((raw - logit).abs() > 0.1 * logit.abs()).all()


def test_explaining_a_normalised_model_leaves_it_normalising_and_unchanged() -> None:
    model = _normalised(_model("resnet18"))
    x = _images()
    with torch.no_grad():
        before = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    input_relevance(model, x, torch.tensor([0, 1]))
    input_relevance(model, x, torch.tensor([0, 1]), method="input_x_gradient")
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_lrp_explains_the_latent_edit_of_a_wrapped_normalised_model() -> None:
    class Silenced(LatentModel):
        def forward(self, x):
            return self.forward_with_latent(x, edit=lambda a: a * 0)[0]

    base = _normalised(_model("small_cnn"))
    silenced = Silenced(base.net, base.latent_layer, 3, base.arch).eval()  # inherits the normalisation
    assert silenced.input_normalization is not None
    x = _images()
    target = torch.tensor([0, 1])
    plain, _ = input_relevance(base, x, target)
    edited, _ = input_relevance(silenced, x, target)
    assert plain.abs().sum() > 0
    assert edited.abs().sum() == 0


def test_heatmap_picture_names_the_class_the_view_and_the_colour_scale(tmp_path: Path) -> None:
    """The words are drawn and also stored as the PNG's text, which is what is checked here."""
    from PIL import Image

    from debiasbench.evaluation.heatmaps import COLOUR_SCALE, heatmap_labels

    path = tmp_path / "heatmaps.png"
    heatmap_grid(_inputs(2), torch.rand(2, 1, 32, 32) > 0.8, torch.randn(2, 3, 32, 32), path,
                 class_label="ruler (1)", view="test_biased")
    with Image.open(path) as image:
        text = dict(image.text)
    assert text["Title"] == "input (test_biased) | artifact mask | relevance for class ruler (1)"
    assert "class ruler (1)" in text["Description"] and "view: test_biased" in text["Description"]
    assert COLOUR_SCALE in text["Description"] and "red for the class, blue against it" in COLOUR_SCALE
    assert heatmap_labels()["titles"] == ("input", "artifact mask", "relevance for its label")
