"""Image-file datasets without copies: streamed or resident uint8, views painted per batch.

The reference for every view is what earlier versions materialised: the whole split
decoded to float, the artifact painted into copies of it with the injector's own random
draws. The lazy splits must give the same pixels and masks, in both placements.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import real_layouts
from debiasbench.data.dataset import Loader, Split
from debiasbench.data.dataset import eval_batch_for
from debiasbench.evaluation.explanation import explain_batch_for, relevance_sample
from debiasbench.core.hparams import resolve
from debiasbench.data.image_cache import load_images, open_images
from debiasbench.data.injection import make_artifact
from debiasbench.data.pixels import CachedPixels, ImageStore, choose_placement
from debiasbench.core.registry import DATASETS, METHODS
from debiasbench.train.samplers import ImportanceSampler

KINDS: dict[str, dict[str, object]] = {"patch": {}, "lsb": {}, "brightness": {}, "tint": {}, "timestamp": {}}


def folder_dataset(root: Path, **params):
    cls = DATASETS.get("image_folder")
    return cls(**resolve(cls.params, {"root": str(root), "image_size": 32, **params}, "dataset_params."))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return real_layouts.image_folder(tmp_path_factory.mktemp("folder"), per_class=12)


def reference_splits(data, root: Path, params: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(x, mask) of every split and view as earlier versions built them: float copies."""
    from debiasbench.data.image_files import SPLITS

    table = data.read_table(root)
    rows = data.assign_splits(table)
    order = np.concatenate([rows[s] for s in SPLITS])
    images = np.array(load_images([table.paths[i] for i in order], 32, root / ".debiasbench_cache"))
    labels = torch.as_tensor(np.asarray(table.labels, dtype=np.int64))
    inject = make_artifact(data.p, 32, data.num_classes)
    assert inject is not None  # every dataset here has an artifact
    generator = torch.Generator().manual_seed(data.p["seed"])
    out, start = {}, 0
    for split in SPLITS:
        count = len(rows[split])
        x = torch.from_numpy(images[start:start + count]).float() / 255
        start += count
        y = labels[torch.as_tensor(rows[split])]
        has = (y == data.p["attacked_class"]) & (torch.rand(len(y), generator=generator) < data.p["p"])
        if split == "train":
            natural, mask = x.clone(), torch.zeros(len(y), 1, 32, 32, dtype=torch.bool)
            chosen = has.nonzero().squeeze(1)
            if len(chosen):
                natural[chosen], mask[chosen] = inject(x[chosen], generator)
            out["train"] = (natural, mask)
            continue
        biased, mask = inject(x, generator)
        shown = has.view(-1, 1, 1, 1)
        out[split] = (torch.where(shown, biased, x), mask & shown)
        out[f"{split}_clean"] = (x, torch.zeros_like(mask))
        out[f"{split}_biased"] = (biased, mask)
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("placement", ["stream", "device"])
def test_views_equal_the_materialised_copies_earlier_versions_built(folder, kind, placement):
    params = {"artifact": kind, "p": 0.6}
    data = folder_dataset(folder, **params)
    data.place("cpu", placement)
    expected = reference_splits(data, folder, params)
    built = {**data.splits, **data.views}
    assert set(built) == set(expected)
    for name, (x, mask) in expected.items():
        assert torch.equal(built[name].x, x), name
        assert torch.equal(built[name].mask, mask), name


def batches_of(data, sampler=None):
    loader = Loader(data.splits["train"], 7, torch.Generator().manual_seed(3), sampler=sampler,
                    augment=data.augment)
    return [batch for _ in range(2) for batch in loader]


