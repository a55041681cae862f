"""The main job against a Keras user's sweep and against this machine's own ceiling.

A development tool, not part of the installed package. Run it with
`python pipelines/benchmark.py --study [--repeats 3] [overrides...]`.

Each repeat measures, one after the other on the same machine, from empty stores
in a fresh folder:
1. the baseline: `python src/train.py -m +experiment=blog model.bn_impl=keras` with
   Hydra's sequential launcher (12 single-seed jobs), what a Keras user would write;
2. the main job: `python pipelines/study.py`, its default launcher and seeds (36 jobs),
   report included;
3. the ceiling: one pinned (one-thread) BN job and one plain job, each alone, then
   as many of each at once as the main job has workers. A worker busy all the time
   finishes a job every (mean BN + mean plain job time at that load) / 2 seconds, the
   grid being half BN and half plain, so W workers do 60 * W / that jobs a minute.
   Job times are the recorded runs' own durations (a warm worker pays the backend's
   start-up once, not per job).

Targets: the main job's jobs/min >= 1.8x the baseline's and >= 90 % of the ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow  # noqa: F401  (imported here so its start-up is not timed below)

from bnlab.experiment import threads

ROOT = Path(__file__).resolve().parents[2]
TARGET_SPEEDUP = 1.8
TARGET_OF_CEILING = 0.9


def timed(command: list[str], folder: Path, log_name: str) -> float:
    """Runs `command` in `folder`, its output to a log file; returns its wall seconds."""
    started = time.perf_counter()
    with open(folder / log_name, "w") as log:
        done = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command[1:3])} exited {done.returncode}; see {log.name}")
    return seconds


def job_runs(store: Path) -> list:
    """Job runs recorded in a store (read back, so the figures are what was trained)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("bn-trick")
    return client.search_runs([experiment.experiment_id], "tags.role = 'job'", max_results=1000)


def count_jobs(store: Path) -> int:
    """How many job runs a store holds."""
    return len(job_runs(store))


def at_once(bn: bool, count: int, folder: Path, name: str, overrides: list[str]) -> float:
    """Mean recorded duration (s) of `count` pinned single jobs started together."""
    store = folder / f"{name}.db"
    commands = [
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            f"bn={str(bn).lower()}",
            f"seed={index}",
            "train.threads=1",
            f"tracking.uri=sqlite:///{store}",
            *overrides,
        ]
        for index in range(count)
    ]
    with contextlib.ExitStack() as stack:
        logs = [
            stack.enter_context(open(folder / f"{name}-{index}.log", "w")) for index in range(count)
        ]
        processes = [
            subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
            for command, log in zip(commands, logs, strict=True)
        ]
        for process, log in zip(processes, logs, strict=True):
            if process.wait() != 0:
                sys.exit(f"error: a ceiling job exited {process.returncode}; see {log.name}")
    runs = job_runs(store)
    return statistics.mean((run.info.end_time - run.info.start_time) / 1000 for run in runs)


def one_repeat(folder: Path, workers: int, overrides: list[str]) -> dict[str, float]:
    """Baseline, main job and ceiling once; jobs/min of each, and the job times."""
    baseline_store, study_store = folder / "baseline.db", folder / "study.db"
    baseline = timed(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            "+experiment=blog",
            "hydra/launcher=basic",
            "model.bn_impl=keras",
            f"tracking.uri=sqlite:///{baseline_store}",
            *overrides,
        ],
        folder,
        "baseline.log",
    )
    study = timed(
        [
            sys.executable,
            str(ROOT / "pipelines" / "study.py"),
            f"tracking.uri=sqlite:///{study_store}",
            *overrides,
        ],
        folder,
        "study.log",
    )
    figures = {
        "baseline_jobs_per_min": count_jobs(baseline_store) / baseline * 60,
        "study_jobs_per_min": count_jobs(study_store) / study * 60,
        "baseline_s": baseline,
        "study_s": study,
    }
    for bn, label in ((True, "bn"), (False, "plain")):
        figures[f"{label}_alone_s"] = at_once(bn, 1, folder, f"{label}-alone", overrides)
        figures[f"{label}_busy_s"] = at_once(bn, workers, folder, f"{label}-busy", overrides)
    per_job = (figures["bn_busy_s"] + figures["plain_busy_s"]) / 2
    figures["ceiling_jobs_per_min"] = 60 * workers / per_job
    return figures


def spread(values: list[float]) -> str:
    """Median with the range over repeats."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} (range {min(values):.2f}-{max(values):.2f})"


def main(argv: list[str]) -> None:
    """Parses the command line, runs the repeats and prints each and their spread."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="store_true", help="(selects this benchmark)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for all, e.g. train.steps=200"
    )
    args = parser.parse_args(argv)
    # The main job's joblib launcher runs one worker per CPU.
    workers = threads.cpus()
    results = []
    for repeat in range(args.repeats):
        folder = Path(tempfile.mkdtemp(prefix=f"bnlab-study-bench-{repeat}-"))
        figures = one_repeat(folder, workers, args.overrides)
        results.append(figures)
        print(
            f"repeat {repeat + 1} (logs and stores in {folder}):\n"
            f"  baseline, 12 jobs sequential, Keras's BN: {figures['baseline_s']:6.1f} s "
            f"({figures['baseline_jobs_per_min']:5.2f} jobs/min)\n"
            f"  main job, 36 jobs, report included:      {figures['study_s']:6.1f} s "
            f"({figures['study_jobs_per_min']:5.2f} jobs/min)\n"
            f"  one pinned job alone: BN {figures['bn_alone_s']:.1f} s, plain "
            f"{figures['plain_alone_s']:.1f} s; {workers} at once: BN "
            f"{figures['bn_busy_s']:.1f} s, plain {figures['plain_busy_s']:.1f} s; ceiling "
            f"{figures['ceiling_jobs_per_min']:.2f} jobs/min with {workers} workers",
            flush=True,
        )
    speedups = [r["study_jobs_per_min"] / r["baseline_jobs_per_min"] for r in results]
    shares = [r["study_jobs_per_min"] / r["ceiling_jobs_per_min"] for r in results]
    print(f"over {len(results)} repeat(s):")
    print(
        f"  main job vs baseline: {spread(speedups)}x jobs/min "
        f"({'meets' if statistics.median(speedups) >= TARGET_SPEEDUP else 'BELOW'} "
        f"the {TARGET_SPEEDUP}x target)"
    )
    print(
        f"  main job vs ceiling:  {spread([share * 100 for share in shares])} % "
        f"({'meets' if statistics.median(shares) >= TARGET_OF_CEILING else 'BELOW'} "
        f"the {TARGET_OF_CEILING:.0%} target)"
    )
