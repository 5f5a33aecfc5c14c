"""``pretrained: imagenet``: the libraries' ImageNet weights from their local caches, a new
seeded head, the weights' input normalisation inside the model, and one-line errors.

No test touches the network: the caches are fake folders under ``tmp_path`` holding
randomised weights under the exact names torchvision and timm use, and every download
function is made to fail. The fake files cannot carry torchvision's sha256 prefixes, so
tests that load them switch the hash check off (``no_hash_check``); the check itself is
tested on files named after their own hash.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import cast

import pytest
import torch
from torch import Tensor, nn

from debiasbench.models import pretrained as models
from debiasbench.core.errors import UserError
from debiasbench.models.build import build_model
from debiasbench.models.latent import LatentModel, NORMALIZATION_ATTRIBUTE
from debiasbench.models.pretrained import check_imagenet_weights, imagenet_weights_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The names torchvision caches its IMAGENET1K_V1 downloads under (torchvision 0.29).
TORCHVISION_FILES = {
    "vgg16": "vgg16-397923af.pth",
    "resnet18": "resnet18-f37072fd.pth",
    "efficientnet_b0": "efficientnet_b0_rwightman-7f5810bc.pth",
}
HEADS = {"vgg16": "classifier.6", "resnet18": "fc", "efficientnet_b0": "classifier.1"}

#: A tiny timm model (0.4 M parameters) with Hugging Face weights and mean = std = 0.5.
TIMM_MODEL = "test_resnet"
TIMM_REPO = "timm/test_resnet.r160_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fc(model: LatentModel) -> nn.Linear:
    """The head of a resnet (torchvision's or timm's)."""
    return cast(nn.Linear, model.net.fc)


def _conv1(model: LatentModel) -> nn.Conv2d:
    """The first convolution of a resnet."""
    return cast(nn.Conv2d, model.net.conv1)


# --------------------------------------------------------------------------- fake caches


def _random_state(net_on_meta: nn.Module, seed: int) -> dict[str, Tensor]:
    """Random tensors with ``net_on_meta``'s names and shapes, unlike any fresh init.

    Tensors of more than a million elements repeat one random row (a stride-0 expand):
    ``torch.save`` then stores only that row, which keeps VGG-16's 528 MB file at ~10 MB.
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for name, meta in net_on_meta.state_dict().items():
        if not meta.dtype.is_floating_point:
            state[name] = torch.tensor(7, dtype=meta.dtype)  # num_batches_tracked
            continue
        shape = tuple(meta.shape)
        row = shape if meta.numel() <= 1_000_000 else (1, *shape[1:])
        value = torch.rand(row, generator=generator) + 0.5 if name.endswith("running_var") else torch.randn(
            row, generator=generator
        )
        state[name] = value.expand(shape)
    return state


def _write_torchvision_file(arch: str, torch_home: Path, seed: int = 1234) -> dict[str, Tensor]:
    """A fake ImageNet checkpoint of ``arch`` (1000 classes) where torchvision caches it."""
    import torchvision.models

    with torch.device("meta"):
        net = getattr(torchvision.models, arch)(weights=None)
    state = _random_state(net, seed)
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / TORCHVISION_FILES[arch])
    return state


@pytest.fixture(scope="module")
def resnet18_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Tensor]]:
    """A TORCH_HOME holding fake resnet18 ImageNet weights (written once: 45 MB)."""
    home = tmp_path_factory.mktemp("torch_home")
    return home, _write_torchvision_file("resnet18", home)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every download function used by torchvision, timm and huggingface_hub fails the test."""
    import huggingface_hub
    import timm.models._builder
    import timm.models._hub

    def network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "download_url_to_file", network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", network)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", network)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", network)
    monkeypatch.setattr(timm.models._builder, "download_cached_file", network)


@pytest.fixture
def torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, offline: None) -> Path:
    """An empty TORCH_HOME (torch.hub.get_dir() reads the variable at every call)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def with_resnet18(monkeypatch: pytest.MonkeyPatch, resnet18_home, offline: None) -> dict[str, Tensor]:
    home, state = resnet18_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    return state


