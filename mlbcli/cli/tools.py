"""The commands around the batch runs: `flops` (plan a method's cost), `methods` (what exists), `show`
and `score` (read results files) and `doctor` (check the install). No torch except where a command
needs it (`flops` reads a config, `doctor` runs tiny models).
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer

from mlbcli.cli.common import fail, method_name, method_params, setup_logging, usage_errors
from mlbcli.cli.declared import values_for
from mlbcli.errors import MlbError, UsageError

FLOPS_EPILOG = (
    "Example: mlb flops --model llava-hf/llava-onevision-qwen2-7b-ov-hf --frames 32 "
    "--method fastv --keep 0.25 --layer 2"
)
FLOPS_DOC = """Visual-token LLM FLOPs of a method and its ratio to the unpruned model, from the config alone.

    Convention of FastV/FastVID/LLaVA-MLB (one multiply-accumulate = one FLOP, visual tokens only), so
    the numbers compare with published tables. No weights are loaded.
    """


def flops(values: dict[str, Any]) -> None:
    """`mlb flops` with its parsed option `values` (the table's options of "flops")."""
    setup_logging(False)
    from mlbcli import api
    from mlbcli.engine.flops import flops_text
    from mlbcli.selection import method_defaults

    spec = values_for("flops", "spec", values)  # model, method, keep, layer, frames, debias...
    with usage_errors():
        spec.update(
            method=method_name(spec["method"]), params=method_params(values["param"], values["method_params"])
        )
        # --resolution WxH: the frame size a dynamic-resolution family plans for
        plan = api.flops(**spec, resolution=values.get("resolution"))
    keep = values["keep"] if values["keep"] is not None else method_defaults(plan.method)["keep"]
    tokens = plan.tokens_per_layer
    cuts = sorted({(i, n) for i, n in enumerate(tokens) if i == 0 or n != tokens[i - 1]})
    typer.echo(f"model          {plan.model} ({plan.family})")
    typer.echo(f"frames         {plan.frames} -> {plan.visual_tokens} visual tokens")
    typer.echo(f"resolution     {plan.resolution}")
    typer.echo(f"method         {plan.method}, keep {keep}")
    typer.echo("tokens         " + ", ".join(f"{n} from layer {i}" for i, n in cuts))
    typer.echo(f"vanilla        {flops_text(plan.flops_vanilla)}")
    typer.echo(f"{plan.method:14s} {flops_text(plan.flops)}")
    typer.echo(f"ratio          {plan.ratio:.4f}")
    if plan.probe_passes:
        sizes = sorted({count for count, _ in plan.probe_passes}, reverse=True)
        typer.echo(
            f"probe passes   +{flops_text(plan.flops_probes)} ({len(plan.probe_passes)} segment probes "
            f"of {'/'.join(map(str, sizes))} visual tokens x {plan.probe_passes[0][1]} layers, not in the ratio)"
        )
        typer.echo(f"with probes    {plan.probe_ratio:.4f} (flops_probe_ratio)")


# -- mlb methods ---------------------------------------------------------------------------------------------


def _method_catalog() -> tuple[list[Any], list[tuple[str, str, tuple[Any, ...]]]]:
    """(one row per method with its parameters, (name, description, parameters) per debiaser): the
    one place `mlb methods` reads what exists (torch-free, plugins included)."""
    from mlbcli.selection import describe_methods
    from mlbcli.selection.registry import describe_debiasers

    return describe_methods(), describe_debiasers()


#: Where a method's `prune_point` cuts, in words.
WHERE = {"input": "before the LLM", "layer": "inside the LLM, before decoder layer --layer", None: "never"}
INDENT = " " * 13


def _method_lines(info: Any, para: Any) -> None:
    """A method's paragraphs: description, where it prunes, the options it takes."""
    para(info.description, first=f"{info.name:12s} ")
    debias = (
        f"; default --debias {','.join(info.default_debias) or 'none'} (any of below)"
        if info.takes_debias
        else ""
    )
    para(f"prunes {WHERE[info.prune_point]}{debias}")
    flags = " ".join(f"--{name}" for name in info.options) or "none"
    variants = (
        f"; --variant {' | '.join(info.variants)} (default {info.variants[0]})" if info.variants else ""
    )
    query = f"; default --query {info.default_query}" if info.default_query else ""
    para(f"options: {flags}{query}{variants}")


def methods() -> None:
    """List the token-reduction methods, the debiasers and their hyperparameters with defaults."""
    from mlbcli.selection.params import default_text

    rows, debiasers = _method_catalog()
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))

    def para(text: str, first: str = INDENT) -> None:
        """`text` wrapped to the terminal, hanging under the name column."""
        typer.echo(
            textwrap.fill(text, width, initial_indent=first, subsequent_indent=INDENT, break_on_hyphens=False)
        )

    typer.echo("Methods (--method NAME, any case):\n")
    for row in rows:
        _method_lines(row, para)
        for hp in row.parameters:
            flag = f"--{hp.name.replace('_', '-')} {default_text(hp)}"  # e.g. "--dedup-threshold 0.9"
            first = f"{INDENT}{flag:26s}  "
            typer.echo(
                textwrap.fill(
                    hp.help, width, initial_indent=first, subsequent_indent=" " * 41, break_on_hyphens=False
                )
            )
    typer.echo("\nDebiasers (--debias LIST, attention methods only):\n")
    for name, description, parameters in debiasers:
        flags = ", ".join(f"--{hp.name.replace('_', '-')}" for hp in parameters)
        para(f"{description}{f' ({flags})' if flags else ''}.", first=f"{name:12s} ")
    typer.echo("")
    footer = (
        "Set a hyperparameter with its option (--dedup-threshold 0.8) or --param NAME=VALUE; one that the "
        "chosen method and debiasers do not read is an error."
    )
    typer.echo(textwrap.fill(footer, width))


