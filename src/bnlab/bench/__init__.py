"""Benchmarks that print speed figures side by side (the `bnlab benchmark` subcommand)."""
