"""Runners: how a batch of items becomes rows in one output file.

`batch` is the harness every command shares (writer, resume, error rows, progress, `summary`);
`local` gives it the work of each command in this process, `ray` the same model work on Ray Data;
`videos` brings videos to the model (decoded ahead, or saved tokens), `tasks` turns one item into a
model request and its result into row columns. May import engine, io, eval, selection and models;
never `mlbcli.api` or the CLI, which sit above.
"""
