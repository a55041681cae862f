"""`python -m bnlab`: the `bnlab` command."""

from bnlab.cli.main import run

run()
