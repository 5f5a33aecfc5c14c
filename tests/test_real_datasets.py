"""Loaders of real datasets, on tiny fixture trees in each real on-disk layout.

Each layout runs end to end through the CLI (vanilla, small_cnn, one epoch on the CPU)
and lands in the tracking store; bad input (missing root, file, column, a corrupt image)
is one line naming the file and the expected layout, exit code 2, and no run.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import real_layouts
from debiasbench.cli import app
from debiasbench.core.hparams import resolve
from debiasbench.core.registry import DATASETS
from debiasbench.data.image_cache import dataset_cache_dir

TINY = ["--set", "dataset_params.image_size=16", "--set", "epochs=1", "--set", "device=cpu",
        "--set", "batch_size=8"]


def make(name: str, **params):
    cls = DATASETS.get(name)
    return cls(**resolve(cls.params, params, "dataset_params."))


def invoke(args):
    return CliRunner().invoke(app, args)


def runs_in(tracking_uri: str):
    from debiasbench.track.store import Tracker

    tracker = Tracker(tracking_uri, "debiasbench")
    return tracker.client.search_runs([tracker.experiment_id])


#: Layouts run through the CLI in make test-fast (the rest are slow; every layout's contract
#: is checked in tests/test_contracts.py): one with natural bias labels, one without.
CLI_FAST = {"celeba", "image_folder"}


@pytest.mark.parametrize("name", [n if n in CLI_FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(real_layouts.LAYOUTS)])
def test_each_layout_runs_through_the_cli_and_logs_metrics(name, tmp_path, tracking_uri):
    root = real_layouts.LAYOUTS[name](tmp_path / "data")
    result = invoke(["run", "--method", "vanilla", "--dataset", name, "--tracking-uri", tracking_uri,
                     "--set", f"dataset_params.root={root}", *TINY])
    assert result.exit_code == 0, result.output
    (run,) = runs_in(tracking_uri)
    assert run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["test_acc"] <= 1.0 and "val_acc" in run.data.metrics
    assert run.data.params["dataset"] == name


def test_an_injected_artifact_adds_views_and_artifact_metrics(tmp_path, tracking_uri):
    root = real_layouts.isic(tmp_path / "data")
    result = invoke(["run", "--method", "rrr", "--dataset", "isic", "--tracking-uri", tracking_uri,
                     "--set", f"dataset_params.root={root}", "--set", "dataset_params.artifact=patch",
                     "--set", "dataset_params.p=0.8", *TINY])
    assert result.exit_code == 0, result.output
    metrics = runs_in(tracking_uri)[0].data.metrics
    for key in ("test_clean_acc", "test_biased_acc", "val_biased_acc", "artifact_relevance"):
        assert key in metrics


def test_a_method_needing_artifacts_is_refused_without_an_injected_artifact(tmp_path, tracking_uri):
    root = real_layouts.isic(tmp_path / "data")
    result = invoke(["run", "--method", "rrclarc", "--dataset", "isic", "--tracking-uri", tracking_uri,
                     "--set", f"dataset_params.root={root}", *TINY])
    assert result.exit_code == 2
    assert "requires artifact_labels, which dataset 'isic' does not provide" in result.output
    assert "set dataset_params.artifact to inject one (patch, lsb" in result.output


def test_method_hparam_checks_see_what_an_injected_artifact_provides(tmp_path):
    from debiasbench.contract.config import resolve_config
    from debiasbench.core.errors import ConfigError

    root = real_layouts.isic(tmp_path / "data")
    base = {"method": "gradient_alignment", "dataset": "isic",
            "hparams": {"bias_source": "labels"}, "dataset_params": {"root": str(root)}}
    with pytest.raises(ConfigError, match="hparams.bias_source"):
        resolve_config(base)
    # allow_unsuited: GA is unsuited to an injected artifact (one attacked class); the
    # hparam check is what this test is about.
    injected = {**base, "dataset_params": {"root": str(root), "artifact": "patch"}, "allow_unsuited": True}
    assert resolve_config(injected).hparams["bias_source"] == "labels"


def corrupt_isic_image(root):
    path = root / "ISIC_2019_Training_Input" / "ISIC_0000004.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


def drop_place_column(root):
    csv = root / "waterbird_complete95_forest2water2" / "metadata.csv"
    lines = [",".join(line.split(",")[:4]) for line in csv.read_text().splitlines()]
    csv.write_text("\n".join(lines) + "\n")
    return csv


def edit_csv_cell(csv, row, column, value):
    """Set one cell of a comma-separated file (``row`` counts data rows from 0)."""
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = value
    lines[row + 1] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    return csv


def waterbirds_cell(column, value, row=2):
    return lambda root: edit_csv_cell(root / "waterbird_complete95_forest2water2" / "metadata.csv", row, column, value)


def isic_cell(column, value, row=2):
    return lambda root: edit_csv_cell(root / "ISIC_2019_Training_GroundTruth.csv", row, column, value)


def decompression_bomb(root):
    """An ISIC image whose header claims far more pixels than PIL will decode."""
    from PIL import Image

    path = root / "ISIC_2019_Training_Input" / "ISIC_0000004.jpg"
    Image.new("1", (20000, 20000)).save(path.with_suffix(".png"), optimize=True)
    path.with_suffix(".png").rename(path)
    return path


@pytest.mark.parametrize("name,breaks,expected", [
    ("isic", isic_cell("NV", "abc"), ["column 'NV'", "ISIC_2019_Training_GroundTruth.csv", "holds 'abc' in data row 3",
                                      "expected a number"]),
    ("waterbirds", waterbirds_cell("y", "bird"), ["column 'y'", "metadata.csv", "holds 'bird' in data row 3",
                                                   "expected an integer"]),
    ("waterbirds", waterbirds_cell("y", ""), ["column 'y'", "metadata.csv", "holds an empty cell in data row 3"]),
    ("isic", decompression_bomb, ["cannot read image", "ISIC_0000004.jpg", "DecompressionBombError"]),
    ("waterbirds", waterbirds_cell("img_filename", "../../../outside.jpg"),
     ["image path of data row 3", "outside.jpg", "leaves the dataset root"]),
    ("waterbirds", waterbirds_cell("img_filename", "/etc/passwd"),
     ["image path of data row 3 ('/etc/passwd') leaves the dataset root"]),
    ("celeba", lambda root: root / "nowhere", ["folder", "nowhere' not found", "list_attr_celeba.txt"]),
    ("isic", lambda root: (root / "ISIC_2019_Training_GroundTruth.csv").unlink() or root,
     ["ISIC_2019_Training_GroundTruth.csv' not found", "columns image, MEL"]),
    ("waterbirds", drop_place_column, ["metadata.csv' has no column 'place'", "img_filename"]),
    ("isic", corrupt_isic_image, ["cannot read image", "ISIC_0000004.jpg", "ISIC_2019_Training_Input/<image>.jpg"]),
    ("bone_age", lambda root: (root / "boneage-training-dataset" / "1380.png").unlink(),
     ["cannot read image", "1380.png", "boneage-training-dataset/<id>.png"]),
    ("bffhq", lambda root: (root / "bffhq" / "test" / "16_0_0.png").rename(root / "bffhq" / "test" / "bad.png"),
     ["bad.png' is not named '<idx>_<label>_<bias>.png'"]),
])
def test_bad_data_is_one_line_naming_the_file_and_layout_and_records_no_run(name, breaks, expected, tmp_path,
                                                                            tracking_uri):
    root = real_layouts.LAYOUTS[name](tmp_path / "data")
    given = breaks(root)
    target = given if name == "celeba" else root
    result = invoke(["run", "--method", "vanilla", "--dataset", name, "--tracking-uri", tracking_uri,
                     "--set", f"dataset_params.root={target}", *TINY])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output and "expected" in result.output
    for text in expected:
        assert text in result.output
    assert runs_in(tracking_uri) == []
    assert not list(dataset_cache_dir(root).glob("*.tmp"))  # no half-written cache


def test_missing_root_param_names_the_layout(tracking_uri):
    result = invoke(["run", "--dataset", "waterbirds", *TINY])
    assert result.exit_code == 2
    assert "dataset_params.root: expected the folder holding" in result.output
    assert "metadata.csv" in result.output


def test_celeba_labels_and_bias_are_the_attribute_columns(tmp_path):
    data = make("celeba", root=str(real_layouts.celeba(tmp_path)), image_size=16)
    n = 40
    expected = [real_layouts.celeba_attributes(i) for i in range(n)]
    rows = {"train": range(0, 24), "val": range(24, 32), "test": range(32, 40)}
    for split, index in rows.items():
        got = data.splits[split]
        assert got.y.tolist() == [expected[i][0] for i in index]
        assert got.bias.tolist() == [expected[i][1] for i in index]
        # blond men and non-blond women are bias-conflicting (female points to blond)
        assert torch.equal(got.conflicting, got.y == got.bias)
    assert data.num_classes == 2 and data.num_bias == 2 and data.provides == {"bias_labels"}
    other = make("celeba", root=str(tmp_path), image_size=16, target="Male", bias="Blond_Hair")
    assert torch.equal(other.splits["train"].y, data.splits["train"].bias)


def test_waterbirds_bias_is_the_place_and_splits_follow_the_metadata(tmp_path):
    data = make("waterbirds", root=str(real_layouts.waterbirds(tmp_path)), image_size=16)
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [18, 6, 6]
    train = data.splits["train"]
    assert train.y.tolist() == [i % 2 for i in range(18)]
    assert train.bias.tolist() == [i % 2 if i % 3 else 1 - i % 2 for i in range(18)]
    assert torch.equal(train.conflicting, train.y != train.bias)
    # the folder itself is accepted as root too
    again = make("waterbirds", root=str(tmp_path / "waterbird_complete95_forest2water2"), image_size=16)
    assert torch.equal(again.splits["test"].x, data.splits["test"].x)


def test_bffhq_labels_and_bias_come_from_the_file_names(tmp_path):
    data = make("bffhq", root=str(real_layouts.bffhq(tmp_path)), image_size=16)
    train = data.splits["train"]
    assert len(train) == 10 and len(data.splits["val"]) == 6 and len(data.splits["test"]) == 6
    assert int(train.conflicting.sum()) == 2  # the conflict folder: label and bias disagree
    assert torch.equal(train.conflicting, train.y != train.bias)


def test_bone_age_bins_ages_into_classes(tmp_path):
    root = str(real_layouts.bone_age(tmp_path))
    data = make("bone_age", root=root, image_size=16)
    assert data.num_classes == 5 and data.classes[0] == "0-48 months"
    labels = torch.cat([data.splits[s].y for s in ("train", "val", "test")])
    assert set(labels.tolist()) == {0, 2, 4}  # 30, 120 and 200 months
    assert make("bone_age", root=root, image_size=16, age_bins="100").num_classes == 2


def test_isic_drops_unknown_only_rows_and_takes_the_one_hot_label(tmp_path):
    data = make("isic", root=str(real_layouts.isic(tmp_path)), image_size=16)
    assert data.num_classes == 8
    assert sum(len(data.splits[s]) for s in ("train", "val", "test")) == 30
    assert set(data.splits["train"].y.tolist()) <= {0, 1, 2}


def test_image_folder_class_subset_and_train_val_folders(tmp_path):
    flat = make("image_folder", root=str(real_layouts.image_folder(tmp_path / "flat")), image_size=16,
                classes="dog,fox")
    assert flat.classes == ["dog", "fox"] and sum(len(s) for s in flat.splits.values()) == 20
    nested = make("image_folder", image_size=16, val_fraction=0.2,
                  root=str(real_layouts.image_folder(tmp_path / "nested", per_class=5, splits=("train", "val"))))
    assert len(nested.splits["test"]) == 15  # val/ is the test split
    assert len(nested.splits["train"]) + len(nested.splits["val"]) == 15 and len(nested.splits["val"]) == 3


def test_max_per_split_keeps_a_seeded_subset(tmp_path):
    root = str(real_layouts.image_folder(tmp_path))
    data = make("image_folder", root=root, image_size=16, max_per_split=4)
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [4, 3, 4]
    again = make("image_folder", root=root, image_size=16, max_per_split=4)
    assert torch.equal(again.splits["train"].x, data.splits["train"].x)


def test_images_are_resized_centre_cropped_floats_in_unit_range(tmp_path):
    data = make("image_folder", root=str(real_layouts.image_folder(tmp_path)), image_size=12)
    x = data.splits["train"].x
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 12, 12)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_natural_bias_views_are_the_aligned_samples_and_a_group_balanced_subset(tmp_path):
    data = make("celeba", root=str(real_layouts.celeba(tmp_path)), image_size=16)
    for split in ("val", "test"):
        biased, clean = data.views[f"{split}_biased"], data.views[f"{split}_clean"]
        assert len(biased) > 0 and not biased.conflicting.any()
        cells = torch.bincount(clean.groups(2), minlength=4)
        assert (cells == cells[0]).all() and cells[0] > 0  # every class x bias cell equally often
    assert make("isic", root=str(real_layouts.isic(tmp_path / "isic")), image_size=16).views == {}


#: Layouts without natural bias labels: controlled test views only with an injected artifact.
NO_NATURAL_BIAS = {"isic", "bone_age", "image_folder"}


@pytest.mark.parametrize("injected", [False, True])
@pytest.mark.parametrize("name", sorted(real_layouts.LAYOUTS))
def test_each_layout_keeps_the_dataset_contract(name, injected, tmp_path):
    from debiasbench.testing import check_dataset

    root = real_layouts.LAYOUTS[name](tmp_path / "data")
    params = {"root": str(root), "image_size": 16}
    if injected:
        params.update(artifact="patch", p=0.8)
    data = check_dataset(DATASETS.get(name), **params)
    has_views = injected or name not in NO_NATURAL_BIAS
    assert ({"test_clean", "test_biased"} <= set(data.views)) == has_views
    if injected:
        assert {"artifact_labels", "artifact_masks"} <= data.provides
