"""The CI budget's gate (.ci/budget.py), on budgets written by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _budget():
    spec = importlib.util.spec_from_file_location("budget", ROOT / ".ci" / "budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(wall: float, ended: float, **extra) -> dict:
    return {"wall": wall, "cpu": wall, "python": 1, "tensorflow": 1, "ended": ended, **extra}


def _check(tmp_path: Path, tests: dict) -> int:
    path = tmp_path / "budget.json"
    path.write_text(json.dumps({"suite_wall": 600, "dist": "no", "tests": tests}))
    return _budget().main(str(path))


def test_two_cpu_heavy_tests_that_overlapped_fail_the_budget(tmp_path, capsys) -> None:
    claims = "tests/test_claims.py::test_a_tiny_claims_suite"
    writers = "tests/test_stack.py::test_eight_jobs_at_once_write_every_point_once"
    apart = {
        claims: _row(300, 310, heavy_wait=0),
        writers: _row(60, 380, heavy_wait=5),
        "tests/test_a.py::test_b": _row(10, 305),  # not heavy: may overlap anything
    }
    assert _check(tmp_path, apart) == 0
    assert "after waiting 5 s" in capsys.readouterr().out

    overlapping = {**apart, writers: _row(60, 340, heavy_wait=0)}
    assert _check(tmp_path, overlapping) == 1
    assert "ran at the same time, 30 s" in capsys.readouterr().err
