"""What BN costs a training step: plain, Keras's BN layer and TensorFlow's fused kernel.

A development tool, not part of the installed package. Run it with
`python pipelines/benchmark.py --bn`.

The blog's CNN at batch 32, trained by `model.fit` with 50 steps per compiled
call, for `--steps` steps after a warm-up, on the embedded MNIST digits. The
three models alternate within one process, so their ratios hold on a busy
machine; one process runs at the backend's default threads and one pinned to
a single thread (a backend reads its thread count once, when it starts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bnlab.config import CONF_DIR

MODELS = {
    "plain (no BN)": ["bn=false"],
    "BN, keras.layers.BatchNormalization": ["bn=true", "model.bn_impl=keras"],
    "BN, TF's fused kernel": ["bn=true", "model.bn_impl=fused"],
}
BATCHES_PER_CALL = 50


def measure(steps: int, repeats: int) -> dict[str, float]:
    """Best steps/s of each model over `repeats` alternating rounds, in this process."""
    import numpy as np
    from hydra import compose, initialize_config_dir

    from bnlab.config import register_configs, validate
    from bnlab.experiment.compiled import compile_model
    from bnlab.experiment.data import load_data

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        configs = {
            name: validate(compose("config", overrides=[*overrides, "tracking.enabled=false"]))
            for name, overrides in MODELS.items()
        }
    data = load_data(next(iter(configs.values())).data)
    batch = next(iter(configs.values())).train.batch_size
    rng = np.random.default_rng(0)
    order = rng.integers(0, len(data.x_train), size=steps * batch)
    x, y = data.x_train[order], data.y_train[order]
    models = {}
    for name, config in configs.items():
        models[name] = compile_model(config, data, batches_per_call=BATCHES_PER_CALL)
        # Warm-up: tracing and the first calls' allocations are not timed.
        models[name].fit(
            x[: 2 * BATCHES_PER_CALL * batch],
            y[: 2 * BATCHES_PER_CALL * batch],
            batch_size=batch,
            verbose=0,
            shuffle=False,
        )
    best = dict.fromkeys(models, 0.0)
    for _ in range(repeats):
        for name, model in models.items():
            started = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
            best[name] = max(best[name], steps / (time.perf_counter() - started))
    return best


def run_worker(threads: int, steps: int, repeats: int) -> dict[str, float]:
    """`measure` in a fresh process whose backend starts at `threads` (0: its default)."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", str(steps), str(repeats), str(threads)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"error: the benchmark worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    """Parses the command line, measures at default threads and at one, prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bn", action="store_true", help="(selects this benchmark)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    columns = {"default threads": 0, "1 thread": 1}
    figures = {
        label: run_worker(threads, args.steps, args.repeats) for label, threads in columns.items()
    }
    plain = {label: figures[label]["plain (no BN)"] for label in columns}
    print(
        f"steps/s, the blog's CNN at batch 32, {args.steps} steps per repeat, best of "
        f"{args.repeats}, {BATCHES_PER_CALL} steps per compiled call"
    )
    print(f"| model | {' | '.join(columns)} | step cost vs plain ({', '.join(columns)}) |")
    print(f"|---|{'---|' * len(columns)}---|")
    for name in MODELS:
        speeds = [figures[label][name] for label in columns]
        costs = [plain[label] / figures[label][name] for label in columns]
        print(
            f"| {name} | {' | '.join(f'{speed:.1f}' for speed in speeds)} | "
            f"{' / '.join(f'{cost:.2f}x' for cost in costs)} |"
        )


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    from bnlab.experiment import threads

    # Before Keras starts: the backend reads its thread counts once.
    threads.pin(int(sys.argv[4]) or None)
    print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]))))
