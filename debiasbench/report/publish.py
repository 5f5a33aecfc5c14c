"""Writing a leaderboard: the four files side by side, renamed into place only once all
are written, so an interrupted command never leaves half a leaderboard.

Apart from ``leaderboard`` (tables, ranks, Markdown) and ``page`` (the HTML page) so
that neither of those two needs the other.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from debiasbench.core.errors import UserError
from debiasbench.report.leaderboard import markdown, public_frame
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


def check_same_source(out: Path, runs: pd.DataFrame, store: str, force: bool = False) -> None:
    """Refuse, in one line, to replace a leaderboard built from another store.

    A leaderboard's ``results.csv`` lists every run it was built from (``run_id``, with
    each run's sweep file and command among its tags): where ``out`` holds one with runs
    that are not among ``runs``, it came from another store (or another selection of
    experiments), and writing over it would silently drop them (a demo's store over the
    published leaderboard). ``force`` replaces it anyway.
    """
    existing = out / "results.csv"
    if force or not existing.is_file():
        return
    try:
        built_from = set(pd.read_csv(existing, usecols=["run_id"], dtype=str)["run_id"].dropna())
    except (ValueError, OSError, pd.errors.ParserError):
        raise UserError(f"--out: '{out}' holds a results.csv that is not a leaderboard's; pass --force to "
                        "replace it, or choose another --out") from None
    missing = built_from - set(runs["run_id"].astype(str))
    if missing:
        raise UserError(f"--out: '{out}' holds a leaderboard built from another store: {len(missing)} of its "
                        f"{len(built_from)} runs are not in {store}; pass --force to replace it, or choose "
                        "another --out")


def write_leaderboard(runs: pd.DataFrame, summary: pd.DataFrame, info: dict[str, str],
                      metrics: tuple[str, ...], out: Path) -> list[Path]:
    """The four files under ``out``, each renamed into place only once all are written;
    no machine path in any of them (``public_frame``)."""
    runs = public_frame(runs)
    summary = public_frame(summary, ("setting", "hparams"))
    check_output_folder(out)
    texts = {
        "results.csv": runs.to_csv(index=False),
        "summary.csv": summary.to_csv(index=False),
        "README.md": markdown(summary, info, metrics),
        "index.html": render_page(summary, info, metrics),
    }
    staged: list[tuple[Path, Path]] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            handle, temp_name = tempfile.mkstemp(prefix=f".{name}.", dir=out)
            staged.append((Path(temp_name), out / name))
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
    except OSError as exc:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise UserError(f"--out: cannot write the leaderboard to '{out}' ({exc.strerror or exc})") from None
    except BaseException:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise
    for temp, final in staged:
        os.chmod(temp, 0o644)
        os.replace(temp, final)
    return [final for _, final in staged]
