"""`mlb manifest`: a benchmark's published annotations -> mlb's manifest (`mlbcli.eval.converters`)."""

from __future__ import annotations

from typing import Annotated

import typer

from mlbcli.cli.common import setup_logging, usage_errors

MANIFEST_EPILOG = (
    "Example: mlb manifest videomme videomme/test-00000-of-00001.parquet --videos videomme/ "
    "--out videomme.jsonl"
)


def manifest(
    benchmark: Annotated[
        str,
        typer.Argument(
            metavar="BENCHMARK", help="videomme, mlvu, mvbench, egoschema, nextqa or longvideobench."
        ),
    ],
    annotations: Annotated[
        str,
        typer.Argument(
            metavar="ANNOTATIONS",
            help="The benchmark's annotation file (JSON, JSON lines, CSV or Parquet; MLVU and MVBench: "
            "also the folder of per-task JSON files).",
        ),
    ],
    videos: Annotated[
        str, typer.Option("--videos", metavar="DIR", help="The folder holding the benchmark's videos.")
    ],
    out: Annotated[
        str, typer.Option("--out", "-o", metavar="FILE.jsonl", help="The manifest to write.")
    ] = "manifest.jsonl",
    answers: Annotated[
        str | None,
        typer.Option(
            "--answers",
            metavar="FILE",
            help="egoschema only: subset_answers.json (default: the one beside ANNOTATIONS).",
        ),
    ] = None,
    allow_missing: Annotated[
        bool,
        typer.Option("--allow-missing", help="Leave out questions whose video is not found (else an error)."),
    ] = False,
) -> None:
    """Write mlb's manifest (video, question, options, ground truth, category) from a benchmark's
    annotations, with each video's path resolved under --videos, and beside it the lmms-eval docs that
    `mlb score --lmms-eval-samples` puts into samples lmms-eval's aggregation reads."""
    setup_logging(False)
    from mlbcli.eval.converters import convert

    with usage_errors():
        done = convert(
            benchmark, annotations, videos=videos, out=out, answers=answers, allow_missing=allow_missing
        )
    if done.missing:
        typer.echo(f"left out the questions of {len(done.missing)} missing videos", err=True)
    typer.echo(f"wrote {done.rows} questions to {done.manifest} (lmms-eval docs: {done.docs})")
    typer.echo(f"next: mlb answer {done.manifest} --benchmark {benchmark.lower()} --model MODEL", err=True)
