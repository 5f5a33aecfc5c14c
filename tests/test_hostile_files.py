"""Files that are not what they seem: a named pipe or a device where a file is expected, a
file far too large, an image whose header promises gigabytes, a 16-bit PNG, an empty class
folder, and the image cache's temporary left by a writer killed outright. Each is refused
in one line naming it (exit code 2, nothing written), decoded correctly, or tidied up on
the next run, never waited on forever.

Every read of a pipe runs under ``deadline``: where a reader would wait for a writer that
never comes, the test fails after a few seconds instead of hanging the suite."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import refusals
from deadlines import deadline
from debiasbench.core.atomic import this_host
from debiasbench.core.errors import UserError
from debiasbench.core.files import FileRefused, check_regular_file, read_regular_bytes
from debiasbench.data import idx, image_cache
from debiasbench.data.idx import MNIST_FILES, read_idx, write_idx
from debiasbench.data.image_cache import load_images, open_images
from debiasbench.report.leaderboard import read_notes
from debiasbench.run import checkpoints

REPO = Path(__file__).resolve().parents[1]


def refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``debiasbench argv`` exits 2 with one line on stderr and creates no store; the line."""
    return refusals.refuse(tmp_path, capsys, *argv, nothing_written=False)


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


# -- the check itself ---------------------------------------------------------------------


def test_anything_but_a_regular_file_is_named_for_what_it_is(tmp_path):
    regular = tmp_path / "a.txt"
    regular.write_bytes(b"12345")
    (tmp_path / "folder").mkdir()
    cases = {fifo(tmp_path / "pipe"): "is a named pipe (FIFO), not a regular file",
             tmp_path / "folder": "is a folder, not a regular file",
             Path("/dev/null"): "is a character device, not a regular file",
             tmp_path / "absent": "not found",
             regular / "below": "not found (a part of its path is a file)"}
    for path, problem in cases.items():
        with deadline(5, tmp_path / "pipe"), pytest.raises(FileRefused) as refused:
            read_regular_bytes(path, "thing", 100)
        assert str(refused.value) == f"thing '{path}' {problem}"
    assert check_regular_file(regular, "thing", 5) == 5
    with pytest.raises(FileRefused, match=r"is 5 bytes \(5 bytes\), over the 4 bytes limit"):
        check_regular_file(regular, "thing", 4)
    link = tmp_path / "link"
    link.symlink_to(regular)
    assert read_regular_bytes(link, "thing", 5) == b"12345"  # a link to a regular file is one


# -- item 1: configs, notes, tables, IDX files, checkpoints, images -----------------------


@pytest.mark.parametrize("kind", ["pipe", "folder", "device"])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_config_or_sweep_file_that_is_not_a_file_says_what_it_is(here, capsys, kind, command):
    path = {"pipe": lambda: fifo(here / "run.yaml"), "folder": lambda: here / "conf.d",
            "device": lambda: Path("/dev/zero")}[kind]()
    if kind == "folder":
        path.mkdir()
    with deadline(10, here / "run.yaml"):
        line = refuse(here, capsys, *(["run", "--config", str(path)] if command == "run" else ["sweep", str(path)]))
    expected = {"pipe": "a named pipe (FIFO)", "folder": "a folder", "device": "a character device"}[kind]
    assert line == f"error: config file '{path}' is {expected}, not a regular file."


def test_an_oversized_config_file_is_refused_by_its_size(here, capsys):
    big = here / "big.yaml"
    with open(big, "wb") as handle:
        handle.truncate(50 * 2**20)  # sparse: 50 MiB of nothing, never read
    line = refuse(here, capsys, "run", "--config", str(big))
    assert line == f"error: config file '{big}' is 50 MiB ({50 * 2**20} bytes), over the 1 MiB limit."


@pytest.mark.parametrize("kind,expected", [
    ("pipe", "a named pipe (FIFO), not a regular file"),
    ("zero", "a character device, not a regular file"),
    ("huge", f"50 MiB ({50 * 2**20} bytes), over the 1 MiB limit"),
    ("folder", "a folder, not a regular file"),
])
def test_leaderboard_notes_that_are_not_a_small_file_are_refused_before_the_store_is_read(
        here, capsys, kind, expected):
    notes = here / "notes.md"
    if kind == "pipe":
        fifo(notes)
    elif kind == "zero":
        notes = Path("/dev/zero")
    elif kind == "folder":
        notes.mkdir()
    else:
        with open(notes, "wb") as handle:
            handle.truncate(50 * 2**20)
    board = here / "board"
    with deadline(10, here / "notes.md"):
        line = refuse(here, capsys, "leaderboard", "--out", str(board), "--notes", str(notes))
    assert line == f"error: --notes: cannot read '{notes}': {expected}."
    assert not board.exists()


