"""The batch commands (`answer`, `compress`, `summarize`, `sample`): parsed options -> `ModelSpec` and
`RunOptions`, each built once -> the `mlbcli.api` function of the same name -> exit code.

Their options come from the table (`mlbcli.options.table`); here is only what the CLI adds to it:
`--batch-size auto`, the Ray flags that make one `RayOptions`, the device check before loading and the
method's registered spelling.
"""

from __future__ import annotations

import sys
from typing import Any

from mlbcli.cli.common import check_device, finish, make_reporter, method_name, method_params, setup_logging
from mlbcli.cli.declared import values_for
from mlbcli.errors import UsageError
from mlbcli.options.option import MODEL_COMMANDS

#: Epilogs and docstrings (the command's --help) of the batch commands.
EPILOGS = {
    "answer": "Example: mlb answer videos/ --question 'What is the person doing?' --keep 0.25",
    "compress": "Example: mlb compress videos/ --method uniform --keep 0.25 --out stats.parquet",
    "summarize": "Example (crontab): 0 2 * * * mlb summarize /srv/cams --out /srv/summaries.parquet -q",
    "sample": "Example: mlb sample videos/ --frames 16 --contact-sheet sheets/ --out frames.parquet",
}
DOCS = {
    "answer": """Answer questions about videos; one row per video x question (answers + token statistics).

    Multiple-choice items (manifest `options`) get the option-letter prompt, the parsed `choice`, and
    `correct` when the manifest has an `answer`; the final table then shows the accuracy of the whole
    output file. `--benchmark` renders prompts and grades as lmms-eval does for that benchmark; `mlb score`
    gives confidence intervals and paired comparisons.
    """,
    "compress": "Encode videos and reduce their visual tokens; per-video token statistics, no generation.",
    "summarize": "Summarise new or changed videos (safe to run from cron; concurrent runs do not collide).",
    "sample": "Decode videos and sample frames; one row per video with metadata and real timestamps.",
}
#: Commands that print their answers / summaries as a table after a short run on a terminal.
SHOWS_RESULTS = frozenset({"answer", "summarize"})


def model_spec(command: str, values: dict[str, Any]) -> Any:
    """The one `ModelSpec` of a model command, built here once and passed to the library as is."""
    from mlbcli.options import _model_spec

    spec = values_for(command, "spec", values)
    spec["params"] = method_params(values.get("param"), values.get("method_params"))
    spec["device"], spec["dtype"] = check_device(spec["device"], spec["dtype"])  # exit 2 before loading
    spec["method"] = method_name(spec["method"])
    return _model_spec(**spec)


def batch_size(value: str) -> int | None:
    """`--batch-size auto|N`: None = auto."""
    if value.strip().lower() == "auto":
        return None
    try:
        size = int(value)
    except ValueError:
        raise UsageError(f"--batch-size must be a positive integer or 'auto', got {value!r}") from None
    if size < 1:
        raise UsageError(f"--batch-size must be a positive integer or 'auto', got {value!r}")
    return size


def ray_options(values: dict[str, Any]) -> Any:
    """`RayOptions` for `--runner ray`; the Ray options with another runner are a usage error."""
    flags = {"--ray-address": "ray_address", "--gpus-per-worker": "gpus_per_worker"}
    flags["--workers-per-node"] = "workers_per_node"
    given = [flag for flag, name in flags.items() if values.get(name) is not None]
    if values.get("runner", "local").strip().lower() != "ray":
        if given:
            raise UsageError(f"{', '.join(given)} apply to --runner ray")
        return None
    from mlbcli.runners.ray_options import RayOptions

    return RayOptions(
        address=values["ray_address"],
        gpus_per_worker=values["gpus_per_worker"],
        workers_per_node=values["workers_per_node"] or 1,
        quiet=bool(values.get("quiet")),
    )


def run_options(command: str, values: dict[str, Any]) -> Any:
    """The one `RunOptions` of a batch command (its own checks: `RunOptions.__post_init__`)."""
    from mlbcli.options import RunOptions

    run = values_for(command, "run", values)
    if "batch_size" in run:
        run["batch_size"] = batch_size(run["batch_size"])
    if "runner" in run:
        run["runner"] = run["runner"].strip().lower()
        run["ray"] = ray_options(values)
    return RunOptions(**run)


def run_batch(command: str, values: dict[str, Any]) -> None:
    """Run batch command `command` with its parsed option `values`, and exit with the contract's code."""
    setup_logging(values["verbose"])

    def call() -> tuple[Any, Any]:
        from mlbcli import api

        reporter = make_reporter(values["quiet"])
        spec = {"spec": model_spec(command, values)} if command in MODEL_COMMANDS else {}
        keywords = {
            name: value for name, value in values_for(command, "call", values).items() if value is not None
        }
        function = getattr(api, command)
        summary = function(
            **keywords,  # sources, question...; None = the API's own default (summary prompt...)
            **spec,
            run=run_options(command, values),
            reporter=reporter,
            stdin=sys.stdin,
        )
        return summary, reporter

    finish(call, show_results=command in SHOWS_RESULTS)
