"""The shared tracking stack under load, and what tracking to a server costs a job.

A development tool: `python pipelines/benchmark.py --stack [--concurrency 8 16]`.

1. Per-job tracking cost: the same job run in this process untracked, tracked to a
   SQLite file, to a stack's server over plain HTTP without accounts, to a stack with
   accounts (MLflow's basic-auth app) over HTTP, and to that stack through its TLS
   proxy, alternating, best of `--repeats`, so the figures share the machine's state.
2. Load: for each concurrency N, a sweep of N short jobs on joblib with N workers
   writes to the server at once; then every job must have exactly one run with its
   whole `val/accuracy` history (no gap, no duplicate step), the parent's counts
   must match, and the server's log must hold no error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from bnlab.bench.training_benchmark import CONF_DIR, measure
from bnlab.config import register_configs
from bnlab.job import runner as job

ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY = 40, 5


def stack(action: str, folder: Path, *flags: str) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "pipelines" / "tracking_stack.py"),
            action,
            "--dir",
            str(folder),
            *flags,
        ],
        check=True,
        capture_output=True,
    )


def add_same_admin(folder: Path, like) -> None:
    """Gives the admin of the stack in `folder` the password of `like`'s admin, so one
    set of credentials in the environment serves both."""
    from bnlab.stack import Stack, environment, server
    from bnlab.tracking import accounts

    target = Stack.load(folder)
    current = server.admin_password(target)
    with accounts.signed_in("admin", current):
        accounts.set_password(
            target.internal_uri, "admin", environment(like)["MLFLOW_TRACKING_PASSWORD"], current
        )


def job_costs(servers: dict[str, str], steps: int, repeats: int) -> dict[str, float]:
    register_configs()
    store = tempfile.mkdtemp()
    common = [f"train.steps={steps}", "train.rerun=true", "tracking.system_metrics=false"]
    variants = {
        "untracked": ["tracking.enabled=false"],
        "SQLite": [f"tracking.uri=sqlite:///{store}/mlflow.db"],
        **{
            name: [f"tracking.uri={uri}", "tracking.experiment=bench-cost"]
            for name, uri in servers.items()
        },
    }
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        configs = {name: compose("config", [*common, *extra]) for name, extra in variants.items()}
    for cfg in configs.values():
        job.run(cfg)  # warm-up: tracing, schema creation
    best = {name: float("inf") for name in configs}
    for _ in range(repeats):
        for name, cfg in configs.items():
            best[name] = min(best[name], measure(job.run, cfg)[0])
    return best


def load(uri: str, folder: Path, concurrency: int, log: Path) -> str:
    experiment = f"load-{concurrency}"
    seeds = ",".join(str(seed) for seed in range(concurrency // 4 or 1))
    since = log.stat().st_size
    tic = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            "bn=true,false",
            "lr=0.001,0.01",
            f"seed={seeds}",
            "data.limit=320",
            f"train.steps={STEPS}",
            f"train.eval_every={EVERY}",
            f"tracking.uri={uri}",
            f"tracking.experiment={experiment}",
            "hydra/launcher=joblib",
            f"hydra.launcher.n_jobs={concurrency}",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    seconds = time.perf_counter() - tic
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    jobs = [run for run in runs if run.data.tags.get("role") == "job"]
    parents = [run for run in runs if run.data.tags.get("role") == "sweep"]
    expected = list(range(EVERY, STEPS + 1, EVERY))
    broken = [
        run.info.run_name
        for run in jobs
        if sorted(p.step for p in client.get_metric_history(run.info.run_id, "val/accuracy"))
        != expected
    ]
    counts_match = bool(parents) and parents[0].data.tags.get("jobs.finished") == str(len(jobs))
    errors = [
        line
        for line in log.read_bytes()[since:].decode(errors="replace").splitlines()
        if "Traceback" in line or " ERROR " in line or '" 5' in line
    ]
    intact = (
        done.returncode == 0
        and len(jobs) == len(seeds.split(",")) * 4
        and not broken
        and counts_match
        and not errors
    )
    return (
        f"  {concurrency:3d} jobs at once: {'nothing lost' if intact else 'LOST DATA'} "
        f"({len(jobs)} runs, {len(broken)} with gaps, exit {done.returncode}, "
        f"{len(errors)} server errors) in {seconds:.0f} s"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", action="store_true")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bnlab-bench-"))
    base.chmod(0o711)
    plain, secure, cached = base / "plain", base / "secure", base / "cached"
    stack("up", plain, "--no-auth")
    stack("up", secure, "--tls")
    stack("up", cached, "--auth-cache-seconds", "60")
    try:
        from bnlab.stack import Stack, environment

        found = {folder: Stack.load(folder) for folder in (plain, secure, cached)}
        # The account and the certificate, as `tracking_stack.py env` exports them; a
        # server without accounts ignores the credentials.
        os.environ.update(environment(found[secure]))
        servers = {
            "plain HTTP": found[plain].tracking_uri,
            "accounts": found[secure].internal_uri,
            "accounts+TLS": found[secure].tracking_uri,
        }
        # The other stacks' admin has another password: the cached stack gets one with
        # the same name and password, added through its own admin.
        add_same_admin(cached, found[secure])
        servers["accounts, password cache 60 s"] = found[cached].internal_uri
        costs = job_costs(servers, args.steps, args.repeats)
        print(f"one {args.steps}-step job, best of {args.repeats} (system metrics off):")
        for name, seconds in costs.items():
            extra = seconds - costs["untracked"]
            print(f"  {name:30s} {seconds:6.2f} s  tracking cost {extra:+.2f} s per job")
        print("concurrent jobs writing to the server with accounts, through TLS")
        print("(40 steps, evaluation every 5):")
        for concurrency in args.concurrency:
            line = load(found[secure].tracking_uri, base, concurrency, secure / "mlflow.log")
            print(line, flush=True)
    finally:
        for folder in (plain, secure, cached):
            stack("down", folder)
