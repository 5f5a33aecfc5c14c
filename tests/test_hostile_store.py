"""A tracking store that is not what it should be: a server that never answers, a file of
another application or of an older MLflow, an in-memory database, URI options that would
be ignored, experiment names that leave the store, credentials in the URI, a full disk.
Each is one line (exit code 2) that names the store, and the store is left as it was."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from deadlines import deadline
from servers import start_mlflow_server, stop

from debiasbench.cli import main
from debiasbench.core.errors import redact_credentials
from debiasbench.track import store
from debiasbench.track.store import (TIMEOUT_VARIABLE, Tracker, artifact_location, bound_server_calls, call_within,
                                     experiment_folder)

TINY_RUN = ["run", "-d", "synthetic_artifacts", "--set", "dataset_params.n_train=40", "--set",
            "dataset_params.n_val=20", "--set", "dataset_params.n_test=20", "--set", "epochs=1", "--no-progress"]
#: MLflow's variables that ``bound_server_calls`` sets in the process it runs in.
MLFLOW_HTTP_VARIABLES = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                         "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's folder as working directory, no store named by the environment, and
    MLflow's HTTP variables restored after the test (the commands set them)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in (*MLFLOW_HTTP_VARIABLES, TIMEOUT_VARIABLE):
        monkeypatch.setenv(name, "")  # recorded as unset, so removed again after the test
        monkeypatch.delenv(name)
    return tmp_path


def command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str, float]:
    """Run ``debiasbench argv`` in this process: exit code, stderr lines, stdout, seconds."""
    began = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    seconds = time.perf_counter() - began
    captured = capsys.readouterr()
    code = exited.value.code
    return code if isinstance(code, int) else 1, captured.err.strip().splitlines(), captured.out, seconds


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one error line of a command that must exit with code 2 and no traceback."""
    code, err, _, _ = command(capsys, *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --------------------------------------------------------------------------- a silent server

@contextlib.contextmanager
def socket_server(serve: Callable[[socket.socket], None] | None = None) -> Iterator[int]:
    """A port on loopback whose connections are accepted and handed to ``serve`` in a
    thread of their own (never answered where it is None); the port. Closed on exit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection = listener.accept()[0]
            except OSError:
                return
            accepted.append(connection)
            if serve is not None:
                threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port where connections are accepted and never answered; the port."""
    with socket_server() as port:
        yield port


def test_a_server_that_accepts_and_never_answers_is_one_line_within_the_bound(here, capsys, monkeypatch,
                                                                                silent_server):
    monkeypatch.setenv(TIMEOUT_VARIABLE, "3")
    uri = f"http://alice:s3cret-pw@127.0.0.1:{silent_server}"
    for argv in (TINY_RUN, ["leaderboard", "--out", str(here / "board")]):
        code, err, _, seconds = command(capsys, *argv, "--tracking-uri", uri)
        assert code == 2 and len(err) == 1, err
        assert err[0] == (f"error: tracking server http://127.0.0.1:{silent_server} did not answer within 3 s; "
                          f"{TIMEOUT_VARIABLE} (now 3) sets how many seconds a call may wait."), err
        assert seconds < 20  # MLflow's own client waits 120 s a request, 8 times
    assert not (here / "board").exists() and not (here / "mlflow.db").exists()


@pytest.fixture
def trickling_server() -> Iterator[int]:
    """A port where every request gets a status line, then a byte every 0.2 s, never an
    end: each read a client makes succeeds, so a read timeout never fires; the port."""

    def trickle(connection: socket.socket) -> None:
        try:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while True:
                connection.sendall(b"X")
                time.sleep(0.2)
        except OSError:
            return

    with socket_server(trickle) as port:
        yield port


def test_a_server_that_trickles_bytes_forever_is_given_up_within_the_bound(here, capsys, monkeypatch,
                                                                           trickling_server):
    monkeypatch.setenv(TIMEOUT_VARIABLE, "1")
    monkeypatch.setattr(store, "CALL_DEADLINE_MARGIN", 1.0)  # a call ends 2 s after it began
    uri = f"http://127.0.0.1:{trickling_server}"
    (here / "sweep.yaml").write_text("methods: [vanilla]\ndatasets: [synthetic_artifacts]\nseeds: [0]\n")
    for argv in (TINY_RUN, ["leaderboard", "--out", str(here / "board")], ["sweep", "sweep.yaml", "--dry-run"]):
        code, err, _, seconds = command(capsys, *argv, "--tracking-uri", uri)
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: tracking server http://127.0.0.1:{trickling_server} did not answer "
                                 "within "), err
        assert seconds < 12  # each read succeeds: only the call's deadline ends it
    assert not (here / "board").exists() and not (here / "mlflow.db").exists()


