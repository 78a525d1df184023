"""The `mlb` command line: a thin layer over `mlbcli.api`.

Every command turns flags into API arguments, calls the API function, and maps the result to an exit
code: 0 all items succeeded, 1 some items failed (their rows carry `error`), 2 usage error. The batch
commands' options are declared once in `mlbcli.options.table` (`cli.declared` makes them typer options);
heavy imports (torch, transformers, decoders) happen inside the commands so `mlb --help` starts instantly.
"""

from __future__ import annotations

import functools
from typing import Annotated

import typer

from mlbcli import __version__
from mlbcli.cli import manifest as manifest_cli
from mlbcli.cli import tools
from mlbcli.cli.declared import Command, Group, MethodCommand, declared_command
from mlbcli.cli.run_commands import DOCS, EPILOGS, run_batch

# Every example fits in 80 columns, so `mlb --help` never wraps one mid-command (a test checks).
EXAMPLES = """\
  # answer one question about every video of a folder, 25% of the tokens kept
  mlb answer videos/ --question 'What is the person doing?' --keep 0.25

  # paths on stdin, JSON lines on stdout
  find /data -name '*.mp4' | mlb answer - --question 'Who?' --out - | jq .answer

  # a manifest: per-row questions, options and ground truth (accuracy)
  mlb answer bench.jsonl --method fastv --keep 0.25 --out answers.parquet

  # nightly (cron): only new or changed videos
  mlb summarize /srv/cams --out summaries.parquet -q

  mlb show answers.parquet        # the results as a table
  mlb report a.parquet b.parquet  # one HTML page: what runs kept, answered
  mlb methods                     # methods, debiasers, hyperparameters
  mlb doctor                      # offline self-check of the install"""

app = typer.Typer(
    name="mlb",
    help=(
        "Answer questions about many videos with a Video LLM, cheaply: visual tokens are pruned inside "
        "the model with attention debiasing.\n\n"
        "Examples:\n\n" + EXAMPLES
    ),
    cls=Group,
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlb {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """mlb: batch video QA with attention-debiased visual-token pruning."""


# -- the commands, in `mlb --help` order ---------------------------------------------------------------------
for _name in ("answer", "compress", "summarize", "sample"):
    app.command(_name, cls=MethodCommand if _name != "sample" else Command, epilog=EPILOGS[_name])(
        declared_command(_name, functools.partial(run_batch, _name), DOCS[_name])
    )
app.command("flops", cls=MethodCommand, epilog=tools.FLOPS_EPILOG)(
    declared_command("flops", tools.flops, tools.FLOPS_DOC)
)
app.command()(tools.methods)
app.command(cls=Command, epilog="Example: mlb show answers.parquet --columns video_id,answer --limit 5")(
    tools.show
)
app.command(cls=Command, epilog=tools.SCORE_EPILOG)(tools.score)
app.command(cls=Command, epilog=tools.REPORT_EPILOG)(tools.report)
app.command(cls=Command, epilog=manifest_cli.MANIFEST_EPILOG)(manifest_cli.manifest)
app.command()(
    declared_command(
        "doctor",
        tools.doctor,
        "Offline self-check: versions, devices, and the full pipeline on a tiny random model and clip.",
    )
)


def main() -> None:
    from mlbcli.runners.signals import stop_on_signals

    # SIGTERM and SIGHUP stop a run like Ctrl-C (finished rows committed) and exit 128 + the signal.
    with stop_on_signals(exit_status=True):
        app()


if __name__ == "__main__":
    main()
