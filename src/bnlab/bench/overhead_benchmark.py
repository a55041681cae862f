"""What a sweep costs outside training: the launching process and each job's own overhead.

A development tool, not part of the installed package. Run it with
`python pipelines/benchmark.py --overhead [--steps 300] [overrides...]`.

It launches the main job's sweep (`+experiment=study`, 36 jobs on the joblib launcher)
from an empty store in a fresh folder and samples the launching process's own CPU time
(its children, the workers, are not counted) every half second. It prints:

1. the launcher's CPU seconds from launch to the first job's run appearing in the store
   (target <= 5 s): Hydra's start, composing and checking every job, the parent run;
2. the launcher's CPU use while jobs run, as a share of one core (target <= 2 %);
3. each job's time outside its training and evaluation loop (target <= 1.0 s median):
   per worker process (the `host` and `pid` tags of its runs), the gap since the
   worker's previous run ended plus the run's own time outside its loop (the run's
   duration less `metrics.WALL_TIME`, which the job records).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
TARGET_LAUNCH_CPU = 5.0
TARGET_IDLE_SHARE = 0.02
TARGET_JOB_OVERHEAD = 1.0


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _job_runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], "tags.role = 'job'", max_results=1000)


def main(argv: list[str]) -> None:
    from mlflow import MlflowClient

    from bnlab import metrics

    parser = argparse.ArgumentParser(prog="benchmark.py --overhead")
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument("--steps", type=int, default=300)
    args, overrides = parser.parse_known_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bnlab-overhead-"))
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-m",
        "+experiment=study",
        f"train.steps={args.steps}",
        *overrides,
    ]
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    print(f"$ {' '.join(command[1:])}   (in {folder})", flush=True)
    with open(folder / "sweep.log", "w") as log:
        started = time.perf_counter()
        sweep = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        launcher = psutil.Process(sweep.pid)
        samples: list[tuple[float, float]] = []
        first_job_cpu = None
        first_job_wall = None
        while sweep.poll() is None:
            try:
                samples.append((time.perf_counter() - started, _cpu(launcher)))
            except psutil.NoSuchProcess:
                break
            if first_job_cpu is None and (folder / "mlflow.db").exists():
                try:
                    if _job_runs(client, "bn-trick"):
                        first_job_cpu, first_job_wall = samples[-1][1], samples[-1][0]
                except Exception:  # the store is being created
                    pass
            time.sleep(0.5)
        wall = time.perf_counter() - started
    if sweep.returncode != 0:
        sys.exit(f"error: the sweep exited {sweep.returncode}; see {folder / 'sweep.log'}")
    runs = _job_runs(client, "bn-trick")
    # The launcher's CPU while jobs run: from the first job's start to the sweep's end.
    running = [(t, cpu) for t, cpu in samples if first_job_wall is not None and t >= first_job_wall]
    idle_share = (
        (running[-1][1] - running[0][1]) / (running[-1][0] - running[0][0])
        if len(running) > 1 and running[-1][0] > running[0][0]
        else float("nan")
    )
    # Each worker process runs its jobs one after the other: a job's time outside its
    # loop is the gap since the worker's previous run ended plus its run's time outside
    # the loop (each worker's first job has no previous run, and is left out).
    workers: dict[tuple[str, str], list] = {}
    for run in runs:
        key = (run.data.tags.get("host", ""), run.data.tags.get("pid", ""))
        workers.setdefault(key, []).append(run)
    outside_run, inside_run = [], []
    for worker_runs in workers.values():
        worker_runs.sort(key=lambda run: run.info.start_time)
        for previous, run in zip(worker_runs, worker_runs[1:], strict=False):
            outside_run.append((run.info.start_time - previous.info.end_time) / 1000)
            loop = run.data.metrics.get(metrics.WALL_TIME, math.nan)
            inside_run.append((run.info.end_time - run.info.start_time) / 1000 - loop)
    overhead = [a + b for a, b in zip(outside_run, inside_run, strict=True)]
    loop_seconds = statistics.median(
        r.data.metrics[metrics.WALL_TIME] for r in runs if metrics.WALL_TIME in r.data.metrics
    )
    print(f"jobs: {len(runs)} on {len(workers)} workers, sweep wall {wall:.1f} s")
    print(
        f"launcher CPU from launch to the first job: {first_job_cpu or float('nan'):.2f} s "
        f"(target <= {TARGET_LAUNCH_CPU:g} s), at {first_job_wall or float('nan'):.1f} s wall"
    )
    print(
        f"launcher CPU while jobs run: {100 * idle_share:.2f} % of one core "
        f"(target <= {100 * TARGET_IDLE_SHARE:g} %)"
    )
    print(
        f"time outside the training loop per job: median {statistics.median(overhead):.2f} s "
        f"over {len(overhead)} jobs (target <= {TARGET_JOB_OVERHEAD:g} s): outside the run "
        f"{statistics.median(outside_run):.2f} s, inside it {statistics.median(inside_run):.2f} s; "
        f"median loop {loop_seconds:.2f} s"
    )
