"""Checks the test suite's budget from the JSON that tests/conftest.py writes.

python .ci/budget.py FILE

Fails (exit 1) when pytest's wall time passes SUITE_MINUTES, when the Python processes the
tests start pass MAX_PYTHON_PROCESSES, when the processes that import TensorFlow (the
tests' commands and the workers of their sweeps, 5 s each) pass MAX_TENSORFLOW_IMPORTS, or
when a test runs longer than TEST_SECONDS unless it is listed in CAPS with its own cap,
when a test ran outside the scheduling group tests/conftest.py gives it, or when two
`cpu_heavy` tests ran at the same time (their lock should make that impossible).
Counts do not depend on the machine's load, so they are the stable part of the gate; times
are printed for the record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SUITE_MINUTES = 25
# Python processes the tests start directly (sweeps start more, counted by their jobs).
# 281 on 2026-12-05; 155 on 2026-12-06 once bad input ran in forks (tests/forkrun.py);
# 141 on 2026-12-07 (the claims suite's sweeps in its own process), 133 later that day.
MAX_PYTHON_PROCESSES = 160
# Processes started by the tests that imported TensorFlow (their own commands, joblib
# workers, Ray and Slurm jobs that see the tests' folder); counted by tests/sitecustomize.py.
# 114 on 2026-12-05 (420 tests); 126 on 2026-12-06 (451 tests: the normalizations study's
# sweep, faster's side-by-side timing); 110 on 2026-12-07 (456 tests: the claims suite's
# sweeps in its own process), 108 later that day (two sweep tests merged into others).
# The margin leaves room for a few new sweep tests.
MAX_TENSORFLOW_IMPORTS = 125
TEST_SECONDS = 120
# Tests with a cap of their own: each one starts servers or many-job sweeps.
CAPS = {
    "tests/test_stack.py::test_eight_jobs_at_once_write_every_point_once": 600,
    # The tiny claims suite: 309 s CPU-bound alone (2026-12-06, before faster's timing),
    # 575 s beside the other worker's sweeps.
    "tests/test_claims.py::": 700,
    # Two sweeps around a full disk; 44 s alone, 126-133 s when it ran beside the claims
    # suite (ungrouped: it may still do so).
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
        if data.get("dist") == "loadgroup" and row.get("group") != row.get("scheduled_group"):
            # A group ignored by the scheduler: its tests ran on both workers at once.
            problems.append(
                f"{nodeid} ran in group {row.get('scheduled_group')}, not {row.get('group')}"
            )
        if row["wall"] > cap(nodeid):
            problems.append(f"{nodeid} took {row['wall']:.0f} s, over its {cap(nodeid):.0f} s")
    problems += _overlaps(tests)
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
    ends: dict[str, float] = {}
    busy: dict[str, float] = {}
    for row in tests.values():
        if "worker" in row:
            ends[row["worker"]] = max(ends.get(row["worker"], 0.0), row.get("ended", 0.0))
            busy[row["worker"]] = busy.get(row["worker"], 0.0) + row["wall"]
    for worker in sorted(ends):
        print(
            f"  worker {worker}: busy {busy[worker]:.0f} s, its last test ended at "
            f"{ends[worker]:.0f} s"
        )
    for nodeid, row in tests.items():
        if "heavy_wait" in row:
            print(
                f"  cpu_heavy: {nodeid} ran {row['ended'] - row['wall']:.0f}-{row['ended']:.0f} s,"
                f" after waiting {row['heavy_wait']:.0f} s for the other"
            )
    for problem in problems:
        print(f"budget: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _overlaps(tests: dict[str, dict]) -> list[str]:
    """Pairs of `cpu_heavy` tests whose runs overlapped by more than a second (a test ran
    from `ended - wall` to `ended`, in seconds since the session started)."""
    heavy = sorted(
        (row["ended"] - row["wall"], row["ended"], nodeid)
        for nodeid, row in tests.items()
        if "heavy_wait" in row and "ended" in row
    )
    found = []
    for index, (_, end, first) in enumerate(heavy):
        for start, _, second in heavy[index + 1 :]:
            if end - start > 1.0:
                found.append(f"{first} and {second} ran at the same time, {end - start:.0f} s")
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
