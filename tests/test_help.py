"""`--help` works for every command and script: usage text, exit 0, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

COMMANDS = [[], ["train"], ["study"], ["report"], ["sync"], ["stack"], ["identity"], ["benchmark"]]
SCRIPTS = sorted(path.name for path in (ROOT / "pipelines").glob("*.py"))


@pytest.mark.parametrize(
    "argv",
    [[sys.executable, "-m", "bnlab", *command] for command in COMMANDS]
    + [[sys.executable, str(ROOT / "pipelines" / name)] for name in SCRIPTS]
    + [[sys.executable, str(ROOT / "src" / "train.py")]],
    ids=[" ".join(["bnlab", *c]) for c in COMMANDS] + SCRIPTS + ["src/train.py"],
)
def test_help_prints_usage_and_exits_0(argv: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.strip()
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "outputs"]) or not any(
        path.suffix == ".db" for path in tmp_path.rglob("*")
    )
