"""Writing a leaderboard: its files side by side, renamed into place only once all
are written, so an interrupted command never leaves half a leaderboard: interrupted
before the renames it leaves the folder as it was (``write_leaderboard``); an interrupt
during them waits for the last one.

Apart from ``leaderboard`` (tables, ranks, Markdown) and ``page`` (the HTML page) so
that neither of those two needs the other.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from debiasbench.core import interrupts
from debiasbench.core.errors import Interrupted, UserError, redact_credentials, sentence
from debiasbench.core.atomic import (TAGGED_TEMPORARY, left_by_dead_writer, make_folders, remove_empty_folders,
                                     writer_tag)
from debiasbench.core.files import MiB, FileRefused, read_regular_bytes
from debiasbench.report.leaderboard import SWEEP_FILE_TAG, markdown, public_frame, public_text
from debiasbench.report.page import render_page


def check_output_folder(out: Path) -> None:
    """One line at once, before any work, for an ``--out`` that cannot take the files: a
    path that is a file, or a folder (or the nearest existing parent of a new one) this
    process cannot write, a read-only filesystem included."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: '{out}' is a file, not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out: '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out: folder '{existing}' is not writable (a read-only filesystem or permissions)")


#: Leaderboard files staged under names of ours (``.index.html.<random>``) before names
#: carried their writer; removed once this old (seconds): a write takes seconds.
LEGACY_STAGING_AGE = 24 * 3600


def remove_stale_staging(out: Path, names: tuple[str, ...]) -> list[Path]:
    """Remove the staged copies of leaderboard files ``names`` in ``out`` that a writer
    killed outright (``kill -9``) left: those named with ``writer_tag`` by a process of
    this host that no longer runs, and unnamed ones of an older version left for a day.
    A live writer's, another host's and anything that is not a plain file are left alone.
    The paths removed, each with a note on stderr."""
    import sys
    import time

    try:
        entries = list(os.scandir(out))
    except OSError:
        return []
    legacy = re.compile(r"^\.(" + "|".join(re.escape(n) for n in names) + r")\.[a-z0-9_]{8}$")
    removed = []
    for entry in entries:
        tagged = TAGGED_TEMPORARY.match(entry.name)
        pid = left_by_dead_writer(entry.name) if tagged and tagged["name"] in names else None
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if pid is not None:
                whose = f"process {pid}, which is no longer running"
            elif legacy.match(entry.name) and time.time() - entry.stat(follow_symlinks=False).st_mtime \
                    > LEGACY_STAGING_AGE:
                whose = "a writer that stopped more than a day ago"
            else:
                continue
            os.unlink(entry.path)
        except OSError:  # removed meanwhile, or not ours to remove: left
            continue
        print(sentence(f"removed '{entry.path}', a leaderboard file staged by {whose}"), file=sys.stderr)
        removed.append(Path(entry.path))
    return removed


#: The file of a leaderboard that says which store, experiments and sweep files it was built from.
SOURCE_FILE = "source.json"
#: ``source.json`` is a few lines; anything larger is not one.
SOURCE_LIMIT = 1 * MiB


def default_out(uri: str) -> Path:
    """Where ``debiasbench leaderboard`` writes without ``--out``: ``<store>-leaderboard``
    in the working directory, ``<store>`` being the store's file name without its suffix
    (``mlflow-leaderboard`` for ``sqlite:///mlflow.db``) or a server's host and port. Never
    the published ``leaderboard/``, which is written only when named."""
    parts = urlsplit(uri)
    if "://" not in uri:
        name = Path(uri).stem
    elif parts.scheme in ("sqlite", "file") or not parts.hostname:
        name = Path(parts.path.split("?")[0]).stem
    else:
        try:
            port = parts.port
        except ValueError:
            port = None
        name = parts.hostname + (f"-{port}" if port else "")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "store"
    return Path(f"{name}-leaderboard")


def leaderboard_source(runs: pd.DataFrame, uri: str, experiments: list[dict[str, str]],
                       cwd: Path | None = None) -> dict[str, Any]:
    """What ``source.json`` records: the tracking store's URI (credentials redacted, a file
    path as the published files show paths: ``public_text``), the experiments the runs came
    from (name, id, creation time: two stores never share those) and the sweep files that
    made the runs."""
    sweeps = runs.get(f"tags.{SWEEP_FILE_TAG}", pd.Series(dtype=object)).dropna()
    return {
        "tracking_store": public_text(redact_credentials(uri), cwd),
        "experiments": sorted((dict(e) for e in experiments), key=lambda e: (e["name"], e["id"])),
        "sweep_files": sorted({str(public_text(str(s), cwd)) for s in sweeps}),
    }


def _experiment_keys(source: dict[str, Any]) -> set[tuple[str, str]]:
    return {(str(e.get("id")), str(e.get("created"))) for e in source.get("experiments") or []
            if isinstance(e, dict)}


