"""Faults of machines and files heal, or say in one line exactly what to do: a damaged
image cache is rebuilt, an unusable checkpoint set aside, a stale RUNNING run marked
KILLED, a full disk or an unwritable place named at once."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from debiasbench.cli import main
from debiasbench.core.errors import UserError
from debiasbench.data.image_cache import checksum_path, load_images
from debiasbench.run.runner import UNUSABLE_FOLDER, run
from debiasbench.testing import one_thread, tiny_config, without_timing
from debiasbench.track.store import FAILURE_TAG, RUN_KEY_TAG, Tracker


def images(folder: Path, n: int = 12) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 255, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:64] = os.urandom(64)
    path.write_bytes(bytes(data))


def other_bytes_same_size(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def other_pixels_same_header(path: Path) -> None:
    """Pixels changed under an intact header and size: only the checksums can tell."""
    data = bytearray(path.read_bytes())
    data[-3 * 16 * 16:] = bytes(255 - b for b in data[-3 * 16 * 16:])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, zero_bytes, garble_header, other_bytes_same_size,
                                    other_pixels_same_header])
def test_a_damaged_image_cache_is_detected_and_rebuilt_with_a_note(damage, tmp_path, capsys):
    paths = images(tmp_path / "images")
    clean = np.array(load_images(paths, 16, tmp_path / "cache"))
    (cache,) = (tmp_path / "cache").glob("*.npy")
    damage(cache)
    rebuilt = np.array(load_images(paths, 16, tmp_path / "cache"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"image cache '{cache}' is damaged (") and "rebuilding it" in err[0]
    assert np.array_equal(rebuilt, clean)
    again = np.array(load_images(paths, 16, tmp_path / "cache"))  # the rebuilt cache is whole: no note
    assert capsys.readouterr().err == "" and np.array_equal(again, clean)


def test_a_cache_whose_checksums_are_lost_is_rebuilt(tmp_path, capsys):
    paths = images(tmp_path / "images")
    clean = np.array(load_images(paths, 16, tmp_path / "cache"))
    (cache,) = (tmp_path / "cache").glob("*.npy")
    checksum_path(cache).unlink()
    assert np.array_equal(np.array(load_images(paths, 16, tmp_path / "cache")), clean)
    assert "checksum file is missing" in capsys.readouterr().err


def test_a_full_disk_while_reserving_the_cache_is_one_error_naming_the_folder_and_bytes(tmp_path, monkeypatch):
    paths = images(tmp_path / "images")

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(UserError, match=r"no space left for the image cache in '.*cache': it needs \d+ bytes"):
        load_images(paths, 16, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # no temporary file left, nor the folder made for it


def test_a_really_full_disk_is_the_same_error_and_leaves_nothing(tmp_path, tmpfs):
    small = tmpfs("64k")
    paths = images(tmp_path / "images", n=200)  # 200 x 3 x 32 x 32 bytes: far more than 64 KiB
    folder = small.path / "images" / "data-0123456789abcdef"  # a dataset's folder under the cache root
    with pytest.raises(UserError, match=f"no space left for the image cache in '{folder}'"):
        load_images(paths, 32, folder)
    assert os.listdir(small.path) == []  # no temporary, and not the folders made for the cache


def checkpoint_of(config) -> Path:
    return Path(config.checkpoint_dir) / config.run_key() / "last.pt"


@pytest.mark.parametrize("write", [
    pytest.param(lambda path: path.write_bytes(b""), id="zero_bytes"),
    pytest.param(lambda path: path.write_bytes(b"PK\x03\x04 cut short"), id="truncated", marks=pytest.mark.slow),
    pytest.param(lambda path: torch.save({"model": {"some.other.net": torch.zeros(3)}, "epoch": 1}, path),
                 id="foreign", marks=pytest.mark.slow),
])
def test_an_unusable_checkpoint_is_set_aside_and_the_run_starts_from_scratch(write, tracker, tmp_path, capsys):
    config = tiny_config(checkpoint_dir=str(tmp_path / "ckpt"))
    with one_thread():
        clean = run(config, Tracker(tracker.uri, "clean"), progress=False)
        path = checkpoint_of(config)
        path.parent.mkdir(parents=True)
        write(path)
        original = path.read_bytes()
        capsys.readouterr()
        healed = run(config, tracker, progress=False)
    note = [line for line in capsys.readouterr().err.splitlines() if "cannot be resumed from" in line]
    assert len(note) == 1 and "the run starts from scratch" in note[0]
    (kept,) = (tmp_path / "ckpt" / UNUSABLE_FOLDER).iterdir()
    assert kept.read_bytes() == original and kept.name.startswith(config.run_key())
    assert without_timing(healed.metrics) == pytest.approx(without_timing(clean.metrics))
    again = run(config, tracker, progress=False)  # and nothing is left to fail a later run
    assert without_timing(again.metrics) == pytest.approx(without_timing(clean.metrics))


def test_a_run_left_running_by_a_killed_process_is_marked_killed_when_its_key_runs_again(tracker, tmp_path, capsys):
    config = tiny_config(checkpoint_dir=str(tmp_path / "ckpt"), epochs=1)
    # What a SIGKILLed `debiasbench run` leaves: a run with the job's key, RUNNING for good.
    stale = tracker.client.create_run(tracker.experiment_id, tags={RUN_KEY_TAG: config.run_key()}).info.run_id
    result = run(config, tracker, progress=False)
    assert "1 earlier run of this job stayed RUNNING" in capsys.readouterr().err
    old = tracker.client.get_run(stale)
    assert old.info.status == "KILLED" and "interrupted" in old.data.tags[FAILURE_TAG]
    assert tracker.client.get_run(result.run_id).info.status == "FINISHED"


def refused(capsys, *argv: str) -> tuple[str, float]:
    began = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    seconds = time.perf_counter() - began
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0], seconds


TINY_RUN = ["run", "-d", "synthetic_artifacts", "--set", "dataset_params.n_train=40", "--set",
            "dataset_params.n_val=20", "--set", "dataset_params.n_test=20", "--set", "epochs=1"]


def test_a_store_on_a_read_only_filesystem_is_one_line_at_once(tmpfs, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    disk = tmpfs("1m")
    disk.remount("ro")
    line, seconds = refused(capsys, *TINY_RUN, "--tracking-uri", f"sqlite:///{disk.path}/mlflow.db")
    assert f"folder '{disk.path}' is not writable" in line
    assert seconds < 10


def test_an_existing_store_that_became_read_only_is_one_line(tmpfs, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    disk = tmpfs("4m")
    uri = f"sqlite:///{disk.path}/mlflow.db"
    subprocess.run([sys.executable, "-c", "import sys; from debiasbench.track.store import Tracker; "
                    "Tracker(sys.argv[1], 'tests').experiment_id", uri], check=True)  # no file left open here
    disk.remount("ro")
    line, _ = refused(capsys, *TINY_RUN, "--tracking-uri", uri)
    assert "is not writable" in line


def test_a_store_created_on_a_full_disk_is_not_left_broken(tmpfs, tmp_path):
    disk = tmpfs("1m")
    filler = disk.path / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # 64 KiB left: less than a new store needs
    uri = f"sqlite:///{disk.path}/mlflow.db"
    with pytest.raises(UserError, match="could not be created"):
        Tracker(uri, "tests").search()
    assert not (disk.path / "mlflow.db").exists()
    assert [p.name for p in disk.path.iterdir()] == ["filler"]  # no temporary, no lock file
    filler.unlink()  # space freed: the store is created whole
    tracker = Tracker(uri, "tests")
    assert tracker.search() == [] and tracker.experiment_id


def test_leaderboard_out_on_a_file_or_a_read_only_folder_is_one_line(tmp_path, capsys, tmpfs, tracking_uri):
    (tmp_path / "a_file").write_text("x")
    line, _ = refused(capsys, "leaderboard", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "a_file"))
    assert line == f"error: --out: '{tmp_path / 'a_file'}' is a file, not a folder."
    disk = tmpfs("1m")
    disk.remount("ro")
    line, _ = refused(capsys, "leaderboard", "--tracking-uri", tracking_uri, "--out", str(disk.path / "board"))
    assert line == f"error: --out: folder '{disk.path}' is not writable (a read-only filesystem or permissions)."
