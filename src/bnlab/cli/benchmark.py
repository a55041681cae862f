"""`bnlab benchmark`: speed figures, printed side by side.

bnlab benchmark                  # training loop vs the notebook's; tracking cost
bnlab benchmark --steps 300 --repeats 1
bnlab benchmark --bn             # steps/s: plain, Keras's BN, fused BN; 1 thread
bnlab benchmark --study          # main job (36 jobs) vs the 12-job sequential sweep
bnlab benchmark --cluster        # blog grid: joblib and Ray (2 workers) vs sequential
bnlab benchmark --stack          # tracking cost, server vs SQLite; jobs at once
bnlab benchmark --overhead       # launcher CPU and each job's cost outside training
bnlab benchmark --internals      # a job with train.internals off and on
"""

from __future__ import annotations

import importlib

# Each flag and the benchmark module it runs; with none, the training loop's.
BENCHMARKS = {
    "--cluster": "cluster_benchmark",
    "--stack": "stack_benchmark",
    "--overhead": "overhead_benchmark",
    "--internals": "internals_benchmark",
    "--bn": "bn_benchmark",
    "--study": "study_benchmark",
}


def main(argv: list[str]) -> int:
    """Runs the benchmark a flag selects; `--help` lists them."""
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    chosen = next((name for flag, name in BENCHMARKS.items() if flag in argv), None)
    if chosen is None:
        importlib.import_module("bnlab.bench.training_benchmark").main()
    else:
        importlib.import_module(f"bnlab.bench.{chosen}").main(argv)
    return 0
