"""Time the report on a synthetic store of 500 runs with 100 logged points per metric.

python pipelines/bench_report.py               # builds the store in a temp folder
python pipelines/bench_report.py --runs 500 --points 100 --keep /tmp/store
python pipelines/bench_report.py --server      # also on a tracking stack's MLflow server
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bnlab import tracking
from bnlab.bench import synthetic_store
from bnlab.report.build import build_report

ACTIVATIONS = ("relu", "sigmoid")
LRS = (0.0003, 0.001, 0.01, 0.05, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="folder for the store (default: temporary)")
    parser.add_argument(
        "--server", action="store_true", help="also build and report on an MLflow server"
    )
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    times = {"SQLite": bench(f"sqlite:///{folder}/bench.db", folder / "sqlite", args)}
    if args.server:
        from bnlab.stack import Stack

        base = Path(tempfile.mkdtemp(prefix="bnlab-bench-"))
        base.chmod(0o711)
        command = [sys.executable, str(Path(__file__).with_name("tracking_stack.py"))]
        subprocess.run([*command, "up", "--dir", str(base / "stack")], check=True)
        try:
            uri = Stack.load(base / "stack").tracking_uri
            times["server"] = bench(uri, folder / "server", args)
        finally:
            subprocess.run([*command, "down", "--dir", str(base / "stack")], check=True)
    print(" | ".join(f"{name}: report {seconds:.2f} s" for name, seconds in times.items()))


def bench(uri: str, folder: Path, args: argparse.Namespace) -> float:
    """Builds the synthetic store at `uri`, times the report on it; returns its seconds."""
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
    seconds = time.perf_counter() - tic
    print(
        f"report of {args.runs} runs: {seconds:.2f} s (target <= 15 s), "
        f"written to {folder / 'report'}"
    )
    return seconds


if __name__ == "__main__":
    main()
