"""`python -m mlbcli` is the `mlb` command."""

from mlbcli.cli import main

main()
