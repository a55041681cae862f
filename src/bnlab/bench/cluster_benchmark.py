"""The blog grid on joblib (2 workers) and on a local Ray cluster (2 workers), each against
the sequential sweep on the same machine, in one run.

A development tool: `python pipelines/benchmark.py --cluster [overrides...]`.

Each launch starts from an empty store in a fresh folder; the Ray cluster (one head
with as many CPUs as workers) is started before its launch and stopped after it, so
its start-up is not counted. Each job pins its backend to the CPUs its launcher
gives it (one). The target is 1.5x the sequential sweep's speed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from bnlab.bench.study_benchmark import ROOT, count_jobs, timed
from bnlab.stack import free_port

TARGET_SPEEDUP = 1.5


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", action="store_true", help="(selects this benchmark)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for all, e.g. train.steps=200"
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bnlab-cluster-bench-"))
    ray = str(Path(sys.executable).with_name("ray"))
    base = [sys.executable, str(ROOT / "src" / "train.py"), "-m", "+experiment=blog"]
    launchers = {
        "sequential": ["hydra/launcher=basic"],
        "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"],
        "ray": ["hydra/launcher=ray_cluster"],
    }
    seconds: dict[str, float] = {}
    for name, launcher in launchers.items():
        command = [*base, *launcher, f"tracking.uri=sqlite:///{folder}/{name}.db", *args.overrides]
        if name != "ray":
            seconds[name] = timed(command, folder, f"{name}.log")
            continue
        port = free_port()
        subprocess.run(
            [
                ray,
                "start",
                "--head",
                f"--port={port}",
                f"--num-cpus={args.workers}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            check=True,
            capture_output=True,
        )
        try:
            command.append(f"hydra.launcher.ray.init.address=127.0.0.1:{port}")
            seconds[name] = timed(command, folder, f"{name}.log")
        finally:
            subprocess.run([ray, "stop", "--force"], capture_output=True)
    print(f"logs and stores in {folder}")
    for name, wall in seconds.items():
        jobs = count_jobs(folder / f"{name}.db")
        speedup = seconds["sequential"] / wall
        verdict = (
            ""
            if name == "sequential"
            else (
                f"  {'meets' if speedup >= TARGET_SPEEDUP else 'BELOW'} "
                f"the {TARGET_SPEEDUP}x target"
            )
        )
        print(f"  {name:10s} {jobs:3d} jobs in {wall:6.1f} s: {speedup:.2f}x sequential{verdict}")
