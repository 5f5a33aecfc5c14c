"""A leaderboard built from one store is never replaced by one from another store unless
asked: `debiasbench leaderboard` over the published leaderboard with a demo's store is
one line and leaves every file as it was; `--force` replaces it; the same store again
(or one holding more runs) updates it."""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from debiasbench.cli import app
from test_leaderboard import log_run


def a_store(folder: Path, seeds: int) -> str:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("debiasbench")
    for seed in range(seeds):
        log_run(client, experiment, "rrr", seed, 1.0, val=0.9, test=0.6 + 0.01 * seed)
    return uri


def publish(uri: str, out: Path, *extra: str):
    return CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--out", str(out), *extra])


@pytest.fixture
def published(tmp_path):
    (tmp_path / "a").mkdir()
    uri = a_store(tmp_path / "a", seeds=3)
    out = tmp_path / "board"
    assert publish(uri, out).exit_code == 0
    return uri, out


def test_a_leaderboard_from_another_store_is_refused_in_one_line_and_nothing_changes(published, tmp_path):
    _, out = published
    (tmp_path / "demo").mkdir()
    demo = a_store(tmp_path / "demo", seeds=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = publish(demo, out)
    assert result.exit_code == 2
    message = result.output.strip()
    assert "\n" not in message and "built from another store" in message and "3 of its 3 runs" in message
    assert "--force" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_force_replaces_a_leaderboard_from_another_store(published, tmp_path):
    _, out = published
    (tmp_path / "demo").mkdir()
    demo = a_store(tmp_path / "demo", seeds=1)
    result = publish(demo, out, "--force")
    assert result.exit_code == 0, result.output
    assert len((out / "results.csv").read_text().strip().splitlines()) == 2  # a header and the demo's run


def test_the_same_store_updates_its_own_leaderboard(published):
    uri, out = published
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("debiasbench")
    assert experiment is not None
    log_run(client, experiment.experiment_id, "rrr", 3, 1.0, val=0.9, test=0.7)
    result = publish(uri, out)
    assert result.exit_code == 0, result.output
    assert len((out / "results.csv").read_text().strip().splitlines()) == 5


def test_a_folder_with_a_results_csv_that_is_not_a_leaderboards_is_refused(published, tmp_path):
    uri, out = published
    (out / "results.csv").write_text("a,b\n1,2\n")
    result = publish(uri, out)
    assert result.exit_code == 2 and "not a leaderboard's" in result.output
