"""Training throughput of this project's path against the original notebook's loop.

Run it with `python pipelines/benchmark.py`.

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
from pathlib import Path

import keras
import numpy as np
from hydra import compose, initialize_config_dir

from bnlab import job
from bnlab.config import register_configs, validate
from bnlab.data import load_data
from bnlab.training import compile_model, train_model

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def notebook_generator(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    """The original notebook's feed: a plain Python generator of shuffled batches."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            batch = order[start : start + batch_size]
            yield x[batch], y[batch]


def notebook_loop(config, data) -> float:
    """Keras fit on a generator, validation every `eval_every` steps; returns seconds."""
    model = compile_model(config, batches_per_call=1)
    tic = time.perf_counter()
    model.fit(
        notebook_generator(data.x_train, data.y_train, config.train.batch_size, config.train.seed),
        steps_per_epoch=config.train.eval_every,
        epochs=config.train.steps // config.train.eval_every,
        validation_data=(data.x_val, data.y_val),
        verbose=0,
    )
    return time.perf_counter() - tic


def project_loop(config, data) -> float:
    tic = time.perf_counter()
    train_model(config, data)
    return time.perf_counter() - tic


def tracked_job(cfg) -> float:
    tic = time.perf_counter()
    job.run(cfg)
    return time.perf_counter() - tic


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
    config = validate(cfg)
    data = load_data(config.data)
    samples = args.steps * config.train.batch_size

    # Warm-up: first calls pay for graph tracing and the store's schema creation.
    project_loop(config, data)
    tracked_job(cfg)

    timings: dict[str, list[float]] = {
        "notebook": [],
        "project": [],
        "tracked": [],
        "untracked": [],
    }
    for _ in range(args.repeats):
        timings["notebook"].append(notebook_loop(config, data))
        timings["project"].append(project_loop(config, data))
        timings["tracked"].append(tracked_job(cfg))
        timings["untracked"].append(tracked_job(untracked_cfg))
    # Shared machines are noisy: the fastest repeat is the best estimate of each path's
    # own cost; medians are printed too.
    best = {name: min(values) for name, values in timings.items()}
    median = {name: statistics.median(values) for name, values in timings.items()}

    print(
        f"backend {keras.backend.backend()}, bn={args.bn}, {args.steps} steps at batch "
        f"{config.train.batch_size}, {args.repeats} repeats (evaluations included)"
    )
    for name in ("notebook", "project"):
        print(
            f"  {name:9s} {samples / best[name]:8.0f} samples/s "
            f"{args.steps / best[name]:7.1f} steps/s  (best {best[name]:.2f} s, "
            f"median {median[name]:.2f} s)"
        )
    print(
        f"  speed-up of the project path over the notebook loop: "
        f"{best['notebook'] / best['project']:.2f}x best, "
        f"{median['notebook'] / median['project']:.2f}x median"
    )
    overhead = (best["tracked"] - best["untracked"]) / best["untracked"]
    print(
        f"  full job, tracking on {best['tracked']:.2f} s vs off {best['untracked']:.2f} s "
        f"(best of {args.repeats}): overhead {overhead * 100:+.1f} % of wall time"
    )
