"""What the hostile-input tests assert of a refused command: exit 2, one ``error: ...``
line on stderr, no traceback, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from debiasbench.cli import main


def refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str, nothing_written: bool = True) -> str:
    """Run ``debiasbench argv`` in ``tmp_path`` against a store there; assert exit 2, one
    line on stderr and no store written, and with ``nothing_written`` no default store,
    claim or checkpoint either; the line."""
    store = tmp_path / "store.db"
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--tracking-uri", f"sqlite:///{store}"])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and not store.exists()
    if nothing_written:
        assert not (tmp_path / "mlflow.db").exists()
        assert not (tmp_path / ".debiasbench").exists()
    return lines[0]