def test_both_placements_give_identical_batches_for_the_same_seed(folder):
    streamed, resident = folder_dataset(folder, artifact="patch"), folder_dataset(folder, artifact="patch")
    assert streamed.place("cpu", "stream") == "stream" and resident.place("cpu", "device") == "device"
    assert streamed.splits["train"].pixels.streamed and not resident.splits["train"].pixels.streamed
    probs = torch.linspace(1, 2, len(streamed.splits["train"]))
    for sampler in (None, ImportanceSampler(probs / probs.sum())):
        a, b = batches_of(streamed, sampler), batches_of(resident, sampler)
        assert len(a) == len(b) > 2
        for first, second in zip(a, b):
            for field in ("x", "y", "bias", "artifact", "mask", "index"):
                assert torch.equal(getattr(first, field), getattr(second, field)), field


def test_views_are_row_numbers_into_one_store_not_copies(folder):
    data = folder_dataset(folder, artifact="patch")
    stores = {id(split.pixels.base.store) for split in (*data.splits.values(), *data.views.values())}
    assert stores == {id(data.store)}
    assert len(data.store) == sum(len(s) for s in data.splits.values())


def test_natural_views_are_index_subsets_of_the_same_store(tmp_path):
    root = real_layouts.celeba(tmp_path / "celeba")
    cls = DATASETS.get("celeba")
    data = cls(**resolve(cls.params, {"root": str(root), "image_size": 16}, "dataset_params."))
    test = data.splits["test"]
    for name in ("test_clean", "test_biased"):
        view = data.views[name]
        assert view.pixels.store is data.store
        assert set(view.pixels.rows.tolist()) <= set(test.pixels.rows.tolist())


def test_a_streamed_store_reads_rows_from_the_file_without_mapping_it(tmp_path, folder):
    paths = sorted(folder.rglob("*.jpg"))[:5]
    store = open_images(paths, 16, tmp_path)
    gathered = store.gather(torch.tensor([4, 0, 2]))
    assert store.resident is None
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(store.path) not in maps.read_text()
    expected = np.asarray(load_images(paths, 16, tmp_path))
    assert torch.equal(gathered, torch.from_numpy(expected[[4, 0, 2]]))


def test_a_cache_shorter_than_its_header_is_an_error_naming_the_file(tmp_path, folder):
    paths = sorted(folder.rglob("*.jpg"))[:3]
    store = open_images(paths, 16, tmp_path)
    with open(store.path, "r+b") as handle:
        handle.truncate(store.offset + store.row_bytes)
    broken = ImageStore(store.path, store.shape, store.offset)
    with pytest.raises(OSError, match="shorter than its header"):
        broken.gather(torch.tensor([2]))


def test_auto_placement_keeps_small_data_resident_and_streams_large_data():
    cpu = torch.device("cpu")
    assert choose_placement(10 * 2**20, cpu) == "device"
    assert choose_placement(25_331 * 3 * 224 * 224, cpu) == "stream"  # ISIC at 224 px


def test_evaluation_batches_shrink_with_the_image_size():
    assert eval_batch_for(None, (3, 32, 32)) == 512
    assert eval_batch_for(None, (3, 28, 28)) == 512
    assert eval_batch_for(None, (3, 224, 224)) == 10
    assert eval_batch_for(None, (3, 4096, 4096)) == 1
    assert eval_batch_for(64, (3, 224, 224)) == 64
    assert explain_batch_for((3, 32, 32)) == explain_batch_for((3, 64, 64)) == 64
    assert explain_batch_for((3, 224, 224)) == 5


def test_the_relevance_sample_is_bounded_seeded_and_sorted():
    candidates = torch.arange(5000) % 3 == 0
    first, again = relevance_sample(candidates, 100), relevance_sample(candidates, 100)
    assert torch.equal(first, again) and len(first) == 100
    assert bool(candidates[first].all()) and torch.equal(first, first.sort().values)
    assert torch.equal(relevance_sample(candidates, 10_000), candidates.nonzero().squeeze(1))


def test_split_subset_and_batches_agree_with_materialised_rows():
    x = torch.rand(20, 3, 8, 8)
    labels = torch.arange(20) % 2
    split = Split(x=x, y=labels, bias=labels, artifact=labels.bool(), conflicting=labels.bool())
    index = torch.tensor([5, 1, 17])
    view = split.subset(index)
    assert torch.equal(view.x, x[index]) and torch.equal(view.y, labels[index])
    assert torch.equal(torch.cat([b.x for b in split.batches(6)]), x)


