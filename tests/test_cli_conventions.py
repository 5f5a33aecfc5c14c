"""The command line's conventions: a version, help that shows defaults and readable value
types (none for flags) in paragraphs fitted to the terminal, error and informational lines
that end as sentences, a second `run` of a finished configuration that says so instead of
training it again, and plugin listings that name each plugin once."""
from __future__ import annotations

import re
from importlib.metadata import version

from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.contract.config import RUN_KEYS
from debiasbench.contract.method import Method
from debiasbench.core.registry import METHODS
from debiasbench.report.tables import plugin_listing

TINY = ["--dataset", "synthetic_artifacts", "--set", "dataset_params.n_train=100", "--set", "dataset_params.n_val=40",
        "--set", "dataset_params.n_test=40", "--set", "dataset_params.image_size=16",
        "--set", "dataset_params.patch_size=3", "--set", "epochs=1", "--set", "device=cpu",
        "--set", "log_model=false"]


def logged_run_id(output: str) -> str:
    found = re.search(r"run (\w+) logged to", output)
    assert found, output
    return found.group(1)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "160"})


def test_version_prints_the_installed_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"debiasbench {version('debiasbench')}"


def test_run_help_shows_the_defaults_and_readable_value_types():
    text = invoke("run", "--help").output
    for key in ("method", "dataset", "model", "seed"):
        assert f"(default: {RUN_KEYS[key].default})" in text
    assert re.search(r"--seed\s+INTEGER", text) and re.search(r"--set\s+KEY=VALUE", text)
    assert "<str>" not in text and "<path>" not in text


def test_every_commands_options_and_arguments_show_readable_value_types_and_none_for_flags():
    """typer 0.29 writes an option without a metavar as <str>, <int>, <path>, <list[str]>,
    --help (and any flag) as <bool>, an argument as its name and type (FILE <path>) and a
    required argument in the usage line in braces ({FILE})."""
    for command in ([], ["run"], ["sweep"], ["leaderboard"], ["ui"], ["methods"], ["datasets"], ["models"]):
        text = invoke(*command, "--help").output
        options = [line for line in text.splitlines() if re.match(r"│ +-", line)]
        assert any("--help" in line for line in options), (command, text)
        shown = [line for line in text.splitlines() if re.search(r"<[a-z][a-z\[\], ]*>", line)]
        assert shown == [], (command, shown)
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert "{" not in usage, (command, usage)
    sweep = invoke("sweep", "--help").output
    assert re.search(r"Usage: .*sweep \[OPTIONS\] FILE", sweep), sweep
    assert re.search(r"│ \* +FILE +sweep YAML", sweep), sweep


def test_a_second_run_of_a_finished_configuration_is_not_trained_again_unless_asked(tracking_uri):
    first = invoke("run", "--method", "vanilla", *TINY, "--tracking-uri", tracking_uri)
    assert first.exit_code == 0, first.output
    run_id = logged_run_id(first.output)
    again = invoke("run", "--method", "vanilla", *TINY, "--tracking-uri", tracking_uri)
    assert again.exit_code == 0, again.output
    assert f"a finished run of this configuration is in the store (run {run_id}" in again.output
    assert f"run {run_id} found in" in again.output and "test_acc" in again.output
    forced = invoke("run", "--method", "vanilla", *TINY, "--tracking-uri", tracking_uri, "--rerun")
    assert forced.exit_code == 0, forced.output
    assert "a finished run" not in forced.output
    assert logged_run_id(forced.output) != run_id


class Mixup(Method):
    name = "mixup_listing_probe"
    description = "Mixup_listing_probe: convex combinations of inputs and labels."

    def loss(self, model, batch):
        raise NotImplementedError


def test_a_listing_names_a_plugin_once_when_its_description_starts_with_its_name(register):
    register(METHODS, Mixup)
    text = plugin_listing("method", METHODS, lambda cls: cls.hparams, lambda cls: cls.requires)
    assert "mixup_listing_probe: convex combinations of inputs and labels." in text
    assert "mixup_listing_probe: Mixup_listing_probe" not in text


SWEEP = """methods: [vanilla]
datasets: [{synthetic_artifacts: {n_train: 64, n_val: 32, n_test: 32, image_size: 16, patch_size: 3}}]
seeds: [0, 1]
overrides: {epochs: 1, batch_size: 32, device: cpu, log_model: false}
"""


def test_sweep_dry_run_marks_the_jobs_the_store_has_finished_and_writes_nothing(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP)
    store = tmp_path / "store.db"
    uri = f"sqlite:///{store}"
    fresh = invoke("sweep", str(sweep), "--dry-run", "--tracking-uri", uri)
    assert fresh.exit_code == 0, fresh.output
    assert "2 jobs, 0 finished, 2 to run" in fresh.output and not store.exists()
    one = invoke("run", "--method", "vanilla", "--dataset", "synthetic_artifacts", "--seed", "1", "--set",
                 "dataset_params.n_train=64", "--set", "dataset_params.n_val=32", "--set", "dataset_params.n_test=32",
                 "--set", "dataset_params.image_size=16", "--set", "dataset_params.patch_size=3", "--set", "epochs=1",
                 "--set", "batch_size=32", "--set", "device=cpu", "--set", "log_model=false", "--tracking-uri", uri)
    assert one.exit_code == 0, one.output
    dry = invoke("sweep", str(sweep), "--dry-run", "--tracking-uri", uri)
    assert "2 jobs, 1 finished, 1 to run" in dry.output
    assert dry.output.count("finished") == 2 and "to run" in dry.output


