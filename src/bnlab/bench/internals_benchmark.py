"""What logging a network's internals costs a job: the same training with it off and on.

A development tool: `python pipelines/benchmark.py --internals [--steps 1000 --repeats 3]`.
Both variants (BN and plain) train untracked in this process, internals off and on
alternately, best of `--repeats`; the figure is the extra wall time as a share of the
job's, beside the seconds the measurements themselves took (perf/internals_seconds).
"""

from __future__ import annotations

import argparse
import time

from hydra import compose, initialize_config_dir

from bnlab import metrics
from bnlab.bench.training_benchmark import CONF_DIR
from bnlab.config import register_configs, validate
from bnlab.experiment.data import load_data
from bnlab.experiment.training import train_model


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--internals", action="store_true")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    register_configs()
    print(f"one {args.steps}-step job, untracked, best of {args.repeats}:")
    for bn in ("true", "false"):
        configs = {}
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for internals in ("false", "true"):
                overrides = [
                    f"bn={bn}",
                    f"train.steps={args.steps}",
                    f"train.internals={internals}",
                ]
                configs[internals] = validate(compose("config", overrides), overrides)
        data = load_data(configs["false"].data)
        train_model(configs["false"], data)  # warm-up: tracing
        best = {name: float("inf") for name in configs}
        measuring = float("inf")
        for _ in range(args.repeats):
            for name, config in configs.items():
                tic = time.perf_counter()
                result = train_model(config, data)
                best[name] = min(best[name], time.perf_counter() - tic)
                if name == "true":
                    measuring = min(measuring, result.final[metrics.INTERNALS_SECONDS])
        extra = best["true"] / best["false"] - 1
        print(
            f"  bn={bn:5s} off {best['false']:6.2f} s  on {best['true']:6.2f} s  "
            f"cost {extra:+.1%} of the job (measuring took {measuring:.2f} s)"
        )