@pytest.fixture
def no_hash_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake files cannot carry the hash prefix their torchvision name promises."""
    monkeypatch.setattr(models, "_verify_hash", lambda path: None)


@pytest.fixture
def hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, offline: None) -> Path:
    """An empty Hugging Face hub cache (the constant is read at import, so it is patched)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _write_hf_file(cache: Path, repo: str, state: dict[str, Tensor]) -> Path:
    """``state`` as ``model.safetensors`` in the layout ``huggingface-cli download`` makes."""
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    path = snapshot / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _timm_state(seed: int = 99) -> dict[str, Tensor]:
    import timm

    with torch.device("meta"):
        net = timm.create_model(TIMM_MODEL, pretrained=False)
    return _random_state(net, seed)


def _head_keys(state: dict[str, Tensor], head: str) -> set[str]:
    return {k for k in state if k.startswith(head + ".")}


def _assert_backbone_is_the_files(model: LatentModel, state: dict[str, Tensor], head: str) -> None:
    loaded = model.net.state_dict()
    backbone = set(state) - _head_keys(state, head)
    assert backbone == set(loaded) - _head_keys(dict(loaded), head)
    for key in sorted(backbone):
        assert torch.equal(loaded[key], state[key]), key


# --------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", pytest.param("vgg16", marks=pytest.mark.slow)])
def test_imagenet_weights_load_every_non_head_tensor_of_the_cached_file(
    arch: str, torch_home: Path, no_hash_check: None
) -> None:
    state = _write_torchvision_file(arch, torch_home)
    torch.manual_seed(0)
    model = build_model(arch, 3, pretrained="imagenet")
    _assert_backbone_is_the_files(model, state, HEADS[arch])
    head = cast(nn.Linear, model.net.get_submodule(HEADS[arch]))
    assert head.weight.shape[0] == 3 and head.bias.shape == (3,)
    assert model.input_normalization is not None
    assert model.input_normalization.normalization.mean == IMAGENET_MEAN
    assert model.input_normalization.normalization.std == IMAGENET_STD


def test_the_new_head_is_drawn_from_the_seed_exactly_as_a_plain_build_draws_it(
    with_resnet18: dict[str, Tensor], no_hash_check: None
) -> None:
    torch.manual_seed(5)
    pretrained = build_model("resnet18", 4, pretrained="imagenet")
    torch.manual_seed(5)
    plain = build_model("resnet18", 4)
    torch.manual_seed(6)
    other_seed = build_model("resnet18", 4, pretrained="imagenet")
    assert torch.equal(_fc(pretrained).weight, _fc(plain).weight)
    assert torch.equal(_fc(pretrained).bias, _fc(plain).bias)
    assert not torch.equal(_fc(pretrained).weight, _fc(other_seed).weight)
    assert torch.equal(_conv1(pretrained).weight, _conv1(other_seed).weight)  # the file's


def test_a_1000_class_head_is_new_too(with_resnet18: dict[str, Tensor], no_hash_check: None) -> None:
    model = build_model("resnet18", 1000, pretrained="imagenet")
    assert not torch.equal(_fc(model).weight, with_resnet18["fc.weight"])


