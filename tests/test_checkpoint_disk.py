"""A full disk under the checkpoint folder is one line naming the folder; the run is
recorded FAILED with that reason and no temporary checkpoint is left behind."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from debiasbench.cli import main

TINY_RUN = ["run", "-d", "synthetic_artifacts", "--set", "dataset_params.n_train=40", "--set",
            "dataset_params.n_val=20", "--set", "dataset_params.n_test=20", "--set", "epochs=2",
            "--set", "log_model=false", "--no-progress"]


def test_a_full_checkpoint_folder_is_one_line_naming_it(tmp_path, tmpfs, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    disk = tmpfs("1m")
    (disk.path / "filler").write_bytes(b"\0" * (1024 * 1024 - 8 * 1024))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SystemExit) as exited:
        main([*TINY_RUN, "--set", f"checkpoint_dir={disk.path / 'checkpoints'}", "--tracking-uri", uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1, err[:20]
    assert err[0].startswith(f"error: the disk of checkpoint folder '{disk.path / 'checkpoints'}"), err
    assert err[0].endswith("free space there or set checkpoint_dir to another folder."), err
    assert list(disk.path.iterdir()) == [disk.path / "filler"]  # no temporary, no empty folder of the run
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "checkpoint folder" in runs[0].data.tags["debiasbench.failure"]
