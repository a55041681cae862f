"""Time the report on a synthetic store of 500 runs with 100 logged points per metric.

python pipelines/bench_report.py               # builds the store in a temp folder
python pipelines/bench_report.py --runs 500 --points 100 --keep /tmp/store
"""

import argparse
import tempfile
import time
from pathlib import Path

from bnlab import tracking
from bnlab.pipeline import build_report
from devtools import synthetic_store

ACTIVATIONS = ("relu", "sigmoid")
LRS = (0.0003, 0.001, 0.01, 0.05, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="folder for the store (default: temporary)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder}/bench.db"
    store = tracking.Store(uri, "bench")
    cells = [(a, lr, bn) for a in ACTIVATIONS for lr in LRS for bn in (True, False)]
    tic = time.perf_counter()
    for index in range(args.runs):
        activation, lr, bn = cells[index % len(cells)]
        synthetic_store.log_run(
            store,
            bn=bn,
            lr=lr,
            activation=activation,
            seed=index // len(cells),
            points=args.points,
            eval_every=10,
        )
    print(
        f"built {args.runs} runs x {args.points} points x 4 metrics "
        f"in {time.perf_counter() - tic:.1f} s ({uri})"
    )
    tic = time.perf_counter()
    build_report(uri, "bench", folder / "report")
    print(
        f"report of {args.runs} runs: {time.perf_counter() - tic:.2f} s "
        f"(target <= 15 s), written to {folder / 'report'}"
    )


if __name__ == "__main__":
    main()
