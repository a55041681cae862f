"""Training throughput of this project's path against the original notebook's loop.

A development tool, not part of the installed package. Run it with
`python pipelines/benchmark.py`.

Both train the same model on the same data in this process, alternating, so the
ratio holds even on a busy machine. Also measures what MLflow tracking costs:
the same job with tracking on and off.

    python pipelines/benchmark.py                  # default 1,000-step schedule
    python pipelines/benchmark.py --steps 300 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import keras
import numpy as np
from hydra import compose, initialize_config_dir

from bnlab.config import CONF_DIR, register_configs, validate
from bnlab.experiment.compiled import compile_model
from bnlab.experiment.data import load_data
from bnlab.experiment.training import train_model
from bnlab.job import runner as job


def notebook_generator(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    """The original notebook's feed: a plain Python generator of shuffled batches."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            batch = order[start : start + batch_size]
            yield x[batch], y[batch]


def notebook_loop(config, data) -> None:
    """Keras fit on a generator, validation every `eval_every` steps."""
    model = compile_model(config, data, batches_per_call=1)
    model.fit(
        notebook_generator(data.x_train, data.y_train, config.train.batch_size, config.train.seed),
        steps_per_epoch=config.train.eval_every,
        epochs=config.train.steps // config.train.eval_every,
        validation_data=(data.x_val, data.y_val),
        verbose=0,
    )


def measure(action, *args) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of one call.

    CPU time is not inflated by other tenants of a shared machine, so its
    ratio is the steadier figure; wall time is what a user waits.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    action(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Parses the command line, runs both loops alternately and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bn", choices=["true", "false"], default="true")
    args = parser.parse_args()

    register_configs()
    store = tempfile.mkdtemp()
    overrides = [
        f"train.steps={args.steps}",
        f"bn={args.bn}",
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        "train.rerun=true",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
        untracked_cfg = compose("config", overrides=[*overrides, "tracking.enabled=false"])
        quiet_cfg = compose("config", overrides=[*overrides, "tracking.system_metrics=false"])
    config = validate(cfg)
    data = load_data(config.data)
    samples = args.steps * config.train.batch_size

    # Warm-up: first calls pay for graph tracing and the store's schema creation.
    train_model(config, data)
    job.run(cfg)

    paths = {
        "notebook": (notebook_loop, config, data),
        "project": (train_model, config, data),
        "tracked": (job.run, cfg),
        "no system metrics": (job.run, quiet_cfg),
        "untracked": (job.run, untracked_cfg),
    }
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, (action, *inputs) in paths.items():
            timings[name].append(measure(action, *inputs))
    # Shared machines are noisy: the fastest repeat is the best estimate of each path's
    # own cost; medians are printed too.
    best = {name: min(wall for wall, _ in values) for name, values in timings.items()}
    median = {name: statistics.median(w for w, _ in values) for name, values in timings.items()}
    cpu = {name: min(c for _, c in values) for name, values in timings.items()}

    print(
        f"backend {keras.backend.backend()}, bn={args.bn}, {args.steps} steps at batch "
        f"{config.train.batch_size}, {args.repeats} repeats (evaluations included)"
    )
    for name in ("notebook", "project"):
        print(
            f"  {name:9s} {samples / best[name]:8.0f} samples/s "
            f"{args.steps / best[name]:7.1f} steps/s  (best {best[name]:.2f} s, "
            f"median {median[name]:.2f} s, CPU {cpu[name]:.2f} s)"
        )
    print(
        f"  speed-up of the project path over the notebook loop: "
        f"{best['notebook'] / best['project']:.2f}x wall (best), "
        f"{median['notebook'] / median['project']:.2f}x wall (median), "
        f"{cpu['notebook'] / cpu['project']:.2f}x CPU time"
    )
    for label, table in (("wall", best), ("CPU", cpu)):
        overhead = (table["tracked"] - table["untracked"]) / table["untracked"]
        system = (table["tracked"] - table["no system metrics"]) / table["untracked"]
        print(
            f"  full job {label} time, tracking on {table['tracked']:.2f} s "
            f"(without system metrics {table['no system metrics']:.2f} s) vs off "
            f"{table['untracked']:.2f} s: overhead {overhead * 100:+.1f} %, "
            f"of which system metrics {system * 100:+.1f} %"
        )
