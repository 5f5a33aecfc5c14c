"""Bad input is one line on stderr, exit code 2, before anything is written: no traceback,
no store, no run. Each case is a file or a command line a clumsy or hostile user wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from debiasbench.core import resources
from refusals import refuse
from debiasbench.core.errors import MESSAGE_LIMIT

SWEEP_OK = "methods: [vanilla]\ndatasets: [colored_digits]\n"

ALIAS_BOMB = """\
lr:
  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  - [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def write(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def test_a_yaml_key_that_is_not_a_name_is_refused_with_its_line(here, capsys):
    line = refuse(here, capsys, "run", "-c", write(here, "run.yaml", "epochs: 1\n1: 2\n"))
    assert "key 1 on line 2 is not a name" in line


def test_a_config_file_that_is_not_utf8_is_refused(here, capsys):
    line = refuse(here, capsys, "run", "-c", write(here, "run.yaml", b"epochs: 1\nexperiment: \xff\xfe\n"))
    assert "is not UTF-8 text" in line and "line 2" in line


def test_a_sweep_whose_methods_hold_a_list_is_refused(here, capsys):
    line = refuse(here, capsys, "sweep", write(here, "s.yaml", "methods: [[vanilla]]\ndatasets: [colored_digits]\n"))
    assert "methods: expected a list of names, got ['vanilla']" in line


@pytest.mark.parametrize("command,content", [
    ("run", "epochs: 1\nlr: 0.1\nepochs: 2\n"),
    ("sweep", SWEEP_OK + "overrides: {epochs: 1}\nmethods: [jtt]\n"),
    ("sweep", SWEEP_OK + "overrides:\n  epochs: 1\n  epochs: 2\n"),
])
def test_duplicate_yaml_keys_are_refused_naming_the_key_and_both_lines(here, capsys, command, content):
    path = write(here, "f.yaml", content)
    line = refuse(here, capsys, command, *(["-c", path] if command == "run" else [path]))
    assert "is given twice, on line" in line
    assert ("'epochs'" in line) if "epochs: 2" in content else ("'methods'" in line)


@pytest.mark.parametrize("content,key", [
    ("methods: []\ndatasets: [colored_digits]\n", "methods"),
    ("methods: [vanilla]\ndatasets: []\n", "datasets"),
    (SWEEP_OK + "models: []\n", "models"),
    (SWEEP_OK + "seeds: []\n", "seeds"),
])
def test_an_empty_list_of_a_sweep_is_refused_instead_of_an_empty_table(here, capsys, content, key):
    line = refuse(here, capsys, "sweep", write(here, "s.yaml", content))
    assert line == f"error: {key}: an empty list leaves no job."


def test_a_misspelt_model_fails_the_sweep_before_any_job_runs(here, capsys):
    line = refuse(here, capsys, "sweep", write(here, "s.yaml", SWEEP_OK + "models: [small_cnn, resnet19]\n"))
    assert "unknown model 'resnet19'; did you mean 'resnet18'?" in line


def test_a_yaml_alias_bomb_gives_a_short_line_quickly(here, capsys):
    line = refuse(here, capsys, "run", "-c", write(here, "bomb.yaml", ALIAS_BOMB))
    assert line.startswith("error: lr: expected a float")
    assert len(line) <= len("error: ") + MESSAGE_LIMIT


def test_sizes_have_an_upper_bound(here, capsys):
    line = refuse(here, capsys, "run", "-d", "synthetic_artifacts", "--set", f"dataset_params.n_train={10**9}")
    assert line == "error: dataset_params.n_train: expected an integer in [10, 1000000], got 1000000000."
    line = refuse(here, capsys, "run", "--set", f"epochs={10**9}")
    assert line.startswith("error: epochs: expected an integer in [0, 100000]")


def test_sizes_within_bounds_are_checked_against_the_memory_there_is(here, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 2**30)
    line = refuse(here, capsys, "run", "-d", "synthetic_artifacts", "--set", "dataset_params.n_train=900000")
    assert "needs 34.4 GiB of memory and this machine has 1.0 GiB available" in line


@pytest.mark.parametrize("name,expected", [
    ("''", "experiment: expected a non-empty name"),
    ("x" * 600, "experiment: expected a name of at most 200 characters, got 600"),
])
def test_an_unusable_experiment_name_names_the_key(here, capsys, name, expected):
    assert refuse(here, capsys, "run", "--set", f"experiment={name}") == f"error: {expected}."


def test_a_bad_command_line_option_is_one_line_not_a_usage_box(here, capsys):
    line = refuse(here, capsys, "sweep", write(here, "s.yaml", SWEEP_OK), "--workers", "abc")
    assert line.startswith("error: Invalid value for '--workers'")
    assert line.endswith("(see 'debiasbench sweep --help').")
    assert refuse(here, capsys, "run", "--bogus").startswith("error: No such option: --bogus")


@pytest.mark.parametrize("argv", [
    ["run", "-m", "vanila"],
    ["run", "--set", "lr=abc"],
    ["run", "-c", "missing.yaml"],
    ["run", "-d", "isic", "--set", "dataset_params.root=nowhere"],
    ["run", "-d", "waterbirds", "--set", "dataset_params.root=."],
    ["run", "-d", "colored_mnist", "--set", "dataset_params.root=nowhere"],
    ["run", "--model", "timm:no_such_net"],
    ["run", "-d", "synthetic_artifacts", "--set", "dataset_params.attacked_class=9"],
    ["sweep", "missing.yaml"],
])
def test_rejected_input_creates_no_store(here, capsys, argv):
    refuse(here, capsys, *argv)


@pytest.mark.parametrize("datasets,reason", [
    ("[colored_digits, image_folder]", "dataset_params.root: expected the folder holding"),  # only some jobs bad
    ("[{image_folder: {root: nowhere}}]", "dataset_params.root: folder 'nowhere' not found"),
    ("[{image_folder: {root: images, classes: 'cat,dog'}}]", "dataset_params.classes: no class folder 'dog'"),
    ("[{bone_age: {root: images, age_bins: 'young,old'}}]", "dataset_params.age_bins: expected increasing"),
])
def test_a_sweep_whose_job_run_would_refuse_is_refused_before_anything_is_written(tmp_path, datasets, reason):
    """What ``run`` refuses before it opens the store (a dataset's files, a parameter only
    the dataset checks) refuses the whole sweep in one line naming the job, exit 2, before
    the store or a claim exists: no job ran, so none is reported FAILED without a run."""
    import subprocess
    import sys

    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cow").mkdir()
    (tmp_path / "s.yaml").write_text(f"methods: [vanilla]\ndatasets: {datasets}\nseeds: [0, 1]\n"
                                     "overrides: {epochs: 1}\n")
    done = subprocess.run([sys.executable, "-m", "debiasbench.cli", "sweep", "s.yaml", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'store.db'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    dataset = "bone_age" if "bone_age" in datasets else "image_folder"
    assert lines[0].startswith(f"error: sweep job vanilla on {dataset} (small_cnn, seed 0) (and 1 other job of "
                               f"this dataset config): {reason}"), lines[0]
    assert lines[0].endswith("; the sweep ran no job (every job's input is checked before the first one starts).")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "s.yaml"]  # no store, no claim, no lock