@pytest.mark.parametrize("arch", list(TORCHVISION_FILES))
def test_missing_weights_are_one_line_naming_the_file_and_the_folder(arch: str, torch_home: Path) -> None:
    with pytest.raises(UserError) as info:
        build_model(arch, 3, pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert f"pretrained: imagenet weights for {arch} not found" in message
    assert f"put {TORCHVISION_FILES[arch]} in {torch_home / 'hub' / 'checkpoints'}" in message
    assert "TORCH_HOME" in message
    assert imagenet_weights_file(arch) == torch_home / "hub" / "checkpoints" / TORCHVISION_FILES[arch]


def test_weights_can_be_checked_without_building_the_model(hf_cache: Path, with_resnet18: dict[str, Tensor]) -> None:
    # what a sweep can call for every job before the first one trains
    assert check_imagenet_weights("resnet18") == imagenet_weights_file("resnet18")
    assert check_imagenet_weights("resnet18", in_channels=1).name == TORCHVISION_FILES["resnet18"]
    with pytest.raises(UserError, match="efficientnet_b0_rwightman-7f5810bc.pth"):
        check_imagenet_weights("efficientnet_b0")
    with pytest.raises(UserError, match="no weights for 'small_cnn'"):
        check_imagenet_weights("small_cnn")
    with pytest.raises(UserError, match="the data has 4 channels"):
        check_imagenet_weights("resnet18", in_channels=4)
    with pytest.raises(UserError, match="model.safetensors of Hugging Face repo"):
        check_imagenet_weights(f"timm:{TIMM_MODEL}")
    path = _write_hf_file(hf_cache, TIMM_REPO, _timm_state())
    assert check_imagenet_weights(f"timm:{TIMM_MODEL}") == path


def test_small_cnn_has_no_imagenet_weights(torch_home: Path) -> None:
    with pytest.raises(UserError, match="no weights for 'small_cnn'; it is available for vgg16, resnet18"):
        build_model("small_cnn", 3, pretrained="imagenet")


def test_an_unknown_arch_with_imagenet_is_still_reported_as_unknown(torch_home: Path) -> None:
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        build_model("resnet81", 3, pretrained="imagenet")


def test_images_with_two_channels_are_refused(torch_home: Path) -> None:
    with pytest.raises(UserError, match="needs 3-channel images .* the data has 2 channels"):
        build_model("resnet18", 3, pretrained="imagenet", in_channels=2)


def test_a_file_that_does_not_match_the_hash_in_its_name_is_a_one_line_error(
    with_resnet18: dict[str, Tensor],
) -> None:
    with pytest.raises(UserError, match="is not the published file .* its name says f37072fd") as info:
        build_model("resnet18", 3, pretrained="imagenet")
    assert "\n" not in str(info.value)


def test_the_hash_check_accepts_a_file_whose_sha256_starts_with_the_hash_in_its_name(tmp_path: Path) -> None:
    content = b"some weights"
    prefix = hashlib.sha256(content).hexdigest()[:8]
    good = tmp_path / f"net-{prefix}.pth"
    good.write_bytes(content)
    models._verify_hash(good)
    models._verify_hash(tmp_path / "unhashed.pth")  # no hash in the name: nothing to check
    bad = tmp_path / f"net-{'0' * 8 if prefix != '0' * 8 else '1' * 8}.pth"
    bad.write_bytes(content)
    with pytest.raises(UserError, match="partial or different download"):
        models._verify_hash(bad)


def test_an_unreadable_file_is_a_one_line_error(torch_home: Path, no_hash_check: None) -> None:
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / TORCHVISION_FILES["resnet18"]).write_bytes(b"half a download")
    with pytest.raises(UserError, match="cannot read ImageNet weights") as info:
        build_model("resnet18", 3, pretrained="imagenet")
    assert "\n" not in str(info.value)


def test_a_checkpoint_of_another_network_under_the_name_is_refused(torch_home: Path, no_hash_check: None) -> None:
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    state = build_model("resnet18", 1000).net.state_dict()
    del state["layer4.1.bn2.weight"]
    torch.save(state, folder / TORCHVISION_FILES["resnet18"])
    with pytest.raises(UserError, match="not torchvision's resnet18 ImageNet checkpoint: 1 tensors missing"):
        build_model("resnet18", 3, pretrained="imagenet")
    torch.save(build_model("small_cnn", 1000).net.state_dict(), folder / TORCHVISION_FILES["resnet18"])
    with pytest.raises(UserError, match="not torchvision's resnet18 ImageNet checkpoint"):
        build_model("resnet18", 3, pretrained="imagenet")
    state = build_model("resnet18", 1000, in_channels=1).net.state_dict()  # a grey first conv
    torch.save(state, folder / TORCHVISION_FILES["resnet18"])
    with pytest.raises(UserError, match=r"conv1.weight is \(64, 1, 7, 7\), the network's is \(64, 3, 7, 7\)"):
        build_model("resnet18", 3, pretrained="imagenet")


# --------------------------------------------------------------------------- normalisation