def test_a_split_refuses_pixels_and_tensors_at_once():
    store_pixels = CachedPixels(ImageStore(Path("unused.npy"), (2, 3, 4, 4), 128), torch.arange(2))
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="either x / mask or pixels"):
        Split(x=torch.zeros(2, 3, 4, 4), y=labels, bias=labels, artifact=labels.bool(),
              conflicting=labels.bool(), pixels=store_pixels)


#: Methods streamed in make test-fast (the rest are slow): plain training, and RRR, which
#: reads the streamed artifact masks.
STREAMED_FAST = {"vanilla", "rrr"}


@pytest.mark.parametrize("method", [m if m in STREAMED_FAST else pytest.param(m, marks=pytest.mark.slow)
                                    for m in sorted(METHODS.names())])
def test_every_method_runs_end_to_end_on_streamed_images(folder, tracker, tmp_path, method):
    from debiasbench.contract.config import resolve_config
    from debiasbench.run.runner import run
    from debiasbench.testing import one_thread

    config = resolve_config({
        "method": method, "dataset": "image_folder", "device": "cpu", "epochs": 1, "batch_size": 8,
        "data_placement": "stream", "experiment": "streamed", "checkpoint_dir": str(tmp_path / "ckpt"),
        "dataset_params": {"root": str(folder), "image_size": 16, "artifact": "patch", "p": 0.5},
        "allow_unsuited": True,  # streaming mechanics: gradient alignment runs on the injected artifact too
        # DFR's tuning halves and balanced subsets of this tiny validation split (a few images
        # a class) may hold one class only: fit once on all of it, group-weighted
        "hparams": {"C": 1.0, "balance": "reweight"} if method == "dfr" else {},
    })  # p 0.5: the attacked class has training samples with and without the patch (CAVs need both)
    with one_thread():
        result = run(config, tracker, progress=False)
    assert 0.0 <= result.metrics["test_acc"] <= 1.0 and "test_biased_acc" in result.metrics
    assert tracker.client.get_run(result.run_id).data.tags["debiasbench.data_placement"] == "stream"


def test_the_cli_streams_when_asked_and_records_the_placement(folder, tracking_uri, tmp_path):
    from typer.testing import CliRunner

    from debiasbench.cli import app
    from debiasbench.track.store import Tracker

    result = CliRunner().invoke(app, [
        "run", "--method", "rrr", "--dataset", "image_folder", "--tracking-uri", tracking_uri,
        "--set", f"dataset_params.root={folder}", "--set", "dataset_params.image_size=16",
        "--set", "dataset_params.artifact=patch", "--set", "data_placement=stream", "--set", "epochs=1",
        "--set", "device=cpu", "--set", "batch_size=8", "--set", f"checkpoint_dir={tmp_path / 'ckpt'}"])
    assert result.exit_code == 0, result.output
    tracker = Tracker(tracking_uri, "debiasbench")
    runs = {r.data.params["method"]: r for r in tracker.client.search_runs([tracker.experiment_id])}
    assert set(runs) == {"vanilla", "rrr"}  # the correction's vanilla base was trained first, streamed too
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags["debiasbench.data_placement"] == "stream"
        assert run.data.params["data_placement"] == "stream"
    metrics = runs["rrr"].data.metrics
    assert 0 < metrics["relevance_samples"] <= 512 and "artifact_relevance" in metrics


def test_the_cli_refuses_an_unknown_placement_in_one_line(tracking_uri):
    from typer.testing import CliRunner

    from debiasbench.cli import app

    result = CliRunner().invoke(app, ["run", "--dataset", "synthetic_artifacts", "--tracking-uri", tracking_uri,
                                      "--set", "data_placement=disk"])
    assert result.exit_code == 2
    assert "data_placement: expected one of 'auto', 'device', 'stream', got 'disk'" in result.output
    assert len(result.output.strip().splitlines()) == 1
