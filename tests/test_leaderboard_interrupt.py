"""Ctrl-C (or SIGTERM) to `debiasbench leaderboard` says what it left: before its files are
renamed into place, "interrupted; nothing was written" and the --out folder as it was
(no temporaries, no folder it created); during the renames, which wait for the last one,
or while the table is printed, that the leaderboard was written. Nothing to resume: the
line of run and sweep ("run the same command again to resume") is not said."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from debiasbench.cli import main


def _store(uri: str) -> None:
    """Two finished runs of vanilla on colored_digits."""
    from mlflow.tracking import MlflowClient

    from debiasbench.track.store import RUN_KEY_TAG

    client = MlflowClient(uri)
    experiment = client.create_experiment("debiasbench")
    for seed in range(2):
        run = client.create_run(experiment, tags={RUN_KEY_TAG: f"vanilla-{seed}"})
        for name, value in {"method": "vanilla", "dataset": "colored_digits", "model": "small_cnn",
                            "seed": str(seed), "lr": "0.001"}.items():
            client.log_param(run.info.run_id, name, value)
        for metric, number in {"val_acc": 0.7, "test_acc": 0.8 + 0.01 * seed}.items():
            client.log_metric(run.info.run_id, metric, number)
        client.set_terminated(run.info.run_id, "FINISHED")


def _contents(folder: Path) -> dict[str, bytes] | None:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else None


def _leaderboard(capsys: Any, uri: str, out: Path) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exited:
        main(["leaderboard", "--tracking-uri", uri, "--rule", "val_acc", "--out", str(out)])
    return int(exited.value.code or 0), capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("sent,code,prefix", [(signal.SIGINT, 130, ""), (signal.SIGTERM, 143, "SIGTERM: ")])
def test_a_leaderboard_interrupted_while_it_reads_the_store_says_nothing_was_written(tmp_path, sent, code, prefix):
    """A process of its own, stopped while it waits for a tracking server that accepted
    its connection and says nothing."""
    out = tmp_path / "board"
    out.mkdir()
    (out / "README.md").write_text("an earlier leaderboard\n")
    new = tmp_path / "new" / "board"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for folder in (out, new):
        before = _contents(folder)
        with socket.socket() as server:  # one each: a connection the first left queued is not the second's
            server.bind(("127.0.0.1", 0))
            server.listen(8)
            server.settimeout(120)
            process = subprocess.Popen([sys.executable, "-c", "from debiasbench.cli import main; main()",
                                        "leaderboard", "--tracking-uri", f"http://127.0.0.1:{server.getsockname()[1]}",
                                        "--out", str(folder)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                       env=env)
            try:
                connection, _ = server.accept()  # the leaderboard reads the store: its files come after
                with connection:
                    process.send_signal(sent)
                    _, stderr = process.communicate(timeout=60)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert process.returncode == code, stderr
        assert stderr.strip().splitlines()[-1] == f"{prefix}interrupted; nothing was written.", stderr
        assert "resume" not in stderr and "Traceback" not in stderr
        assert _contents(folder) == before
    assert not (tmp_path / "new").exists()


def test_an_interrupt_while_the_files_are_staged_leaves_no_temporary_and_no_folder(tracking_uri, capsys, monkeypatch,
                                                                                  tmp_path):
    _store(tracking_uri)
    real = tempfile.mkstemp
    made: list[str] = []

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        handle, name = real(*args, **kwargs)
        made.append(name)
        if len(made) == 3:  # the third file of five: Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return handle, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    out = tmp_path / "new" / "board"
    code, lines = _leaderboard(capsys, tracking_uri, out)
    assert (code, lines[-1]) == (130, "interrupted; nothing was written.")
    assert len(made) == 3 and not any(Path(name).exists() for name in made)
    assert not (tmp_path / "new").exists()


def test_an_interrupt_during_the_renames_waits_for_the_last_and_says_the_leaderboard_was_written(
        tracking_uri, capsys, monkeypatch, tmp_path):
    _store(tracking_uri)
    out = tmp_path / "board"
    out.mkdir()
    (out / "README.md").write_text("an earlier leaderboard\n")
    real = os.replace
    renamed: list[str] = []

    def replace(source: Any, target: Any) -> None:
        if Path(target).parent == out and not renamed:
            os.kill(os.getpid(), signal.SIGINT)  # handled by the time the next line has run, unless deferred
        real(source, target)
        renamed.append(Path(target).name)

    monkeypatch.setattr(os, "replace", replace)
    code, lines = _leaderboard(capsys, tracking_uri, out)
    assert (code, lines[-1]) == (130, f"interrupted; the leaderboard was written to '{out}'.")
    assert sorted(renamed) == ["README.md", "index.html", "results.csv", "source.json", "summary.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted(renamed)
    assert "an earlier leaderboard" not in (out / "README.md").read_text()


def test_ctrl_c_after_the_leaderboard_is_written_changes_nothing(tmp_path):
    """Once the command has its exit code, a Ctrl-C during the interpreter's shutdown (a
    second or so with torch loaded) is ignored: no traceback from torch's teardown, no
    death by SIGINT, exit 0 and the leaderboard whole. The Ctrl-C is sent by the process
    to itself from an exit handler, which runs in that shutdown."""
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    _store(uri)
    out = tmp_path / "board"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    script = ("import atexit, os, signal, sys\n"
              "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), sys.stderr.write('sent\\n')))\n"
              "from debiasbench.cli import main\n"
              "sys.argv = ['debiasbench', *sys.argv[1:]]\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script, "leaderboard", "--tracking-uri", uri, "--rule", "val_acc",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.endswith("sent\n"), done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr
    assert {"README.md", "index.html", "results.csv", "summary.csv", "source.json"} <= set(os.listdir(out))