def describe_source(source: dict[str, Any]) -> str:
    """A source on one line: ``sqlite:///mlflow.db (experiment debiasbench of 2026-12-06
    13:28 UTC; sweep files benchmarks/quick.yaml)``."""
    experiments = [e for e in source.get("experiments") or [] if isinstance(e, dict)]
    named = ", ".join(f"{e.get('name')}" + (f" of {str(e['created'])[:16].replace('T', ' ')} UTC"
                                             if e.get("created") else "") for e in experiments)
    parts = [f"experiment{'s' if len(experiments) != 1 else ''} {named or 'none'}"]
    sweeps = [str(s) for s in source.get("sweep_files") or []]
    if sweeps:
        parts.append(f"sweep file{'s' if len(sweeps) != 1 else ''} {', '.join(sweeps)}")
    return f"{source.get('tracking_store') or 'an unnamed store'} ({'; '.join(parts)})"


def read_source(out: Path) -> dict[str, Any] | None:
    """The ``source.json`` of the leaderboard in ``out``; None where there is none (a
    leaderboard written before leaderboards recorded their source, or no leaderboard)."""
    path = out / SOURCE_FILE
    if not path.exists():
        return None
    try:
        source = json.loads(read_regular_bytes(path, "--out: source.json", SOURCE_LIMIT))
    except (FileRefused, ValueError):
        source = None
    if not isinstance(source, dict) or not isinstance(source.get("experiments"), list):
        raise UserError(f"--out: '{out}' holds a {SOURCE_FILE} that is not a leaderboard's; pass --force to "
                        "replace it, or choose another --out")
    return source


def check_same_source(out: Path, runs: pd.DataFrame, source: dict[str, Any], force: bool = False) -> None:
    """Refuse, in one line, to replace a leaderboard built from another store.

    A leaderboard's ``source.json`` names the store, experiments and sweep files it was
    built from: where ``out`` holds one built from experiments this store does not hold (a
    demo's store over the published leaderboard), the line names both sources. An older
    leaderboard without ``source.json`` is judged by its ``results.csv``, which lists every
    run it was built from (``run_id``): runs that are not among ``runs`` mean another store
    (or another selection of experiments). The same store, with more runs or experiments,
    updates its own leaderboard; ``force`` replaces any.
    """
    if force:
        return
    recorded = read_source(out)
    if recorded is not None:
        if not _experiment_keys(recorded) or not _experiment_keys(recorded) <= _experiment_keys(source):
            raise UserError(f"--out: '{out}' holds a leaderboard built from {describe_source(recorded)}, not from "
                            f"this store, {describe_source(source)}; pass --force to replace it, or choose "
                            "another --out")
        return
    existing = out / "results.csv"
    if not existing.is_file():
        return
    try:
        built_from = set(pd.read_csv(existing, usecols=["run_id"], dtype=str)["run_id"].dropna())
    except (ValueError, OSError, pd.errors.ParserError):
        raise UserError(f"--out: '{out}' holds a results.csv that is not a leaderboard's; pass --force to "
                        "replace it, or choose another --out") from None
    missing = built_from - set(runs["run_id"].astype(str))
    if missing:
        raise UserError(f"--out: '{out}' holds a leaderboard built from another store: {len(missing)} of its "
                        f"{len(built_from)} runs are not in {source.get('tracking_store')}; pass --force to "
                        "replace it, or choose another --out")


def written_interrupt(out: Path) -> Interrupted:
    """What an interrupt after the leaderboard's files were renamed into place says."""
    return Interrupted(f"interrupted; the leaderboard was written to '{out}'")


def write_leaderboard(runs: pd.DataFrame, summary: pd.DataFrame, info: dict[str, str],
                      metrics: tuple[str, ...], out: Path, source: dict[str, Any]) -> list[Path]:
    """The five files under ``out`` (``source.json`` among them: ``leaderboard_source``),
    each renamed into place only once all are written; no machine path in any of them
    (``public_frame``).

    An interrupt (or an error) before the renames removes the temporaries and the folders
    this call created, leaving ``out`` as it was; one during the renames waits for the last
    and is then raised as ``written_interrupt``."""
    runs = public_frame(runs)
    summary = public_frame(summary, ("setting", "hparams"))
    check_output_folder(out)
    texts = {
        "results.csv": runs.to_csv(index=False),
        "summary.csv": summary.to_csv(index=False),
        "README.md": markdown(summary, info, metrics),
        "index.html": render_page(summary, info, metrics),
        SOURCE_FILE: json.dumps(source, indent=2) + "\n",
    }
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []
    try:
        created = make_folders(out)
        remove_stale_staging(out, tuple(texts))
        for name, text in texts.items():
            with interrupts.deferred():  # a temporary made is a temporary known, to be removed
                handle, temp_name = tempfile.mkstemp(prefix=f".{name}{writer_tag()}", suffix=".tmp", dir=out)
                staged.append((Path(temp_name), out / name))
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
    except BaseException as exc:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        remove_empty_folders(created)
        if isinstance(exc, OSError):
            raise UserError(f"--out: cannot write the leaderboard to '{out}' ({exc.strerror or exc})") from None
        raise
    try:
        with interrupts.deferred():
            for temp, final in staged:
                os.chmod(temp, 0o644)
                os.replace(temp, final)
    except KeyboardInterrupt:
        raise written_interrupt(out) from None
    return [final for _, final in staged]
