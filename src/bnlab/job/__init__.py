"""One run from start to end: its identity, its store record, its console."""