def _normalise(x: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@pytest.fixture
def imagenet_resnet18(with_resnet18: dict[str, Tensor], no_hash_check: None) -> LatentModel:
    torch.manual_seed(0)
    return build_model("resnet18", 3, pretrained="imagenet").eval()


def test_every_entry_point_feeds_the_network_normalised_inputs(imagenet_resnet18: LatentModel) -> None:
    model = imagenet_resnet18
    x = torch.rand(2, 3, 32, 32)
    seen: list[Tensor] = []
    handle = cast(nn.Module, model.net.layer4).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        expected_logits = model.net(_normalise(x))
    handle.remove()
    expected_latent = seen[0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected_logits)
        torch.testing.assert_close(model.latent(x), expected_latent)
        logits, latent = model.forward_with_latent(x)
        torch.testing.assert_close(logits, expected_logits)
        torch.testing.assert_close(latent, expected_latent)
        torch.testing.assert_close(model.normalize_input(x), _normalise(x))
        with model.inputs_already_normalized():
            torch.testing.assert_close(model(_normalise(x)), expected_logits)
    assert model(x).shape == (2, 3)  # the flag is reset after the block
    names = {n for n, p in model.net.named_parameters() if any(p is q for q in model.parameters_after_latent(x))}
    assert names == {"fc.weight", "fc.bias"}


def test_grey_images_are_repeated_to_rgb_in_front_of_the_pretrained_first_conv(
    with_resnet18: dict[str, Tensor], no_hash_check: None
) -> None:
    torch.manual_seed(0)
    grey_model = build_model("resnet18", 3, pretrained="imagenet", in_channels=1).eval()
    assert torch.equal(_conv1(grey_model).weight, with_resnet18["conv1.weight"])
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey_model(grey), grey_model.net(_normalise(grey.expand(-1, 3, -1, -1))))
    with pytest.raises(ValueError, match=r"expects \[N, 1, H, W\]"):
        grey_model(torch.rand(2, 3, 32, 32))


def test_state_dicts_hold_no_normalisation_and_round_trip_strictly(imagenet_resnet18: LatentModel) -> None:
    model = imagenet_resnet18
    torch.manual_seed(0)
    plain = build_model("resnet18", 3)
    assert model.net.state_dict().keys() == plain.net.state_dict().keys()
    assert model.state_dict().keys() == plain.state_dict().keys()
    torch.manual_seed(1)
    other = build_model("resnet18", 3, pretrained="imagenet").eval()
    other.net.load_state_dict(model.net.state_dict(), strict=True)  # what corrections do
    other.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


def test_a_wrapper_around_the_same_network_and_a_copy_normalise_too(imagenet_resnet18: LatentModel) -> None:
    # P-ClArC's test-time model is built as LatentModel(model.net, ...): it must see the
    # same inputs as the model it corrects.
    model = imagenet_resnet18
    wrapper = LatentModel(model.net, model.latent_layer, model.num_classes, model.arch).eval()
    copied = copy.deepcopy(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(wrapper(x), model(x))
        assert torch.equal(copied(x), model(x))
    assert wrapper.input_normalization is not None


def test_models_without_imagenet_are_untouched() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    assert model.input_normalization is None
    assert not hasattr(model.net, NORMALIZATION_ATTRIBUTE)
    inner = [f"net.{n}" if n else "net" for n, _ in model.net.named_modules()]
    assert [n for n, _ in model.named_modules()] == ["", *inner]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model.net(x))
        assert torch.equal(model.normalize_input(x), x)


def test_a_local_checkpoint_path_still_loads_as_before(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("small_cnn", 3)
    path = tmp_path / "weights.pt"
    torch.save(source.net.state_dict(), path)
    model = build_model("small_cnn", 3, pretrained=str(path))
    assert model.input_normalization is None
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), source.net.state_dict().values()))


# --------------------------------------------------------------------------- timm


