"""The main job's wall time against the article's plain sequential sweep, side by side.

A development tool, not part of the installed package. Run it with
`python pipelines/benchmark.py --study`.

Baseline: `python src/train.py -m +experiment=blog` with Hydra's sequential
launcher (12 single-seed jobs). Main job: `python pipelines/study.py`, its
default launcher and seeds (36 jobs), report included. Both start from empty
stores in a fresh folder, one after the other, on the same machine, so their
ratio is what a user would see. The target is a ratio of at most 1.25.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow  # noqa: F401  (imported here so its start-up is not timed below)

ROOT = Path(__file__).resolve().parents[2]
TARGET_RATIO = 1.25


def timed(command: list[str], folder: Path, log_name: str) -> float:
    """Runs `command` in `folder`, its output to a log file; returns its wall seconds."""
    started = time.perf_counter()
    with open(folder / log_name, "w") as log:
        done = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command[1:3])} exited {done.returncode}; see {log.name}")
    return seconds


def count_jobs(store: Path) -> int:
    """Job runs recorded in a store (read back, so the figure is what was trained)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("bn-trick")
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'job'", max_results=1000)
    return len(runs)


def main(argv: list[str]) -> None:
    """Parses the command line, runs the baseline and the main job, prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="store_true", help="(selects this benchmark)")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for both, e.g. train.steps=200"
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bnlab-study-bench-"))
    baseline = timed(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            "+experiment=blog",
            "hydra/launcher=basic",
            f"tracking.uri=sqlite:///{folder}/baseline.db",
            *args.overrides,
        ],
        folder,
        "baseline.log",
    )
    study = timed(
        [
            sys.executable,
            str(ROOT / "pipelines" / "study.py"),
            f"tracking.uri=sqlite:///{folder}/study.db",
            *args.overrides,
        ],
        folder,
        "study.log",
    )
    jobs_baseline = count_jobs(folder / "baseline.db")
    jobs_study = count_jobs(folder / "study.db")
    ratio = study / baseline
    print(f"logs and stores in {folder}")
    print(
        f"  sequential blog sweep: {jobs_baseline:3d} jobs in {baseline:6.1f} s "
        f"({jobs_baseline / baseline * 60:5.1f} jobs/min)"
    )
    print(
        f"  main job (study.py):   {jobs_study:3d} jobs in {study:6.1f} s "
        f"({jobs_study / study * 60:5.1f} jobs/min, report included)"
    )
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(
        f"  wall-time ratio {ratio:.2f} ({verdict} the {TARGET_RATIO} target); "
        f"throughput {jobs_study / study / (jobs_baseline / baseline):.2f}x"
    )
