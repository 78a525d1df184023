"""`python -m mlbcli` is the `mlb` command."""

from mlbcli.cli.app import main

main()
