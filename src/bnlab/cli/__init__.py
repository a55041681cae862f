"""The `bnlab` command and its subcommands; errors turned into one line."""