def test_a_call_given_up_raises_at_its_deadline_and_a_call_within_it_returns_or_raises_as_it_would():
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out after 0.5 s"):
        call_within(0.5, time.sleep, 30)
    assert time.monotonic() - began < 5
    assert call_within(5, sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        call_within(5, lambda: 1 / 0)


def test_the_bound_is_checked_and_never_overrides_what_the_user_set_for_mlflow(here, capsys, monkeypatch):
    monkeypatch.setenv(TIMEOUT_VARIABLE, "soon")
    line = refused(capsys, *TINY_RUN)
    assert line == f"error: {TIMEOUT_VARIABLE}: expected seconds from 1 to 86400, got 'soon'."
    monkeypatch.setenv(TIMEOUT_VARIABLE, "30")
    assert bound_server_calls() == 30
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "9" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    monkeypatch.setenv(TIMEOUT_VARIABLE, "6")
    bound_server_calls()  # a later bound replaces the one set here
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    bound_server_calls()  # what the user set stays
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"


# --------------------------------------------------------------------------- credentials

def test_credentials_in_a_uri_are_redacted_wherever_it_is_shown():
    text = "API request to http://bob:pa55@mlflow.example:5000/api/2.0 failed; see https://token@h/x"
    assert redact_credentials(text) == "API request to http://***@mlflow.example:5000/api/2.0 failed; see https://***@h/x"
    assert redact_credentials("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"


@pytest.fixture
def refusing_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """An HTTP server answering every request with the status ``request.param`` and an
    MLflow error body; the port."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    status = request.param
    code = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}.get(status, "INTERNAL_ERROR")

    class Refusing(BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = f'{{"error_code": "{code}", "message": "{code.lower()} by the test server"}}'.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("refusing_server,expected", [
    (401, "refused the request (UNAUTHENTICATED: unauthenticated by the test server); check the user name and "
          "password"),
    (403, "refused the request (PERMISSION_DENIED: permission_denied by the test server); check the user name"),
    (500, "answered with HTTP 500 errors to every attempt for"),
], indirect=["refusing_server"])
def test_a_server_that_refuses_or_fails_every_request_is_one_line_without_the_credentials(
        here, capsys, monkeypatch, refusing_server, expected):
    monkeypatch.setenv(TIMEOUT_VARIABLE, "3")  # 500s are retried: three attempts, no pause
    uri = f"http://alice:s3cret-pw@127.0.0.1:{refusing_server}"
    for line in _refused_by_every_command(here, capsys, uri):  # sweep --dry-run and ui: tracebacks before
        assert line.startswith(f"error: tracking server http://127.0.0.1:{refusing_server} {expected}"), line
        assert "s3cret" not in line and "alice" not in line
    assert files_in(here) == {"s.yaml"}


@pytest.mark.slow  # an MLflow server: about 15 s on 2 cores
def test_a_run_and_a_leaderboard_on_a_server_with_credentials_never_show_them(here, capsys, tmp_path):
    server, port = start_mlflow_server(tmp_path)
    uri = f"http://alice:s3cret-pw@127.0.0.1:{port}"
    try:
        code, err, out, _ = command(capsys, *TINY_RUN, "--tracking-uri", uri)
        assert code == 0, err
        assert f"logged to http://***@127.0.0.1:{port}" in out
        code, err, out, _ = command(capsys, "leaderboard", "--tracking-uri", uri, "--out", str(here / "board"))
        assert code == 0, err
        assert "s3cret" not in out + "\n".join(err)
        for page in (here / "board").iterdir():
            assert "s3cret" not in page.read_text(errors="replace"), page
        code, err, _, _ = command(capsys, *TINY_RUN, "--set", "lr=-1", "--tracking-uri", uri)
        assert code == 2 and "s3cret" not in "\n".join(err)
    finally:
        stop(server)


# --------------------------------------------------------------------------- what the file is

def _make_store(uri: str) -> None:
    """An MLflow store of the installed MLflow, made in another process (no connection left
    open here)."""
    subprocess.run([sys.executable, "-c", "import sys; from debiasbench.track.store import Tracker; "
                    "Tracker(sys.argv[1], 'tests').experiment_id", uri], check=True)


def _make_old_store(path: Path, revisions_back: int = 10) -> str:
    """An MLflow store as an older MLflow made it: MLflow's initial tables migrated up to the
    revision ``revisions_back`` migrations before the installed head, not further; that
    revision."""
    import sqlalchemy
    from alembic import command as alembic
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base

    uri = f"sqlite:///{path}"
    config = _get_alembic_config(uri)
    revision = [r.revision for r in ScriptDirectory.from_config(config).walk_revisions()][revisions_back]
    engine = sqlalchemy.create_engine(uri)
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            alembic.upgrade(config, revision)
    finally:
        engine.dispose()
    return revision


def _refused_by_every_command(here: Path, capsys: pytest.CaptureFixture[str], uri: str) -> list[str]:
    lines = [refused(capsys, *TINY_RUN, "--tracking-uri", uri),
             refused(capsys, "leaderboard", "--tracking-uri", uri, "--out", str(here / "board"))]
    (here / "s.yaml").write_text("methods: [vanilla]\ndatasets: [synthetic_artifacts]\n")
    lines.append(refused(capsys, "sweep", "s.yaml", "--dry-run", "--tracking-uri", uri))
    lines.append(refused(capsys, "ui", "--tracking-uri", uri))
    assert not (here / "board").exists() and not (here / ".debiasbench").exists()
    return lines


@pytest.mark.parametrize("schema,listed", [
    (["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)", "INSERT INTO notes (text) VALUES ('mine')"],
     "tables notes"),
    # in WAL mode: a read-only connection would leave app.db-wal and app.db-shm beside it
    (["PRAGMA journal_mode=WAL", "CREATE TABLE notes (text TEXT)", "INSERT INTO notes VALUES ('mine')"],
     "tables notes"),
    (["CREATE VIEW answer AS SELECT 42 AS value"], "view answer"),  # no table, yet not empty
])
def test_a_database_of_another_application_is_refused_and_left_byte_for_byte(here, capsys, schema, listed):
    path = here / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        for statement in schema:
            db.execute(statement)
        db.commit()
    before, listing = digest(path), files_in(here)
    for line in _refused_by_every_command(here, capsys, f"sqlite:///{path}"):
        assert line == (f"error: tracking store 'sqlite:///{path}': '{path}' is a database of another application "
                        f"({listed}), not an MLflow store; it is left unchanged: name a new file or an MLflow "
                        "store."), line
    assert digest(path) == before and files_in(here) == listing | {"s.yaml"}


def test_a_store_creation_killed_outright_leaves_no_temporary_after_the_next_run(here):
    store = here / "store.db"
    uri = f"sqlite:///{store}"
    creator = subprocess.Popen([sys.executable, "-c", "import sys; from debiasbench.track.store import Tracker; "
                                "Tracker(sys.argv[1], 'tests').experiment_id", uri])
    left: list[Path] = []
    for _ in range(1200):  # the schema takes a second or more to build
        left = list(here.glob(".store.db.*.creating"))
        if left or creator.poll() is not None:
            break
        time.sleep(0.01)
    creator.kill()
    creator.wait()
    if not left:
        pytest.skip("the creator finished before it could be killed")
    assert not store.exists() and all(p.exists() for p in left)
    _make_store(uri)  # the next process to open the store
    assert store.is_file() and list(here.glob(".store.db.*.creating")) == []
    stale = here / ".store.db.4242.0badcafe.creating"  # beside a store that exists by now
    stale.write_bytes(b"SQLite format 3\0")
    _make_store(uri)
    assert not stale.exists()


def test_a_run_leaves_only_its_store_and_artifacts_beside_it(here):
    """The creation lock (``<store>.lock``) is removed by the process that made the store."""
    done = subprocess.run([sys.executable, "-m", "debiasbench.cli", *TINY_RUN, "--tracking-uri",
                           f"sqlite:///{here / 'mlflow.db'}"], cwd=here, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(here)) == ["mlflow.db", "mlruns"]


def test_a_file_that_is_not_a_database_is_refused_and_left_byte_for_byte(here, capsys):
    path = here / "notes.txt"
    path.write_text("not a database, but some of my notes\n" * 100)
    before = digest(path)
    for line in _refused_by_every_command(here, capsys, f"sqlite:///{path}"):
        assert f"'{path}' is not an sqlite database" in line, line
    assert digest(path) == before


def test_a_store_of_an_older_mlflow_is_refused_naming_the_upgrade_and_upgrades_only_when_asked(here, capsys):
    path = here / "old.db"
    revision = _make_old_store(path)
    uri = f"sqlite:///{path}"
    before = digest(path)
    for line in _refused_by_every_command(here, capsys, uri):
        assert f"has an older MLflow schema (revision {revision};" in line, line
        assert line.endswith(f"then run `mlflow db upgrade {uri}`."), line
    assert digest(path) == before  # not migrated behind the user's back
    subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri], check=True, capture_output=True)
    assert Tracker(uri, "tests").search() == []  # upgraded when asked: a store like any other


def test_a_current_store_marked_with_an_older_schema_is_refused_by_the_leaderboard_too(here, capsys):
    """MLflow's tables all there, the schema revision older: MLflow itself refuses it with
    a traceback (what the leaderboard printed)."""
    path = here / "marked.db"
    _make_store(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '89d3d66ed43f'")
    db.close()
    before = digest(path)
    for line in _refused_by_every_command(here, capsys, f"sqlite:///{path}"):
        assert "has an older MLflow schema (revision 89d3d66ed43f;" in line and "mlflow db upgrade" in line, line
    assert digest(path) == before


def test_a_store_with_a_schema_this_mlflow_does_not_know_is_refused(here, capsys):
    path = here / "newer.db"
    _make_store(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    db.close()
    line = refused(capsys, *TINY_RUN, "--tracking-uri", f"sqlite:///{path}")
    assert "has MLflow schema 'ffffffffffff', which the installed MLflow" in line


# --------------------------------------------------------------------------- URIs

@pytest.mark.parametrize("uri,expected", [
    ("sqlite:///:memory:", "is an in-memory database: its runs would be lost when the command ends"),
    ("sqlite://", "is an in-memory database"),
    ("sqlite:///file:x.db?mode=memory&uri=true", "is an in-memory database"),
    ("sqlite:///store.db?mode=ro", "option 'mode' of the URI is not applied to an sqlite store (only timeout is)"),
    ("sqlite:///store.db?cache=shared&timeout=5", "option 'cache' of the URI is not applied"),
    ("http://127.0.0.1:1/?token=abc", "a server address takes no query or fragment"),
    ("sqlite:///store.db?timeout=soon", "option 'timeout' expects seconds (a number > 0), got 'soon'"),
    ("sqlite:///store.db?timeout=5&timeout=6", "option 'timeout' is given 2 times"),
    ("sqlite:///store.db#latest", "an sqlite URI takes no fragment"),  # was a file 'store.db#latest'
])
def test_uris_whose_runs_would_not_persist_or_whose_options_are_ignored_are_refused(here, capsys, uri, expected):
    for line in _refused_by_every_command(here, capsys, uri):
        assert expected in line, line
    assert files_in(here) == {"s.yaml"}  # no store (no file named ':memory:' either)


@pytest.mark.parametrize("kind", ["pipe", "device", "folder"])
def test_a_store_path_that_is_not_a_regular_file_is_refused_for_what_it_is(here, capsys, kind):
    path = {"pipe": here / "store.db", "device": Path("/dev/null"), "folder": here / "store.db"}[kind]
    if kind == "pipe":
        os.mkfifo(path)  # sqlite opened it and waited for a writer for good
    elif kind == "folder":
        path.mkdir()
    what = {"pipe": "a named pipe (FIFO)", "device": "a character device", "folder": "a folder"}[kind]
    with deadline(60, here / "store.db"):
        for line in _refused_by_every_command(here, capsys, f"sqlite:///{path}"):
            assert line.endswith(f": '{path}' is {what}, not an sqlite file."), line
    assert files_in(here) == {"s.yaml", "store.db"} - ({"store.db"} if kind == "device" else set())


@pytest.mark.parametrize("kind", ["missing target", "loop"])
def test_a_store_path_that_is_a_link_to_no_file_is_refused_and_the_link_kept(here, capsys, kind):
    """A symbolic link to a file not made yet, or a loop of links: the store was created in
    its place, replacing the link with a regular file."""
    path = here / "store.db"
    target = str(here / "elsewhere.db") if kind == "missing target" else str(here / "other.db")
    path.symlink_to(target)
    if kind == "loop":
        (here / "other.db").symlink_to(path)
    for line in _refused_by_every_command(here, capsys, f"sqlite:///{path}"):
        assert f": '{path}' is a symbolic link to '{target}', which leads to no file" in line, line
    assert path.is_symlink() and os.readlink(path) == target
    assert files_in(here) == {"s.yaml", "store.db"} | ({"other.db"} if kind == "loop" else set())


def test_an_sqlite_uri_with_an_option_it_applies_is_accepted(here):
    tracker = Tracker(f"sqlite:///{here / 'store.db'}?timeout=20", "tests")
    assert tracker.search() == [] and (here / "store.db").is_file()


# --------------------------------------------------------------------------- experiment names

def test_experiment_names_get_folders_of_their_own_inside_mlruns(here):
    names = ["..", ".", "a/b", "a b", "a_b", "a\\b", "../../etc", ".hidden", "café", "runs-2026.v1"]
    folders = [experiment_folder(name) for name in names]
    assert len(set(folders)) == len(names)  # no two names share a folder
    mlruns = (here / "mlruns").resolve()
    for name in names:
        location = Path(str(artifact_location("sqlite:///mlflow.db", name)).removeprefix("file://"))
        assert location.parent == mlruns and location.name not in (".", ".."), (name, location)
        assert "/" not in experiment_folder(name) and not experiment_folder(name).startswith(".")
    assert experiment_folder("a_b") == "a_b" and experiment_folder("runs-2026.v1") == "runs-2026.v1"


def test_a_run_in_experiment_dot_dot_writes_its_artifacts_inside_mlruns(here, capsys):
    (here / "store").mkdir()
    code, err, out, _ = command(capsys, *TINY_RUN, "--set", "experiment=..",
                                "--tracking-uri", f"sqlite:///{here / 'store' / 'mlflow.db'}")
    assert code == 0, err
    outside = {p for p in files_in(here / "store") if not p.startswith(("mlruns", "mlflow.db"))}
    assert outside == set() and {p.split("/")[0] for p in files_in(here)} <= {"store", ".debiasbench"}
    assert any(p.endswith("config.yaml") for p in files_in(here / "store" / "mlruns"))


# --------------------------------------------------------------------------- a refused base_run

def test_an_unknown_base_run_is_refused_before_anything_is_written(here, capsys):
    argv = ["run", "-m", "rrclarc", "-d", "synthetic_artifacts", "--set", "base_run=0123456789abcdef"]
    line = refused(capsys, *argv, "--tracking-uri", f"sqlite:///{here / 'mlflow.db'}")
    assert line == (f"error: base_run '0123456789abcdef' not found: tracking store 'sqlite:///{here / 'mlflow.db'}' "
                    "does not exist yet.")
    assert files_in(here) == set()  # no store, no claim
    uri = f"sqlite:///{here / 'existing.db'}"
    _make_store(uri)
    before, listing = digest(here / "existing.db"), files_in(here)
    line = refused(capsys, *argv, "--tracking-uri", uri)
    assert line == f"error: base_run '0123456789abcdef' not found in tracking store '{uri}'."
    assert digest(here / "existing.db") == before and files_in(here) == listing


# --------------------------------------------------------------------------- a full disk

#: full at the run's first write; while logging its model (the weights cut short: 700, 500)
@pytest.mark.parametrize("free_kib", [16, 500, 700])
def test_a_full_disk_under_the_store_is_one_line_naming_it(here, capsys, tmpfs, free_kib):
    disk = tmpfs("2m")
    uri = f"sqlite:///{disk.path}/mlflow.db"
    _make_store(uri)
    used = sum(p.stat().st_size for p in disk.path.iterdir())
    (disk.path / "filler").write_bytes(b"\0" * max(0, 2 * 1024 * 1024 - used - free_kib * 1024))
    code, err, _, _ = command(capsys, *TINY_RUN, "--set", f"checkpoint_dir={here / 'checkpoints'}",
                              "--tracking-uri", uri)
    assert code == 2 and len(err) == 1, err[:20]
    assert err[0].startswith(f"error: the disk of tracking store '{disk.path}/mlflow.db' is full"), err
    assert err[0].endswith(f"free space in '{disk.path}' or choose another --tracking-uri."), err
    # the run is recorded FAILED, not left RUNNING: a write cut short by the full disk
    # (the MLflow model's weights) is removed, so the failure has room to be written
    db = sqlite3.connect(disk.path / "mlflow.db")
    try:
        ended = db.execute("SELECT r.status, t.value FROM runs r LEFT JOIN tags t ON t.run_uuid = r.run_uuid "
                           "AND t.key = 'debiasbench.failure'").fetchall()
    finally:
        db.close()
    assert all(status == "FAILED" and reason.startswith("StoreFull: ") for status, reason in ended), ended


def test_the_schema_read_from_the_migration_files_is_alembics():
    """``mlflow_schema`` reads revision lines instead of importing every migration; it
    gives the head and the revisions alembic gives."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision

    from debiasbench.track.store import mlflow_schema

    script = ScriptDirectory.from_config(_get_alembic_config(""))
    assert mlflow_schema() == (_get_latest_schema_revision(), frozenset(r.revision for r in script.walk_revisions()))
