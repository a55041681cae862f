"""Checks the test suite's budget from the JSON that tests/conftest.py writes.

python .ci/budget.py FILE

Fails (exit 1) when pytest's wall time passes SUITE_MINUTES, when the Python processes the
tests start pass MAX_PYTHON_PROCESSES, when the processes that import TensorFlow (the
tests' commands and the workers of their sweeps, 5 s each) pass MAX_TENSORFLOW_IMPORTS, or
when a test runs longer than TEST_SECONDS unless it is listed in CAPS with its own cap.
Counts do not depend on the machine's load, so they are the stable part of the gate; times
are printed for the record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SUITE_MINUTES = 25
# Python processes the tests start directly (sweeps start more, counted by their jobs).
MAX_PYTHON_PROCESSES = 330
# Processes started by the tests that imported TensorFlow (their own commands, joblib
# workers, Ray and Slurm jobs that see the tests' folder); counted by tests/sitecustomize.py.
# 114 on 2026-12-06 (420 tests); the margin leaves room for a few new sweep tests.
MAX_TENSORFLOW_IMPORTS = 130
TEST_SECONDS = 120
# Tests with a cap of their own: each one starts servers or many-job sweeps.
CAPS = {
    "tests/test_stack.py::test_eight_jobs_at_once_write_every_point_once": 600,
    "tests/test_claims.py::": 400,
    # Two sweeps around a full disk; 44 s alone, 126-133 s beside the claims suite.
    "tests/test_spool.py::test_a_full_disk": 240,
    "tests/test_stack": 300,
    "tests/test_stack_access.py": 300,
    "tests/test_slurm.py": 300,
    "tests/test_ray.py": 300,
    "tests/test_outages.py": 240,
    "tests/test_liveness.py": 240,
    "tests/test_search.py": 240,
    "tests/test_sweeps.py": 240,
    "tests/test_offline.py": 240,
    "tests/test_browser.py": 240,
    "tests/test_pipelines.py": 240,
    "tests/test_cluster.py": 240,
}


def cap(nodeid: str) -> float:
    """The longest a test may take: its own cap (the longest matching prefix) or the default."""
    matches = [prefix for prefix in CAPS if nodeid.startswith(prefix)]
    return CAPS[max(matches, key=len)] if matches else TEST_SECONDS


def main(path: str) -> int:
    data = json.loads(Path(path).read_text())
    tests = data["tests"]
    problems = []
    suite = data.get("suite_wall") or 0
    if suite > SUITE_MINUTES * 60:
        problems.append(f"pytest took {suite / 60:.1f} min, over {SUITE_MINUTES} min")
    started = sum(row["python"] for row in tests.values())
    if started > MAX_PYTHON_PROCESSES:
        problems.append(f"tests started {started} Python processes, over {MAX_PYTHON_PROCESSES}")
    tensorflow = sum(row.get("tensorflow", 0) for row in tests.values())
    if tensorflow > MAX_TENSORFLOW_IMPORTS:
        problems.append(
            f"{tensorflow} processes imported TensorFlow, over {MAX_TENSORFLOW_IMPORTS}"
        )
    for nodeid, row in tests.items():
        if row["wall"] > cap(nodeid):
            problems.append(f"{nodeid} took {row['wall']:.0f} s, over its {cap(nodeid):.0f} s")
    cpu = sum(row["cpu"] for row in tests.values())
    slowest = sorted(tests.items(), key=lambda item: -item[1]["wall"])[:10]
    print(
        f"budget: pytest {suite / 60:.1f} min, {len(tests)} tests, {cpu:.0f} CPU-s, "
        f"{started} Python processes started, {tensorflow} imported TensorFlow"
    )
    for nodeid, row in slowest:
        print(
            f"  {row['wall']:7.1f} s  {row['cpu']:7.1f} CPU-s  {row['python']:3d} py  "
            f"{row.get('tensorflow', 0):3d} tf  {nodeid}"
        )
    for problem in problems:
        print(f"budget: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