def test_read_notes_reads_a_small_file_and_refuses_a_pipe(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("It shows this.\n\n")
    assert read_notes(notes) == "It shows this."
    with deadline(5, tmp_path / "pipe"), pytest.raises(UserError, match="named pipe"):
        read_notes(fifo(tmp_path / "pipe"))


def test_an_idx_file_that_is_a_pipe_is_refused(tmp_path):
    with deadline(5, tmp_path / "train-images-idx3-ubyte"), pytest.raises(FileRefused, match="named pipe"):
        read_idx(fifo(tmp_path / "train-images-idx3-ubyte"))


@pytest.mark.parametrize("kind", ["pipe", "device"])
def test_mnist_files_that_are_not_regular_files_are_named_not_reported_missing(here, capsys, kind):
    root = here / "mnist" / "raw"
    root.mkdir(parents=True)
    for name in MNIST_FILES.values():
        if kind == "pipe":
            fifo(root / name)
        else:
            (root / f"{name}.gz").symlink_to("/dev/zero")
    first = root / (MNIST_FILES["train_images"] + ("" if kind == "pipe" else ".gz"))
    with deadline(20, first):
        line = refuse(here, capsys, "run", "-d", "colored_mnist", "--set", f"dataset_params.root={here / 'mnist'}")
    what = "a named pipe (FIFO)" if kind == "pipe" else "a character device"
    assert line == f"error: IDX file '{first}' is {what}, not a regular file."


def test_a_gzip_idx_file_that_inflates_past_the_limit_is_refused(tmp_path, monkeypatch):
    path = write_idx(tmp_path / "t.gz", np.zeros((100, 28, 28), dtype=np.uint8))
    monkeypatch.setattr(idx, "IDX_LIMIT", 10_000)  # 78,416 bytes inflated
    with pytest.raises(UserError, match=r"decompresses to more than 9.8 KiB, the limit for an IDX file"):
        read_idx(path)


def test_an_npm_package_that_is_a_pipe_or_device_is_refused_naming_it(tmp_path):
    from debiasbench.data.mnist_npm import convert

    pipe = fifo(tmp_path / "mnist-1.1.0.tgz")
    with deadline(5, pipe), pytest.raises(FileRefused, match=f"npm package '{pipe}' is a named pipe"):
        convert(tmp_path / "out", pipe, log=lambda line: None)
    with pytest.raises(FileRefused, match="npm package '/dev/zero' is a character device"):
        convert(tmp_path / "out", Path("/dev/zero"), log=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_that_is_a_pipe_is_refused_not_waited_on(tmp_path):
    good = tmp_path / "good.pt"
    checkpoints.save_atomic({"epoch": 3}, good)
    assert checkpoints.load(good)["epoch"] == 3
    with deadline(5, tmp_path / "last.pt"), pytest.raises(FileRefused, match="checkpoint '.*last.pt' is a named pipe"):
        checkpoints.load(fifo(tmp_path / "last.pt"))


def test_a_pretrained_checkpoint_that_is_a_pipe_is_refused(tmp_path):
    from debiasbench.models.pretrained import load_pretrained

    with deadline(5, tmp_path / "w.pt"), pytest.raises(UserError, match="named pipe"):
        load_pretrained(torch.nn.Linear(2, 2), fifo(tmp_path / "w.pt"))


def image_tree(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 6, size: int = 12) -> Path:
    for k, name in enumerate(classes):
        for i in range(per_class):
            pixels = np.full((size, size, 3), 60 * k + i, dtype=np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


FAST = ["--set", "epochs=1", "--set", "dataset_params.image_size=8", "--set", "batch_size=4"]


def test_a_pipe_named_like_an_image_in_an_image_folder_is_refused_naming_it(here, capsys):
    root = image_tree(here / "images")
    pipe = fifo(root / "a" / "x.png")
    with deadline(20, pipe):
        line = refuse(here, capsys, "run", "-d", "image_folder", "--set", f"dataset_params.root={root}", *FAST)
    assert line.startswith(f"error: image_folder: cannot read image '{pipe}' (is a named pipe (FIFO), "
                           "not a regular file); expected layout:")
    assert not image_cache.dataset_cache_dir(root).exists()  # refused before the cache was begun


def test_a_table_that_is_a_pipe_is_refused_with_the_layout(here, capsys):
    root = here / "isic"
    (root / "ISIC_2019_Training_Input").mkdir(parents=True)
    table = fifo(root / "ISIC_2019_Training_GroundTruth.csv")
    with deadline(20, table):
        line = refuse(here, capsys, "run", "-d", "isic", "--set", f"dataset_params.root={root}", *FAST)
    assert line.startswith(f"error: isic: '{table}' is a named pipe (FIFO), not a regular file; expected layout:")


# -- item 20: empty class folders and 16-bit images ---------------------------------------


def test_an_empty_class_folder_is_refused_naming_it(here, capsys):
    root = image_tree(here / "images")
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("not an image")
    line = refuse(here, capsys, "run", "-d", "image_folder", "--set", f"dataset_params.root={root}", *FAST)
    assert line.startswith(f"error: image_folder: class folder '{root / 'c'}' holds no image (.jpg, .jpeg, .png)")


def test_a_class_without_training_images_is_refused(here, capsys):
    root = here / "images"
    image_tree(root / "train")
    image_tree(root / "val", classes=("a", "b", "c"))
    line = refuse(here, capsys, "run", "-d", "image_folder", "--set", f"dataset_params.root={root}", *FAST)
    assert line.startswith(f"error: image_folder: class 'c' has no folder under '{root / 'train'}'")


def test_a_16_bit_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    values = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535 in steps
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    decoded = load_images([path], 16, tmp_path / "cache")[0]
    expected = np.round(values / 257).astype(np.uint8)
    assert [np.array_equal(channel, expected) for channel in decoded] == [True, True, True]


def _png16(path: Path, values: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG of ``values`` [H, W, C] (colour type 0 grey, 2 RGB, 4 grey + alpha,
    6 RGBA), written chunk by chunk: PIL cannot write 16-bit colour PNGs."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = values.shape[:2]
    rows = b"".join(b"\0" + values[i].astype(">u2").tobytes() for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("color_type,channels", [(0, 1), (2, 3), (4, 2), (6, 4)])
def test_16_bit_pngs_of_every_colour_type_decode_by_bit_depth(tmp_path, color_type, channels):
    """Grey, RGB, grey + alpha and RGBA at 16 bits: each colour channel is its 16-bit value
    brought to 8 bits (within one step of rounding), never clipped to white."""
    grey = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    planes = {1: [grey], 2: [grey, grey // 2], 3: [grey, grey // 2, grey // 3], 4: [grey, grey // 2, grey // 3, grey]}
    path = tmp_path / "deep.png"
    _png16(path, np.stack(planes[channels], -1), color_type)
    decoded = load_images([path], 16, tmp_path / "cache")[0].astype(int)
    colours = planes[channels][:3] if channels >= 3 else [grey] * 3
    for channel, values in zip(decoded, colours):
        assert np.abs(channel - values.astype(int) / 257).max() <= 1


def test_palette_and_cmyk_images_decode_to_their_colours(tmp_path):
    values = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(values).convert("P").save(tmp_path / "palette.png", transparency=0)
    Image.fromarray(np.zeros((16, 16, 4), np.uint8), "CMYK").save(tmp_path / "white.jpg")  # no ink
    palette, white = load_images([tmp_path / "palette.png", tmp_path / "white.jpg"], 16, tmp_path / "cache")
    assert [np.array_equal(channel, values) for channel in palette] == [True, True, True]
    assert white.min() >= 250


def test_an_8_bit_image_decodes_as_before(tmp_path):
    values = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / "grey.png"
    Image.fromarray(values).save(path)
    assert np.array_equal(load_images([path], 16, tmp_path / "cache")[0][1], values)


# -- item 10: decoded size bounded before decoding; MemoryError names the file ------------


def test_a_thin_strip_is_refused_from_its_header_before_it_is_decoded(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("L", (20_000, 1)).save(path)  # a few hundred bytes; 160,000 x 8 after the resize
    with pytest.raises(UserError, match=rf"cannot read image '{path}' \(20000 x 1 pixels: one side is more than "
                                        r"100 times the other\)"):
        load_images([path], 8, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*")) == []


def test_an_image_pil_warns_of_is_refused_in_one_line_without_its_warning(here):
    root = image_tree(here / "images")
    big = root / "b" / "big.png"
    Image.new("1", (12_000, 12_000)).save(big)  # 17 KB; 144 megapixels, where PIL warns of a bomb
    # in a process of its own: pytest records warnings instead of printing them
    done = subprocess.run([sys.executable, "-c", "from debiasbench.cli import main; main()", "run", "-d",
                           "image_folder", "--set", f"dataset_params.root={root}", *FAST, "--tracking-uri",
                           f"sqlite:///{here / 'store.db'}"], cwd=here, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    line = done.stderr.strip()
    assert not (here / "store.db").exists()
    assert line.startswith(f"error: image_folder: cannot read image '{big}' (12000 x 12000 pixels, more than the "
                           "limit of 50,000,000 pixels of an image)")


def test_an_image_of_too_many_pixels_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.new("RGB", (300, 200)).save(path)
    monkeypatch.setattr(image_cache, "MAX_PIXELS", 50_000)
    with pytest.raises(UserError, match=r"300 x 200 pixels, more than the limit of 50,000 pixels of an image"):
        load_images([path], 8, tmp_path / "cache")


def test_running_out_of_memory_while_decoding_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30)).save(path)

    def no_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError()

    monkeypatch.setattr(Image.Image, "resize", no_memory)
    expected = rf"^out of memory decoding image '{path}' \(40 x 30 pixels, resized to 8 px\)$"
    with pytest.raises(UserError, match=expected):
        load_images([path], 8, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # the reserved temporary is gone, and the folder made for it


def test_running_out_of_memory_while_building_the_cache_names_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30)).save(path)

    def no_memory(fd: int, size: int) -> None:
        raise MemoryError()

    monkeypatch.setattr(image_cache, "reserve", no_memory)
    with pytest.raises(UserError, match=r"^out of memory building the image cache '.*\.npy' \(1 images at 8 px\)$"):
        load_images([path], 8, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # the reserved temporary is gone, and the folder made for it


# -- item 8: temporaries of killed writers ------------------------------------------------

WRITER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from debiasbench.data import image_cache

    original = image_cache.decode

    def slow(path, size):
        time.sleep(0.2)
        return original(path, size)

    image_cache.decode = slow
    paths = [Path(p) for p in sys.argv[2:]]
    image_cache.open_images(paths, 16, Path(sys.argv[1]), workers=1)
""")


def start_writer(cache: Path, paths: list[Path]) -> tuple[subprocess.Popen, Path]:
    """A process writing the cache of ``paths`` slowly; returns once its temporary exists."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(cache), *map(str, paths)], env=env,
                               stderr=subprocess.PIPE)
    for _ in range(300):
        found = list(cache.glob(".*.npy.tmp")) if cache.exists() else []
        if found:
            return process, found[0]
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "writer ended")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the writer never began its temporary")


def pictures(folder: Path, n: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((10, 10, 3), i, dtype=np.uint8)).save(folder / f"{i}.png")
    return [folder / f"{i}.png" for i in range(n)]


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_run(tmp_path, capsys):
    paths, cache = pictures(tmp_path / "images"), tmp_path / "cache"
    process, temporary = start_writer(cache, paths)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert temporary.exists() and f"~{process.pid}~" in temporary.name
    assert temporary.stat().st_blocks * 512 >= 40 * 3 * 16 * 16  # reserved whole
    pixels = load_images(paths, 16, cache)
    assert pixels.shape == (40, 3, 16, 16) and not temporary.exists()
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []
    err = capsys.readouterr().err
    assert f"removed the image cache temporary '{temporary}'" in err and f"process {process.pid}" in err


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
def test_a_writer_stopped_by_sigterm_or_ctrl_c_removes_its_own_temporary(tmp_path, sent):
    paths, cache = pictures(tmp_path / "images"), tmp_path / "cache"
    process, temporary = start_writer(cache, paths)
    process.send_signal(sent)
    process.wait(timeout=30)
    assert process.returncode != 0
    if sent == signal.SIGTERM:
        assert process.returncode == -signal.SIGTERM  # it still ends as SIGTERM ends a process
    assert not temporary.exists()
    assert not cache.exists()  # nor the folder the writer made


def test_temporaries_of_live_writers_other_hosts_and_things_not_ours_are_left_alone(tmp_path):
    paths, cache = pictures(tmp_path / "images", n=3), tmp_path / "cache"
    cache.mkdir()
    host = this_host()
    live = cache / f".images-0123~{host}~{os.getppid()}~abc.npy.tmp"
    elsewhere = cache / f".images-0123~another-host~{2**22 + 7}~abc.npy.tmp"
    folder = cache / f".images-0123~{host}~{dead_pid()}~dir.npy.tmp"
    unrelated = cache / "notes.tmp"
    for path in (live, elsewhere, unrelated):
        path.write_bytes(b"x")
    folder.mkdir()
    legacy_fresh = cache / ".images-0123abcd-3x16-k2j4_x9q.npy.tmp"
    legacy_old = cache / ".images-4567abcd-3x16-zz81abc2.npy.tmp"
    legacy_fresh.write_bytes(b"x")
    legacy_old.write_bytes(b"x")
    old = time.time() - 2 * 24 * 3600
    os.utime(legacy_old, (old, old))
    dead = cache / f".images-0123~{host}~{dead_pid()}~abc.npy.tmp"
    dead.write_bytes(b"x")
    open_images(paths, 16, cache)
    assert live.exists() and elsewhere.exists() and unrelated.exists() and folder.is_dir()
    assert legacy_fresh.exists() and not legacy_old.exists() and not dead.exists()


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return process.pid
    except OSError as exc:  # pragma: no cover - reused at once by another user's process
        assert exc.errno == errno.EPERM
    pytest.skip("the ended process's id was reused at once")
