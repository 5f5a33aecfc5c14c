"""The DisEnt file layout (``debiasbench.datasets.disent``): cmnist, cifar10c and bffhq on
tiny fixture trees in the authors' layout, names read into labels and bias, the ratio
folder chosen by ``percent``, and bad trees as one line naming the path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import real_layouts
from real_layouts import CONFLICTS, HELD_OUT, SIZES, disent_tree
from debiasbench.cli import app
from debiasbench.core.errors import UserError
from debiasbench.core.hparams import resolve
from debiasbench.core.registry import DATASETS
from debiasbench.testing import check_dataset

def tree(name: str, root: Path) -> Path:
    return real_layouts.bffhq(root) if name == "bffhq" else disent_tree(root, name)


def make(name: str, **params):
    cls = DATASETS.get(name)
    return cls(**resolve(cls.params, params, "dataset_params."))


def one_line_error(name: str, **params) -> str:
    with pytest.raises(UserError) as caught:
        make(name, **params)
    message = str(caught.value)
    assert "\n" not in message and "expected layout" in message
    return message


@pytest.mark.parametrize("injected", [False, True])
@pytest.mark.parametrize("name", ["cmnist", "cifar10c", "bffhq"])
def test_each_dataset_keeps_the_dataset_contract(name, injected, tmp_path):
    params = {"root": str(tree(name, tmp_path / "data")), "image_size": 16}
    if injected:
        params.update(artifact="patch", p=0.8)
    data = check_dataset(DATASETS.get(name), **params)
    assert {"test_clean", "test_biased", "val_clean", "val_biased"} <= set(data.views)
    assert data.num_bias == (2 if name == "bffhq" or injected else 10)


@pytest.mark.parametrize("name", ["cmnist", "cifar10c"])
def test_labels_bias_and_conflicting_samples_come_from_the_file_names(name, tmp_path):
    data = make(name, root=str(disent_tree(tmp_path, name)))
    train = data.splits["train"]
    # align/0..9 then conflict/, each sorted by path
    expected = [(label, label) for label in range(10)] + sorted(CONFLICTS["1pct"])
    assert list(zip(train.y.tolist(), train.bias.tolist())) == expected
    assert train.conflicting.tolist() == [y != b for y, b in expected]
    for split in ("val", "test"):  # cifar10c's valid/ has sub-folders, cmnist's not: both found
        got = data.splits[split]
        assert sorted(zip(got.y.tolist(), got.bias.tolist())) == sorted(HELD_OUT)
        assert torch.equal(got.conflicting, got.y != got.bias) and int(got.conflicting.sum()) == 2
    assert data.num_classes == 10 and data.num_bias == 10 and data.provides == {"bias_labels"}


def test_classes_sizes_and_flips_follow_the_authors(tmp_path):
    cmnist = make("cmnist", root=str(disent_tree(tmp_path / "m", "cmnist")))
    cifar = make("cifar10c", root=str(disent_tree(tmp_path / "c", "cifar10c")))
    assert cmnist.splits["train"].x.shape[1:] == (3, 28, 28) and cmnist.classes[7] == "7"
    assert cifar.splits["train"].x.shape[1:] == (3, 32, 32) and cifar.classes[:2] == ["airplane", "automobile"]
    assert DATASETS.get("cmnist").params["hflip"].default is False
    assert DATASETS.get("cifar10c").params["hflip"].default is True
    bffhq = DATASETS.get("bffhq").params
    assert bffhq["percent"].default == "0.5pct" and bffhq["image_size"].default == 64


def test_percent_picks_the_ratio_folder_and_its_valid_folder(tmp_path):
    root = disent_tree(tmp_path, "cmnist")
    real_layouts.write_image(root / "cmnist" / "5pct" / "valid" / "99_1_6.png", 1, 99, SIZES["cmnist"])
    data = make("cmnist", root=str(root), percent="5pct")
    train = data.splits["train"]
    assert len(train) == 14 and int(train.conflicting.sum()) == 4
    assert sorted(zip(train.y[train.conflicting].tolist(), train.bias[train.conflicting].tolist())) == \
        sorted(CONFLICTS["5pct"])
    assert len(data.splits["val"]) == len(HELD_OUT) + 1  # 5pct/valid, not 1pct/valid
    assert len(make("cmnist", root=str(root)).splits["val"]) == len(HELD_OUT)


def test_root_may_be_the_dataset_folder_and_valid_may_lie_beside_the_ratio_folders(tmp_path):
    root = disent_tree(tmp_path, "cmnist")
    first = make("cmnist", root=str(root))
    again = make("cmnist", root=str(root / "cmnist"))
    assert torch.equal(again.splits["train"].x, first.splits["train"].x)
    for ratio in CONFLICTS:  # one shared valid/, as bffhq has it
        (root / "cmnist" / ratio / "valid").rename(root / "cmnist" / f"valid_{ratio}")
    (root / "cmnist" / "valid_1pct").rename(root / "cmnist" / "valid")
    assert len(make("cmnist", root=str(root)).splits["val"]) == len(HELD_OUT)


@pytest.mark.parametrize("name", ["cmnist", "cifar10c", "bffhq"])
def test_an_unknown_percent_lists_the_ratio_folders_found(name, tmp_path):
    root = tree(name, tmp_path)
    (root / name / "notes").mkdir()  # not a ratio folder: no align/ in it
    found = "0.5pct" if name == "bffhq" else "1pct, 5pct"
    for percent in ("3pct", "..", "test/0"):  # a folder of the dataset, never a path out of it
        message = one_line_error(name, root=str(root), percent=percent)
        assert f"percent={percent!r}" in message and f"ratio folders found in '{root / name}': {found}" in message


@pytest.mark.parametrize("name,path", [
    ("cmnist", "cmnist/1pct/align/4/4_4_4.png"),
    ("cifar10c", "cifar10c/1pct/valid/8/17_8_3.png"),
    ("cifar10c", "cifar10c/test/0/38_0_0.png"),
    ("bffhq", "bffhq/0.5pct/conflict/1/9_1_0.png"),
])
def test_a_wrongly_named_file_is_one_error_naming_it(name, path, tmp_path):
    root = tree(name, tmp_path)
    assert (root / path).exists()
    bad = (root / path).rename((root / path).with_name("img_4.png"))
    message = one_line_error(name, root=str(root))
    assert f"'{bad}' is not named '<idx>_<label>_<bias>.png'" in message


@pytest.mark.parametrize("name,stem,what", [("cmnist", "50_10_3", "label 10"), ("cifar10c", "50_3_12", "bias 12"),
                                            ("bffhq", "50_1_2", "bias 2")])
def test_labels_or_bias_out_of_range_name_the_file(name, stem, what, tmp_path):
    root = tree(name, tmp_path)
    ratio = "0.5pct" if name == "bffhq" else "1pct"
    bad = real_layouts.write_image(root / name / ratio / "align" / "1" / f"{stem}.png", 1, 50)
    message = one_line_error(name, root=str(root))
    assert f"{what} of '{bad}' is outside" in message


@pytest.mark.parametrize("name,missing", [("cmnist", "cmnist/1pct/valid"), ("cifar10c", "cifar10c/1pct/valid"),
                                          ("bffhq", "bffhq/valid"), ("cmnist", "cmnist/test"),
                                          ("cifar10c", "cifar10c/1pct/conflict")])
def test_a_missing_folder_is_one_error_naming_it(name, missing, tmp_path):
    import shutil

    root = tree(name, tmp_path)
    shutil.rmtree(root / missing)
    message = one_line_error(name, root=str(root))
    assert f"'{root / missing}' not found" in message


def test_the_datasets_are_listed_with_their_params():
    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    for text in ("cmnist: Colored MNIST", "cifar10c: Corrupted CIFAR-10", "bffhq: bFFHQ", "percent = '1pct'",
                 "percent = '0.5pct'", "the authors ship 0.5pct, 1pct, 2pct, 5pct"):
        assert text in result.output


@pytest.mark.parametrize("name", ["cmnist", "cifar10c"])
def test_a_run_through_the_cli_logs_conflicting_accuracy(name, tmp_path, tracking_uri):
    from debiasbench.track.store import Tracker

    root = disent_tree(tmp_path / "data", name)
    result = CliRunner().invoke(app, ["run", "--method", "vanilla", "--dataset", name, "--tracking-uri", tracking_uri,
                                      "--set", f"dataset_params.root={root}", "--set", "dataset_params.image_size=16",
                                      "--set", "epochs=1", "--set", "device=cpu", "--set", "batch_size=8"])
    assert result.exit_code == 0, result.output
    tracker = Tracker(tracking_uri, "debiasbench")
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.status == "FINISHED" and 0.0 <= run.data.metrics["test_conflicting_acc"] <= 1.0
