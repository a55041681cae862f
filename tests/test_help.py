"""`--help` works for every command and script: usage text, exit 0, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, run_forked

COMMANDS = [[], ["train"], ["study"], ["report"], ["sync"], ["stack"], ["identity"], ["benchmark"]]
SCRIPTS = sorted(path.name for path in (ROOT / "pipelines").glob("*.py"))


@pytest.mark.parametrize(
    "argv",
    [["-m", "bnlab", *command] for command in COMMANDS]
    + [[str(ROOT / "pipelines" / name)] for name in SCRIPTS]
    + [[str(ROOT / "src" / "train.py")]],
    ids=[" ".join(["bnlab", *c]) for c in COMMANDS] + SCRIPTS + ["src/train.py"],
)
def test_help_prints_usage_and_exits_0(argv: list[str], tmp_path: Path) -> None:
    # `python ARGV --help`, in a fork of a preloaded interpreter (tests/forkrun.py).
    done = run_forked([*argv, "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.strip()
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "outputs"]) or not any(
        path.suffix == ".db" for path in tmp_path.rglob("*")
    )