def test_timm_weights_load_from_the_hugging_face_cache_with_the_models_own_normalisation(hf_cache: Path) -> None:
    state = _timm_state()
    _write_hf_file(hf_cache, TIMM_REPO, state)
    torch.manual_seed(3)
    model = build_model(f"timm:{TIMM_MODEL}", 3, pretrained="imagenet").eval()
    _assert_backbone_is_the_files(model, state, "fc")
    assert _fc(model).weight.shape[0] == 3
    torch.manual_seed(3)
    plain = build_model(f"timm:{TIMM_MODEL}", 3)
    assert torch.equal(_fc(model).weight, _fc(plain).weight)  # seeded like a plain build
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # test_resnet's pretrained_cfg says mean = std = 0.5
        torch.testing.assert_close(model(x), model.net(_normalise(x, (0.5,) * 3, (0.5,) * 3)))


def test_missing_timm_weights_are_one_line_naming_the_file_and_the_cache(hf_cache: Path, torch_home: Path) -> None:
    with pytest.raises(UserError) as info:
        build_model(f"timm:{TIMM_MODEL}", 3, pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert f"weights for timm:{TIMM_MODEL} not found: put model.safetensors of Hugging Face repo {TIMM_REPO}" in message
    assert f"in {hf_cache} (HF_HUB_CACHE)" in message
    # a model whose weights also have a URL may take that file from torch's hub cache
    with pytest.raises(UserError, match=r"or resnet18_a1_0-d63eafa0\.pth in .*checkpoints \(TORCH_HOME"):
        build_model("timm:resnet18", 3, pretrained="imagenet")


def test_timm_weights_may_come_from_torchs_hub_cache_under_their_url_name(
    hf_cache: Path, torch_home: Path, no_hash_check: None
) -> None:
    import timm

    with torch.device("meta"):
        net = timm.create_model("resnet18", pretrained=False)
    state = _random_state(net, 5)
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / "resnet18_a1_0-d63eafa0.pth")
    model = build_model("timm:resnet18", 2, pretrained="imagenet")
    _assert_backbone_is_the_files(model, state, "fc")


def test_a_timm_model_without_pretrained_weights_is_a_user_error(hf_cache: Path, torch_home: Path) -> None:
    with pytest.raises(UserError, match="timm has no pretrained weights for 'beit3_giant_patch14_224'"):
        build_model("timm:beit3_giant_patch14_224", 3, pretrained="imagenet")


# --------------------------------------------------------------------------- command line


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    from debiasbench.cli import app

    return CliRunner().invoke(app, args)


TINY = ["--dataset", "synthetic_artifacts", "--set", "dataset_params.n_train=48", "--set", "dataset_params.n_val=16",
        "--set", "dataset_params.n_test=16", "--set", "dataset_params.image_size=32",
        "--set", "dataset_params.patch_size=5", "--set", "epochs=1", "--set", "device=cpu"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("resnet18", "pretrained: imagenet weights for resnet18 not found: put resnet18-f37072fd.pth in "),
        ("small_cnn", "pretrained: imagenet has no weights for 'small_cnn'"),
    ],
)
def test_cli_without_weights_exits_2_with_one_line(
    model: str, message: str, tracking_uri: str, torch_home: Path
) -> None:
    result = _invoke(["run", "--model", model, "--set", "pretrained=imagenet", "--tracking-uri", tracking_uri, *TINY])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_run_with_imagenet_weights_trains_and_evaluates(
    tracking_uri: str, with_resnet18: dict[str, Tensor], no_hash_check: None
) -> None:
    result = _invoke(["run", "--model", "resnet18", "--set", "pretrained=imagenet", "--tracking-uri", tracking_uri,
                      *TINY])
    assert result.exit_code == 0, result.output
    assert "test_biased_acc" in result.output


def test_lrp_of_an_imagenet_resnet18_is_conservative_on_images_in_0_1(imagenet_resnet18: LatentModel) -> None:
    from debiasbench.evaluation.relevance import input_relevance

    model = imagenet_resnet18
    with torch.no_grad():  # bias-free, so relevance must sum to the logit (explain tests say why)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None  # tracked by every BatchNorm of resnet18
                module.running_mean.zero_()
                module.bias.zero_()
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.zero_()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(dim=1)
    relevance, method = input_relevance(model, x, target)
    assert method == "lrp" and relevance.shape == x.shape
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logits.gather(1, target[:, None])[:, 0],
                               rtol=2e-3, atol=1e-6)
