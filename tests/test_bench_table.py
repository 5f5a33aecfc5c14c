"""tools/bench_table.py: the docs' benchmark table comes from `make bench` JSON files, and
two runs whose spreads do not overlap are flagged."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_table", ROOT / "tools" / "bench_table.py")
assert spec is not None and spec.loader is not None
bench_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_table)


def _run(path: Path, median: float, low: float, high: float, load: float) -> Path:
    info = {"baseline": "baseline_vanilla", "rounds": 15, "threads": 1, "clock": "cpu", "load_1min": [load, load],
            "ratios": {"groupdro": {"median": median, "low": low, "high": high}}}
    path.write_text(json.dumps({"commit_info": {"id": "abcdef0123"}, "datetime": "2026-12-06T10:00:00",
                                "benchmarks": [{"group": "groupdro-step", "extra_info": info}]}))
    return path


def test_the_table_shows_each_runs_ratio_with_its_spread_and_conditions(tmp_path):
    quiet = _run(tmp_path / "quiet.json", 1.02, 0.98, 1.05, 0.3)
    loaded = _run(tmp_path / "loaded.json", 1.00, 0.90, 1.10, 8.5)
    text, agree = bench_table.table([("quiet", quiet), ("loaded", loaded)])
    assert agree
    assert "| `groupdro-step` | groupdro / baseline_vanilla | CPU | 1.02x (0.98-1.05) | 1.00x (0.90-1.10) |  |" in text
    assert "- loaded: commit abcdef0, 2026-12-06, 1-minute load average 8.5-8.5, torch threads 1" in text


def test_runs_whose_spreads_do_not_overlap_are_flagged_and_fail_the_check(tmp_path, capsys):
    quiet = _run(tmp_path / "quiet.json", 1.02, 0.98, 1.05, 0.3)
    loaded = _run(tmp_path / "loaded.json", 0.70, 0.60, 0.80, 8.5)
    assert bench_table.main([str(quiet), str(loaded), "--check"]) == 1
    assert "ranges do not overlap" in capsys.readouterr().out
