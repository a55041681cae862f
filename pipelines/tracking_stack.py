"""Start or stop a shared tracking stack: PostgreSQL plus an MLflow server that proxies artifacts.

python pipelines/tracking_stack.py up --dir ./stack      # prints the URIs and what to export
python pipelines/tracking_stack.py env --dir ./stack     # eval "$(... env --dir ./stack)"
python pipelines/tracking_stack.py down --dir ./stack    # stops what `up` started; data stays
"""

import argparse
import sys
from pathlib import Path

import bnlab  # noqa: F401  (telemetry off before mlflow is used)
from bnlab import stack


def main() -> int:
    parser = argparse.ArgumentParser(description="A local PostgreSQL + MLflow server stack.")
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", type=Path, default=Path("stack"), help="the stack's folder")
    parser.add_argument("--host", default="127.0.0.1", help="address the server binds to")
    parser.add_argument("--port", type=int, help="server port (first `up`; default a free one)")
    parser.add_argument("--pg-port", type=int, help="PostgreSQL port (first `up`)")
    parser.add_argument("--workers", type=int, default=4, help="server worker processes")
    parser.add_argument("--only", choices=stack.PARTS, help="start or stop one part")
    args = parser.parse_args()
    try:
        if args.action == "up":
            found = stack.up(args.dir, args.host, args.port, args.pg_port, args.workers, args.only)
            print("\n".join(stack.describe(found)))
        elif args.action == "down":
            stack.down(args.dir, args.only)
            print(f"Stopped the stack in {args.dir.resolve()}; its data stays there.")
        else:
            found = stack.Stack.load(args.dir.resolve())
            if found is None:
                raise stack.StackError(f"--dir {args.dir}: no stack here")
            if args.action == "env":
                print("\n".join(f"export {k}={v}" for k, v in found.environment().items()))
            else:
                running = {
                    "postgres": stack.postgres_running(found),
                    "server": stack.server_healthy(found),
                }
                for part, answering in running.items():
                    print(f"{part}: {'up' if answering else 'down'}")
                return 0 if all(running.values()) else 3
    except stack.StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
