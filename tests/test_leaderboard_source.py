"""A leaderboard built from one store is never replaced by one from another store unless
asked: its source.json records the store, experiments and sweep files it came from;
`debiasbench leaderboard` over the published leaderboard with a demo's store is one line
naming both and leaves every file as it was (a leaderboard without source.json is judged
by the run ids of its results.csv); `--force` replaces it; the same store again (or one
holding more runs) updates it; without `--out` the files go to a folder named after the
store, never to leaderboard/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import pandas as pd
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.report.publish import SOURCE_FILE, default_out, leaderboard_source
from test_leaderboard import log, log_run


def a_store(folder: Path, seeds: int, experiment_name: str = "debiasbench", sweep: str | None = None) -> str:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    for seed in range(seeds):
        if sweep is None:
            log_run(client, experiment_id, "rrr", seed, 1.0, val=0.9, test=0.6 + 0.01 * seed)
        else:
            log(client, experiment_id, {"method": "rrr", "dataset": "colored_digits", "model": "small_cnn",
                                        "seed": str(seed), "lr": "0.001"},
                {"val_acc": 0.9, "test_acc": 0.6}, f"{experiment_name}-{seed}",
                tags={"debiasbench.sweep_file": sweep, "debiasbench.command": f"debiasbench sweep {sweep}"})
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


def test_a_leaderboard_records_its_store_experiments_and_sweep_files(tmp_path):
    (tmp_path / "a").mkdir()
    uri = a_store(tmp_path / "a", seeds=2, sweep="benchmarks/quick.yaml")
    a_store(tmp_path / "a", seeds=1, experiment_name="more", sweep="benchmarks/quick_mnist.yaml")
    out = tmp_path / "board"
    result = publish(uri, out)
    assert result.exit_code == 0, result.output
    assert SOURCE_FILE in result.output
    source = json.loads((out / SOURCE_FILE).read_text())
    experiments = {e.experiment_id: e for e in MlflowClient(uri).search_experiments()}
    assert [e["name"] for e in source["experiments"]] == ["debiasbench", "more"]
    for recorded in source["experiments"]:
        created = experiments[recorded["id"]].creation_time
        assert recorded["created"].startswith("20") and recorded["created"].endswith("+00:00")
        assert abs(pd.Timestamp(recorded["created"]).value // 10**6 - created) < 1
    assert source["sweep_files"] == ["benchmarks/quick.yaml", "benchmarks/quick_mnist.yaml"]
    assert source["tracking_store"] == "sqlite:///<dir>/mlflow.db"  # no machine path, as in every published file


def test_the_store_is_recorded_without_credentials_or_machine_paths(tmp_path):
    runs = pd.DataFrame({"run_id": ["r"]})
    assert leaderboard_source(runs, "https://alice:s3cret@mlflow.example:5000/base", [])["tracking_store"] == \
        "https://***@mlflow.example:5000/base"
    assert leaderboard_source(runs, f"sqlite:///{tmp_path}/runs/x.db", [], cwd=tmp_path)["tracking_store"] == \
        "sqlite:///runs/x.db"


def test_a_leaderboard_from_another_store_is_refused_in_one_line_naming_both_and_nothing_changes(
        published, tmp_path):
    _, out = published
    (tmp_path / "demo").mkdir()
    demo = a_store(tmp_path / "demo", seeds=1, sweep="benchmarks/demo.yaml")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = publish(demo, out)
    assert result.exit_code == 2
    message = result.output.strip()
    recorded = json.loads(before[SOURCE_FILE])["experiments"][0]["created"][:16].replace("T", " ")
    assert "\n" not in message and "holds a leaderboard built from sqlite:///<dir>/mlflow.db" in message
    assert f"(experiment debiasbench of {recorded} UTC), not from this store" in message
    assert "sweep file benchmarks/demo.yaml" in message and "--force" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_leaderboard_without_source_json_is_judged_by_its_run_ids(published, tmp_path):
    _, out = published
    (out / SOURCE_FILE).unlink()  # as leaderboards were written before they recorded their source
    (tmp_path / "demo").mkdir()
    demo = a_store(tmp_path / "demo", seeds=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = publish(demo, out)
    assert result.exit_code == 2
    message = result.output.strip()
    assert "\n" not in message and "built from another store" in message and "3 of its 3 runs" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_source_json_decides_where_there_is_one_the_same_store_with_runs_deleted_updates_it(published):
    uri, out = published
    client = MlflowClient(uri)
    gone = pd.read_csv(out / "results.csv")["run_id"].iloc[0]
    client.delete_run(gone)  # the run-id check alone would take this for another store
    result = publish(uri, out)
    assert result.exit_code == 0, result.output
    assert gone not in (out / "results.csv").read_text()


def test_another_experiment_of_the_same_store_is_another_source(published):
    uri, out = published
    a_store(Path(uri.removeprefix("sqlite:///")).parent, seeds=1, experiment_name="other")
    result = publish(uri, out, "--experiment", "other")
    assert result.exit_code == 2 and "experiment debiasbench of" in result.output
    assert publish(uri, out).exit_code == 0  # both experiments: a superset of its source


def test_a_source_json_that_is_not_a_leaderboards_is_refused(published):
    uri, out = published
    (out / SOURCE_FILE).write_text("[1, 2]\n")
    result = publish(uri, out)
    assert result.exit_code == 2 and f"holds a {SOURCE_FILE} that is not a leaderboard's" in result.output


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
    uri, _ = published
    out = tmp_path / "other"
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    result = publish(uri, out)
    assert result.exit_code == 2 and "not a leaderboard's" in result.output


def test_without_out_the_files_go_to_a_folder_named_after_the_store_never_the_published_one(here, capsys):
    """The demo's store (mlflow.db in a clone, where leaderboard/ is the published one):
    `debiasbench leaderboard` alone writes mlflow-leaderboard/ and leaves leaderboard/ alone."""
    from debiasbench.cli import main

    a_store(here, seeds=1)
    published = here / "leaderboard"
    published.mkdir()
    (published / "results.csv").write_text("run_id\nsomeone-elses-run\n")
    with pytest.raises(SystemExit) as exited:
        main(["leaderboard"])
    assert exited.value.code == 0, capsys.readouterr().err
    assert (here / "mlflow-leaderboard" / SOURCE_FILE).is_file()
    assert sorted(p.name for p in (here / "mlflow-leaderboard").iterdir()) == [
        "README.md", "index.html", "results.csv", SOURCE_FILE, "summary.csv"]
    assert (published / "results.csv").read_text() == "run_id\nsomeone-elses-run\n"
    assert "mlflow-leaderboard" in capsys.readouterr().out


@pytest.mark.parametrize("uri, folder", [
    ("sqlite:////data/runs/mlflow.db", "mlflow-leaderboard"),
    ("sqlite:////data/runs/demo.db?timeout=30", "demo-leaderboard"),
    ("file:///data/mlruns", "mlruns-leaderboard"),
    ("/data/mlruns", "mlruns-leaderboard"),
    ("http://user:pw@mlflow.example:5000", "mlflow.example-5000-leaderboard"),
    ("https://mlflow.example", "mlflow.example-leaderboard"),
    ("sqlite:////data/leaderboard.db", "leaderboard-leaderboard"),
])
def test_the_default_out_is_named_after_the_store(uri, folder):
    assert default_out(uri) == Path(folder)


def test_files_staged_by_a_killed_leaderboard_are_removed_by_the_next_and_no_one_elses(published):
    """A leaderboard killed outright (``kill -9``) leaves its staged copies
    (``.<file>~<host>~<pid>~<random>.tmp``): the next leaderboard written there removes
    those of writers of this host that are gone, never a live writer's or another host's."""
    import os
    import subprocess
    import sys

    from debiasbench.core.atomic import this_host

    uri, out = published
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = this_host()
    dead = [out / f".index.html~{host}~{gone.pid}~k1ll3d00.tmp", out / f".results.csv~{host}~{gone.pid}~k1ll3d01.tmp"]
    alive = out / f".README.md~{host}~{os.getpid()}~w0rk1ng0.tmp"
    elsewhere = out / f".summary.csv~another-host~{gone.pid}~n0d3b000.tmp"
    foreign = out / f".notes.txt~{host}~{gone.pid}~m1n3x000.tmp"  # not a leaderboard file
    for path in (*dead, alive, elsewhere, foreign):
        path.write_text("half a file")
    done = subprocess.run([sys.executable, "-m", "debiasbench.cli", "leaderboard", "--tracking-uri", uri,
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not any(path.exists() for path in dead)
    assert alive.exists() and elsewhere.exists() and foreign.exists()
    assert f"removed '{dead[0]}', a leaderboard file staged by process {gone.pid}, which is no longer running" \
        in done.stderr
    assert {p.name for p in out.iterdir() if p.name.startswith(".")} == {alive.name, elsewhere.name, foreign.name}
