"""The io layer: everything between files on disk and the model, and nothing about the model.

Inputs: `sources` turns CLI sources into `Item`s (`items`), reading manifests with `manifests`;
`video` decodes the frames chosen by `sampling` (probing in `containers`, decoders in `decoders`,
test clips in `synthetic`); `prefetch` decodes ahead in worker processes. Outputs: `writers`
(`ResultWriter`) writes result rows atomically and resumably, with `parts` (files next to the output,
locks), `formats` (Parquet/JSONL/CSV) and `merging` (the result schema, older files); `schema` holds
the columns of each subcommand; `tokens` is the saved-token file format; `bias_report` draws a PNG;
`naming` makes safe file names from ids.

The bottom layer: modules here import only `mlbcli.io.*` and `mlbcli.errors` (a test checks it), and
none imports torch, a decoder or PIL at module level where the CLI's fast path imports it.
"""