def main_output(capsys, *args: str) -> str:
    """stderr of the console script (``main``: usage errors too) for ``args``."""
    import pytest

    from debiasbench.cli import main

    with pytest.raises(SystemExit):
        main(list(args))
    return capsys.readouterr().err


def test_every_error_line_ends_as_a_sentence(tmp_path, capsys):
    cases = [("run", "--method", "nope"), ("run", "--method", "vanila"), ("run", "--seed", "abc"),
             ("run", "--set", "epochs=x"), ("run", "--set", "epoch=3"), ("sweep", str(tmp_path / "missing.yaml")),
             ("run", "--config", str(tmp_path)), ("run", "--nonsense"), ("sweep",), ("leaderboard", "--select", "nope")]
    for args in cases:
        lines = [line for line in main_output(capsys, *args).splitlines() if line.strip()]
        assert len(lines) == 1, (args, lines)
        assert lines[0].startswith("error: ") and lines[0].endswith((".", "?", "!")), (args, lines[0])
        assert ". (see " not in lines[0], (args, lines[0])  # click ends its message in a stop


def test_help_paragraphs_are_reflowed_to_the_terminal_width():
    """Docstring line breaks are not kept: at 80 columns no line holds a lone word."""
    text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "80"}).output
    description = text.split("╭─")[0]
    assert "not trained again" in " ".join(description.split())
    assert not [line for line in description.splitlines() if len(line.split()) == 1]


def test_flags_show_no_value_type():
    text = invoke("run", "--help").output
    rerun = next(line for line in text.splitlines() if "--rerun" in line)
    assert "<bool>" not in rerun and "BOOLEAN" not in rerun


#: Lines that are not prose: a table's (box-drawn, or padded to the table's width with
#: spaces as rich pads every line of a table, its title and caption included, and a sweep's
#: per-dataset table titles, 'synthetic_artifacts (small_cnn): test metrics, one seed',
#: which are not padded where the output is not a terminal) and progress (a run's phase and
#: epoch lines, 'dfr · test', 'vanilla · train epoch 1/5: 1 steps in 0.5s ...', and a
#: sweep's indented epoch lines of its running jobs).
NOT_PROSE = re.compile(r"[\u2500-\u257f]|\s$|^\s*$|^\S+ · |^  \S.* · .* epoch \d+/\d+ \[sweep ETA"
                       r"|^\S+ \(\S+\): test metrics, ")


def prose_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not NOT_PROSE.search(line)]


def test_every_informational_line_of_run_sweep_and_leaderboard_ends_as_a_sentence(tmp_path, capfd, monkeypatch):
    """The rule: every line a command prints that is prose, on stdout or stderr, ends in
    '.', '!', '?' or ':' (what a correction says before training its base first, a finished
    run found, where a run was logged, what a sweep skips and trains first, each job that
    ends, a table's reading and legend, what a leaderboard wrote). Tables and progress
    (``NOT_PROSE``) are not prose."""
    import pytest

    from debiasbench.cli import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    small = ["--dataset", "synthetic_artifacts", "--set", "dataset_params.n_train=64", "--set",
             "dataset_params.n_val=32", "--set", "dataset_params.n_test=32", "--set", "dataset_params.image_size=16",
             "--set", "dataset_params.patch_size=3", "--set", "epochs=1", "--set", "batch_size=32", "--set",
             "device=cpu", "--set", "log_model=false", "--tracking-uri", uri]
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP.replace("methods: [vanilla]", "methods: [vanilla, dfr]")
                     .replace("seeds: [0, 1]", "seeds: [1]"))
    commands = [["run", "--method", "dfr", *small], ["run", "--method", "dfr", *small],
                ["sweep", str(sweep), "--tracking-uri", uri], ["sweep", str(sweep), "--tracking-uri", uri],
                ["leaderboard", "--tracking-uri", uri, "--out", str(tmp_path / "board")]]
    said = []
    for argv in commands:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        printed = capfd.readouterr()
        assert exited.value.code == 0, (argv, printed.err)
        lines = prose_lines(printed.out) + prose_lines(printed.err)
        unfinished = [line for line in lines if not line.endswith((".", "!", "?", ":"))]
        assert unfinished == [], (argv, unfinished)
        said += lines
    text = "\n".join(said)
    for expected in ("in the store: training it first.", "a finished run of this configuration is in the store",
                     " logged to ", " found in ", "training 1 vanilla base model first", ": finished in ",
                     "2 of 2 jobs finished earlier: skipped.", "Columns: ", " selected results under ",
                     "/board/source.json."):
        assert expected in text, (expected, text)
