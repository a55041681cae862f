"""`bnlab`: one command in front of every stage; each subcommand keeps its own flags.

bnlab train [--user-dir DIR] [-m] [OVERRIDE ...]   # one job, or a sweep with -m
bnlab sweep [--user-dir DIR] "OVERRIDES"           # a sweep from one string (MLflow's parameters)
bnlab study [--user-dir DIR] [--claims[=a,b]] [OVERRIDE ...]
bnlab report | sync | stack | identity | benchmark  [FLAGS]
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from pathlib import Path

from bnlab.config.errors import EXIT_BAD_INPUT

USAGE = """usage: bnlab COMMAND [ARGS]

commands:
  train      one training job, or a Hydra multirun with -m (same overrides as src/train.py)
  sweep      a multirun from one string of overrides: bnlab sweep "bn=true,false lr=0.001,0.01"
  study      a saved study as one sweep, then its report; --claims runs the claims suite
  report     the report (or the claims page, --claims) from the tracking store
  sync       record the runs that jobs kept offline
  stack      start, stop and manage a shared tracking stack (PostgreSQL, MLflow, TLS)
  identity   a job's identity without training it
  benchmark  speed figures, printed side by side

Your own experiment: --user-dir DIR (after train, sweep, study or identity) puts DIR's
Python modules on the path and its config groups (DIR/model/*.yaml, ...) on Hydra's
search path. `bnlab COMMAND --help` shows a command's own help."""

# The subcommands whose module's `main(argv)` runs them; each is imported only when chosen.
RUNNERS = {
    "study": "bnlab.cli.study",
    "report": "bnlab.cli.report",
    "sync": "bnlab.cli.sync",
    "stack": "bnlab.stack.cli",
    "identity": "bnlab.cli.identity",
    "benchmark": "bnlab.cli.benchmark",
}
# The subcommands that compose configs, and so take --user-dir.
COMPOSING = ("train", "sweep", "study", "identity")
USER_DIR_FLAG = "--user-dir"


def _user_dir(argv: list[str]) -> tuple[list[str], str | None]:
    """Takes `--user-dir DIR` (or `--user-dir=DIR`) out of `argv`."""
    rest, folder = [], None
    iterator = iter(argv)
    for argument in iterator:
        if argument == USER_DIR_FLAG:
            folder = next(iterator, None)
            if folder is None:
                raise SystemExit(f"error: {USER_DIR_FLAG}: needs a folder")
        elif argument.startswith(f"{USER_DIR_FLAG}="):
            folder = argument.partition("=")[2]
        else:
            rest.append(argument)
    return rest, folder


def use_user_dir(folder: str) -> str:
    """Makes `folder`'s modules importable here and in every process started from here,
    and returns the Hydra override that adds its configs to the search path."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        print(f"error: {USER_DIR_FLAG}: no such folder: {folder}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    sys.path.insert(0, str(path))
    # Workers (joblib, Ray, Slurm) start from this environment and import the plug-ins too.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(path), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return f"hydra.searchpath=[file://{path}]"


def main(argv: list[str] | None = None) -> int:
    """Runs `bnlab` with `argv` (default: the command line); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else EXIT_BAD_INPUT
    command, rest = argv[0], argv[1:]
    if command in COMPOSING:
        rest, folder = _user_dir(rest)
        if folder is not None:
            rest = [*rest, use_user_dir(folder)]
    if command == "train":
        from bnlab.cli import train

        sys.argv = ["bnlab train", *rest]
        train.main()
        return 0
    if command == "sweep":
        if rest and rest[0] in ("-h", "--help"):
            print(USAGE)
            return 0
        return main(["train", "-m", *[word for text in rest for word in shlex.split(text)]])
    if command in RUNNERS:
        return importlib.import_module(RUNNERS[command]).main(rest)
    print(f"error: bnlab: no command named '{command}' (see bnlab --help)", file=sys.stderr)
    return EXIT_BAD_INPUT


def run() -> None:
    """The `bnlab` console script."""
    sys.exit(main())