# -- mlb show, mlb score -------------------------------------------------------------------------------------


def show(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="A results file written by mlb (.parquet, .jsonl, .csv).")
    ],
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            metavar="N",
            help="Rows to print (default: 20 in a table, all with --json; 0 = all).",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            "-c",
            metavar="LIST",
            help="Comma list of columns (default: the usual ones of the file's command; all with --json).",
        ),
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only the rows whose item failed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Print a results file as a table (answers, summaries, token statistics)."""
    from mlbcli.cli.show import show_file

    names = [name.strip() for name in columns.split(",") if name.strip()] if columns else None
    with usage_errors():
        show_file(file, limit=limit, columns=names, as_json=as_json, failed_only=failed)


SCORE_EPILOG = "Example: mlb score fastv.parquet visionzip.parquet --against none.parquet --by category --plot pareto.png"


def score(
    results: Annotated[
        list[str],
        typer.Argument(metavar="RESULTS...", help="Results files of `mlb answer` (.parquet, .jsonl, .csv)."),
    ],
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="BASELINE",
            help="A baseline results file: paired accuracy difference, McNemar p and flips on shared rows.",
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", metavar="COLUMN", help="Also score per value of this column (e.g. category)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON (a list of records) instead of a table.")
    ] = False,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot",
            metavar="FILE.png",
            help="Draw accuracy (95% CI) against FLOPs ratio, one point per file (needs matplotlib).",
        ),
    ] = None,
    samples: Annotated[
        str | None,
        typer.Option(
            "--lmms-eval-samples",
            metavar="DIR",
            help="Write per-sample JSONL in lmms-eval's samples format into DIR.",
        ),
    ] = None,
    grader: Annotated[
        str | None,
        typer.Option(
            "--grader",
            metavar="NAME",
            help="Whose verdict the headline accuracy is: lmms-eval or mlb (default: as the rows were graded; "
            "both are shown).",
        ),
    ] = None,
    rows_out: Annotated[
        str | None,
        typer.Option(
            "--rows",
            metavar="OUT.parquet",
            help="Write the graded rows (choice/correct of both graders added) to this Parquet file.",
        ),
    ] = None,
) -> None:
    """Accuracy of answer files with 95% confidence intervals (clustered by video), parse failures, mean
    realised keep and FLOPs ratio; with --against, a paired comparison against a baseline.

    Any predictions file (JSONL, CSV, Parquet with answer, ground_truth and optionally benchmark,
    question, options, category, video_id, question_id) and lmms-eval samples files are graded by both
    graders, lmms-eval's and mlb's. Benchmark runs are aggregated as the benchmark does (MLVU and
    MVBench: mean over the `category` column). Accuracies are percent in the table, fractions in --json.
    """
    from mlbcli.eval import score as scoring

    try:
        with usage_errors():
            scores, written = _grade_and_write(results, by, against, grader, rows_out, plot, samples)
    except MlbError as error:
        raise fail(error, 1) from None
    if as_json:
        typer.echo(scoring.to_json(scores, by, against))
    else:
        from rich.console import Console

        console = Console()
        for table in scoring.render_tables(scores, by, against):
            console.print(table)
    for path in [*([plot] if plot else []), *map(str, written)]:
        typer.echo(f"wrote {path}", err=True)


def _grade_and_write(
    results: list[str],
    by: str | None,
    against: str | None,
    grader: str | None,
    rows_out: str | None,
    plot: str | None,
    samples: str | None,
) -> tuple[list[Any], list[Any]]:
    """`mlb score`'s work before printing: the scores of `results`, and the files it wrote (--rows,
    --lmms-eval-samples; --plot is reported by its own path)."""
    from mlbcli.eval import score as scoring

    if rows_out and len(results) != 1:
        raise UsageError("--rows writes the graded rows of one file; give one RESULTS file")
    scores = scoring.score_files(results, by=by, against=against, grader=grader)
    written: list[Any] = []
    if rows_out:
        from mlbcli.eval.predictions import write_rows

        written.append(write_rows(scores[0].rows, rows_out))
    empty = [reason for reason in map(scoring.nothing_to_score, scores) if reason]
    if empty:
        raise MlbError("\nmlb: error: ".join(empty))
    if plot:
        scoring.plot(scores, plot, scoring.score_file(against, grader=grader) if against else None)
    written += scoring.write_lmms_eval_samples(scores, samples) if samples else []
    return scores, written


# -- mlb doctor ----------------------------------------------------------------------------------------------


def doctor(values: dict[str, Any]) -> None:
    """`mlb doctor` with its parsed option `values` (the table's options of "doctor": --verbose,
    --keep-files DIR, --model)."""
    setup_logging(values["verbose"])
    from mlbcli.cli.doctor import run_doctor

    ok = run_doctor(echo=typer.echo, keep_files=values["keep_files"] or False, model=values["model"])
    raise typer.Exit(0 if ok else 1)


# -- mlb report ----------------------------------------------------------------------------------------------
REPORT_EPILOG = "Example: mlb report fastv.parquet mlb.parquet --out report.html --focus wrong"


def report(
    results: Annotated[
        list[str],
        typer.Argument(metavar="RESULTS...", help="Results files of mlb (.parquet, .jsonl, .csv)."),
    ],
    out: Annotated[
        str, typer.Option("--out", "-o", metavar="FILE.html", help="The page to write (self-contained).")
    ] = "report.html",
    videos: Annotated[
        int, typer.Option("--videos", metavar="N", help="Videos shown in the gallery (frames re-decoded).")
    ] = 24,
    focus: Annotated[
        str, typer.Option("--focus", metavar="all|wrong", help="'wrong': wrong answers first in the gallery.")
    ] = "all",
) -> None:
    """One self-contained HTML page of runs: summaries, accuracy vs FLOPs, and per video what each method
    kept (pruned patches dimmed) and answered, side by side. Opens offline; safe to mail."""
    missing = [path for path in results if not Path(path).is_file()]
    if missing:
        typer.echo(f"mlb: error: no such results file: {', '.join(missing)}", err=True)
        raise typer.Exit(2)
    from mlbcli.report.html import render_report

    with usage_errors():
        try:
            summary = render_report(results, out, videos=videos, focus=focus.strip().lower())
        except ValueError as error:
            raise UsageError(str(error)) from None
    typer.echo(
        f"{out}: {summary.rows} rows, {summary.videos_shown} videos shown, "
        f"{summary.bytes / 1e6:.1f} MB, {summary.seconds:.1f} s",
        err=True,
    )
