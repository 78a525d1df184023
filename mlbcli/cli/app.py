"""The `mlb` command line: a thin layer over `mlbcli.api`.

Every command turns flags into API arguments, calls the API function, and maps the result to an exit
code: 0 all items succeeded, 1 some items failed (their rows carry `error`), 2 usage error. Heavy
imports (torch, transformers, decoders) happen inside the commands so `mlb --help` starts instantly.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer
from rich.markup import escape

from mlbcli import __version__
from mlbcli.errors import MlbError, OutputLockedError, UsageError
from mlbcli.eval.benchmarks import BENCHMARKS

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"  # same as mlbcli.models.DEFAULT_MODEL

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
  mlb methods                     # methods, debiasers, hyperparameters
  mlb doctor                      # offline self-check of the install"""

# -- help panels (`answer --help` groups its options under these titles) ----------------------------------
INPUT, MODEL, PRUNING, HYPER, OUTPUT, RUN = (
    "Input",
    "Model",
    "Pruning",
    "Method hyperparameters (see `mlb methods`)",
    "Output",
    "Run",
)


def _plain_help_names(params: list[Any]) -> list[Any]:
    """Help that reads like other tools': `SOURCE...` rather than typer's `{sources}...` in the usage
    line and `sources... <list[str]>` in the table, and no `<bool>` after flags."""
    for param in params:
        if isinstance(param, typer.core.TyperArgument) and param.metavar:
            usage = param.metavar if param.required else f"[{param.metavar}]"
            setattr(param, "_usage_display_name", lambda usage=usage: usage)  # noqa: B010 (typer private)
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010
        elif getattr(param, "is_flag", False):
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010
    return params


class Command(typer.core.TyperCommand):
    """A command with plain names in its help (`_plain_help_names`) and its docstring's paragraphs
    reflowed (typer's rich help would keep the source's line breaks)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            paragraphs = inspect.cleandoc(self.help).split("\n\n")
            self.help = "\n\n".join(" ".join(p.split("\n")) for p in paragraphs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help_names(super().get_params(ctx))


class Group(typer.core.TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help_names(super().get_params(ctx))


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


def _complete_method(incomplete: str) -> list[str]:
    """Shell completion of --method (no torch: the names come from the catalog)."""
    from mlbcli.selection import method_names

    return [name for name in method_names() if name.startswith(incomplete.lower())]


# -- shared option types ---------------------------------------------------------------------------------
Sources = Annotated[
    list[str],
    typer.Argument(
        help="Video files, folders (recursive), manifests (.jsonl/.csv/.parquet) or '-' for paths on stdin.",
        show_default=False,
        metavar="SOURCE...",
    ),
]
Question = Annotated[
    str | None,
    typer.Option(
        "--question", metavar="TEXT", help="Question for items that carry none.", rich_help_panel=INPUT
    ),
]
Model = Annotated[
    str,
    typer.Option(
        "--model",
        envvar="MLB_MODEL",
        metavar="ID|PATH",
        help="Hub id or local checkpoint folder.",
        rich_help_panel=MODEL,
    ),
]
Method = Annotated[
    str,
    typer.Option(
        "--method",
        metavar="NAME",
        help="Token-reduction method, e.g. fastv, adatp, mlb, uniform (see `mlb methods`).",
        autocompletion=_complete_method,
        rich_help_panel=PRUNING,
    ),
]
# --keep/--layer/--query/--variant/--positions default to None ("not given"): the method resolves its
# own default, and one given to a method that does not use it is an error (one rule, in the library).
Keep = Annotated[
    float | None,
    typer.Option(
        "--keep",
        metavar="FRACTION",
        help="Fraction of visual tokens kept past the pruning point, 0 < keep <= 1 (default 1.0 = no "
        "pruning). A method that cannot meet it says why in the keep_note column.",
        show_default=False,
        rich_help_panel=PRUNING,
    ),
]
Layer = Annotated[
    int | None,
    typer.Option(
        "--layer",
        metavar="K",
        help="Attention methods: prune before decoder layer K, scored by the attention of layer K-1 "
        "(default 2).",
        show_default=False,
        rich_help_panel=PRUNING,
    ),
]
Query = Annotated[
    str | None,
    typer.Option(
        "--query",
        metavar="question|last",
        help="Attention probe rows: 'question' (all question tokens) or 'last' (last prompt token). "
        "Default: last for fastv (FastV's own), question for adatp and mlb.",
        show_default=False,
        rich_help_panel=PRUNING,
    ),
]
Variant = Annotated[
    str | None,
    typer.Option(
        "--variant",
        metavar="NAME",
        help="Reading of a peer method: 'paper' (default) or 'official' (the peer's code) for visionzip, "
        "dycoke, slowfast; 'budget' (default) or 'paper' (fixed layout, no --keep) for mlb.",
        show_default=False,
        rich_help_panel=PRUNING,
    ),
]
Positions = Annotated[
    str | None,
    typer.Option(
        "--positions",
        metavar="original|contiguous",
        help="Position ids of tokens kept before the LLM: 'original' (default) or 'contiguous' "
        "(re-sequenced, as peers that concatenate; default of --variant official).",
        show_default=False,
        rich_help_panel=PRUNING,
    ),
]
StrictKeep = Annotated[
    bool,
    typer.Option(
        "--strict-keep",
        help="A row whose method could not meet --keep (keep_note) becomes an error row.",
        rich_help_panel=PRUNING,
    ),
]
Debias = Annotated[
    str | None,
    typer.Option(
        "--debias",
        metavar="LIST",
        help="Comma list of debiasers overriding the method's default (global, local, grid, tail, none).",
        rich_help_panel=PRUNING,
    ),
]
Param = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        metavar="NAME=VALUE",
        help="Method hyperparameter (repeatable), the same as its own option below.",
        rich_help_panel=HYPER,
    ),
]
Frames = Annotated[
    int | None,
    typer.Option(
        "--frames",
        metavar="N",
        help="Frames sampled uniformly per video, first and last included (default: the model's usual, 32 "
        "for LLaVA-OneVision; Qwen takes them in pairs).",
        rich_help_panel=INPUT,
    ),
]
Fps = Annotated[
    float | None,
    typer.Option(
        "--fps",
        metavar="RATE",
        help="Sample duration x RATE frames instead, spread over the whole clip (capped by --frames).",
        rich_help_panel=INPUT,
    ),
]
MaxNew = Annotated[
    int,
    typer.Option("--max-new-tokens", metavar="N", help="Generation limit per answer.", rich_help_panel=MODEL),
]
BENCHMARK_NAMES = tuple(BENCHMARKS)
Benchmark = Annotated[
    str | None,
    typer.Option(
        "--benchmark",
        metavar="NAME",
        help=(
            "Grade like lmms-eval's task: its prompt, post-prompt and option layout, its policy for "
            f"unparsable replies and its aggregation ({', '.join(BENCHMARK_NAMES)}); "
            "default: the generic multiple-choice prompt."
        ),
        rich_help_panel=INPUT,
        autocompletion=lambda incomplete: [n for n in BENCHMARK_NAMES if n.startswith(incomplete.lower())],
    ),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="DEVICE",
        help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.",
        rich_help_panel=MODEL,
    ),
]
Dtype = Annotated[
    str,
    typer.Option(
        "--dtype",
        metavar="DTYPE",
        help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16.",
        rich_help_panel=MODEL,
    ),
]


def _out(default: str) -> Any:
    """The --out option of a command whose default output is `default`."""
    return Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            help=escape(
                f"Output file (.parquet, .jsonl, .csv), or '-' for JSON lines on stdout. [default: {default}]"
            ),
            show_default=False,
            rich_help_panel=OUTPUT,
        ),
    ]


if TYPE_CHECKING:  # the same type for mypy; typer reads the Annotated metadata at run time
    AnswerOut: TypeAlias = str | None
    CompressOut: TypeAlias = str | None
    SummarizeOut: TypeAlias = str | None
    SampleOut: TypeAlias = str | None
else:
    AnswerOut, CompressOut, SummarizeOut, SampleOut = (
        _out(f"{kind}.parquet") for kind in ("answer", "compress", "summarize", "sample")
    )
Format = Annotated[
    str | None,
    typer.Option(
        "--format",
        metavar="parquet|jsonl|csv",
        help="Output format (default: from the --out suffix).",
        rich_help_panel=OUTPUT,
    ),
]
Resume = Annotated[
    bool, typer.Option("--resume/--no-resume", help="Skip items already in --out.", rich_help_panel=OUTPUT)
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace --out instead of resuming it.", rich_help_panel=OUTPUT)
]
FailFast = Annotated[
    bool, typer.Option("--fail-fast", help="Stop at the first failed item.", rich_help_panel=RUN)
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="No progress: print only failed items and the final line (cron).",
        rich_help_panel=RUN,
    ),
]
Verbose = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Debug logging, decoder messages included.", rich_help_panel=RUN),
]
Seed = Annotated[
    int, typer.Option("--seed", metavar="N", help="Seed for stochastic methods.", rich_help_panel=PRUNING)
]
MinPixels = Annotated[
    int | None,
    typer.Option(
        "--min-pixels",
        metavar="N",
        help="Qwen2-VL family: lower bound on the pixels per frame after resizing (checkpoint default).",
        rich_help_panel=MODEL,
    ),
]
MaxPixels = Annotated[
    int | None,
    typer.Option(
        "--max-pixels",
        metavar="N",
        help="Qwen2-VL family: upper bound on the pixels per frame after resizing (checkpoint default).",
        rich_help_panel=MODEL,
    ),
]
TemporalSpacing = Annotated[
    str | None,
    typer.Option(
        "--temporal-spacing",
        metavar="reference|exact",
        help="Qwen2.5-VL / Qwen3-VL: time between temporal patches as the official processors compute it "
        "('reference', default: 2N/(k*fps) for k of N frames, frame times index/fps) or from the "
        "container's real frame times ('exact').",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]
NumShards = Annotated[
    int,
    typer.Option(
        "--num-shards",
        metavar="N",
        help="Split the videos into this many shards "
        "(one process per GPU or array task; each writes its own --out).",
        rich_help_panel=RUN,
    ),
]
ShardIndex = Annotated[
    int,
    typer.Option(
        "--shard-index", metavar="I", help="The shard this process takes, 0-based.", rich_help_panel=RUN
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers", metavar="N", help="Background decode processes (0 = inline).", rich_help_panel=RUN
    ),
]
RunnerName = Annotated[
    str,
    typer.Option(
        "--runner",
        metavar="local|ray",
        help="Where the model work runs: this process, or Ray Data (decode tasks + a model actor pool; "
        "needs pip install 'mlbcli[ray]').",
        rich_help_panel=RUN,
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray instance). --runner ray only.",
        rich_help_panel=RUN,
    ),
]
GpusPerWorker = Annotated[
    float | None,
    typer.Option(
        "--gpus-per-worker",
        metavar="N",
        help="GPUs per model actor (default: 1 when the cluster has GPUs, else 0). --runner ray only.",
        rich_help_panel=RUN,
    ),
]
WorkersPerNode = Annotated[
    int | None,
    typer.Option(
        "--workers-per-node",
        metavar="N",
        help="Model actors per node (default 1). --runner ray only.",
        rich_help_panel=RUN,
    ),
]
BatchSize = Annotated[
    str,
    typer.Option(
        "--batch-size",
        metavar="N|auto",
        help="Video x question items per model batch (vision tower, prefill and decode together); "
        "auto = 1 on CPU, on CUDA the largest that fits (halved on out-of-memory).",
        rich_help_panel=RUN,
    ),
]
Timeout = Annotated[
    float,
    typer.Option(
        "--decode-timeout",
        metavar="SECONDS",
        help="Abandon a video whose decode takes longer than this many seconds.",
        rich_help_panel=RUN,
    ),
]


def with_method_parameters(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one named option per method hyperparameter (`--dedup-threshold`...).

    The options are generated from the one registry (`mlbcli.selection.params.HYPERPARAMETERS`), so a
    new hyperparameter appears in every command's --help with its default and the methods it applies
    to. The command receives the given ones (None = not given) as `method_params`.
    """
    from mlbcli.selection.catalog import default_text
    from mlbcli.selection.params import HYPERPARAMETERS

    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "method_params"]
    extra = []
    for name, hp in HYPERPARAMETERS.items():
        text = hp.help.removeprefix(f"{hp.methods[0]}: ")  # "[visionzip] visionzip: ..." says it twice
        flag = f"--{name.replace('_', '-')}"
        option = typer.Option(
            f"{flag}/--no-{flag[2:]}" if hp.type is bool else flag,  # a switch: --dycoke-kv/--no-dycoke-kv
            metavar=hp.type.__name__.upper(),
            show_default=False,
            # (escaped: typer's rich help would read "[global, adatp]" as a style tag)
            help=escape(f"[{', '.join(hp.methods)}] {text} [default: {default_text(hp)}]"),
            rich_help_panel=HYPER,
        )
        extra.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[hp.type | None, option],
            )
        )  # noqa: UP045

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in HYPERPARAMETERS if name in kwargs}
        return command(*args, **kwargs, method_params=given)

    wrapper.__signature__ = signature.replace(parameters=kept + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {}
    return wrapper


class _LogFormatter(logging.Formatter):
    """Warnings and errors in the CLI's own style (`mlb: warning: ...`); debug lines name their logger."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno < logging.WARNING:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"mlb: {record.levelname.lower()}: {message}"
        return f"{record.levelname} {record.name}: {message}"


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING  # progress lines come from the reporter
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    if not verbose:
        # transformers/hub chatter (progress bars, advisory warnings) is noise for batch users.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        for name in ("transformers", "huggingface_hub", "urllib3", "filelock"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _reporter(quiet: bool) -> Any:
    """The progress reporter for stderr, wrapped to keep the first rows (the answers table)."""
    from mlbcli.cli.show import CollectingReporter
    from mlbcli.runners.progress import PlainReporter, RichReporter

    inner = RichReporter(quiet=quiet) if sys.stderr.isatty() else PlainReporter(quiet=quiet)
    return CollectingReporter(inner)


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


DTYPES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16")  # = models.resolve_dtype


def _check_device(device: str, dtype: str) -> tuple[str, str]:
    """(device, dtype), lower-cased, or a one-line `UsageError` before anything loads.

    CUDA and MPS are checked only when asked for (importing torch costs seconds; those commands need
    it anyway): a CPU-only torch build, no visible GPU, or `cuda:N` beyond the last GPU.
    """
    device, dtype = device.strip().lower(), dtype.strip().lower()
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    kind, colon, index = device.partition(":")
    valid = device in ("auto", "cpu", "mps", "cuda") or (kind == "cuda" and colon and index.isdigit())
    if not valid:
        hint = " (for an NVIDIA GPU: --device cuda)" if kind in ("gpu", "nvidia") else ""
        raise UsageError(f"unknown --device {device!r}; choose auto, cpu, cuda, cuda:N or mps{hint}")
    if kind == "cuda":
        import torch

        if not torch.backends.cuda.is_built():
            raise UsageError(
                f"--device {device}: this torch ({torch.__version__}) was built without CUDA; "
                "install a CUDA build of torch, or use --device cpu"
            )
        count = torch.cuda.device_count()
        if count == 0:
            raise UsageError(
                f"--device {device}: no CUDA device is visible (see nvidia-smi, CUDA_VISIBLE_DEVICES); "
                "use --device cpu"
            )
        if index and int(index) >= count:
            raise UsageError(f"--device {device}: there are {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    if kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise UsageError("--device mps: MPS is not available on this machine; use --device cpu")
    return device, dtype


def _method_name(name: str) -> str:
    """The registered spelling of --method (case-insensitive; a typo gets a did-you-mean), no torch."""
    from mlbcli.selection import canonical_method_name

    return canonical_method_name(name)


def _model_spec(
    model,
    method,
    keep,
    layer,
    query,
    debias,
    params,
    frames,
    fps,
    device,
    dtype,
    seed,
    min_pixels,
    max_pixels,
    **pruning: Any,
) -> Any:
    """The one `ModelSpec` of a model command, built here once and passed to the library as is.
    `pruning`: variant, positions, strict_keep, temporal_spacing."""
    from mlbcli.options import _model_spec as build

    device, dtype = _check_device(device, dtype)  # one line, exit 2, before the model loads
    return build(
        **pruning,
        model=model,
        method=_method_name(method),
        keep=keep,
        layer=layer,
        query=query,
        debias=debias,
        params=params,
        frames=frames,
        fps=fps,
        device=device,
        dtype=dtype,
        seed=seed,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )


def _batch_size(value: str) -> int | None:
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


def _ray_options(runner: str, address: str | None, gpus: float | None, per_node: int | None) -> Any:
    """`RayOptions` for `--runner ray`; the Ray options with another runner are a usage error."""
    runner = runner.strip().lower()
    given = [
        flag
        for flag, value in (
            ("--ray-address", address),
            ("--gpus-per-worker", gpus),
            ("--workers-per-node", per_node),
        )
        if value is not None
    ]
    if runner != "ray":
        if given:
            raise UsageError(f"{', '.join(given)} apply to --runner ray")
        return None
    from mlbcli.runners.ray import RayOptions

    return RayOptions(address=address, gpus_per_worker=gpus, workers_per_node=per_node or 1)


def _run_options(
    out,
    fmt,
    resume,
    overwrite,
    fail_fast,
    workers,
    timeout,
    num_shards=1,
    shard_index=0,
    batch_size="auto",
    ray=("local", None, None, None),
) -> Any:
    from mlbcli.options import RunOptions

    if fmt is not None and fmt not in ("parquet", "jsonl", "csv"):
        raise UsageError(f"--format must be parquet, jsonl or csv, not {fmt!r}")
    if workers < 0:
        raise UsageError("--workers must be >= 0")
    if not timeout > 0:
        raise UsageError(f"--decode-timeout must be > 0 seconds, got {timeout}")
    return RunOptions(
        out=out,
        fmt=fmt,
        resume=resume,
        overwrite=overwrite,
        fail_fast=fail_fast,
        workers=workers,
        decode_timeout_s=timeout,
        num_shards=num_shards,
        shard_index=shard_index,
        batch_size=_batch_size(batch_size),
        runner=ray[0].strip().lower(),
        ray=_ray_options(*ray),
    )


def _params(values: list[str] | None, named: dict[str, Any] | None = None) -> dict[str, Any]:
    """Method hyperparameters from the named options and repeatable `--param NAME=VALUE`."""
    import json

    params: dict[str, Any] = {k: v for k, v in (named or {}).items() if v is not None}
    for value in values or []:
        name, sep, raw = value.partition("=")
        if not sep or not name:
            raise UsageError(f"--param expects NAME=VALUE, got {value!r}")
        try:
            params[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[name.strip()] = raw
    return params


LOCKED_HINT = "wait for it to finish (or stop it), or write to another --out"


def _finish(call: Any, show_results: bool = False) -> None:
    """Run an API call and exit with the contract's code.

    `show_results`: after a short run with output in a file, print what it produced (answers,
    summaries) as a table on stdout, when stdout is a terminal.
    """
    try:
        summary, reporter = call()
    except UsageError as error:
        typer.echo(f"mlb: error: {error}", err=True)
        raise typer.Exit(2) from None
    except OutputLockedError as error:
        typer.echo(f"mlb: error: {error}; {LOCKED_HINT}", err=True)
        raise typer.Exit(1) from None
    except MlbError as error:
        typer.echo(f"mlb: error: {error}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM/SIGHUP via mlbcli.runners.signals (see main)
        import contextlib

        from mlbcli.runners.signals import exit_code_of, reason_of

        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone; the status tells
            typer.echo(f"mlb: {reason_of(interrupt)}; finished rows are saved, rerun to resume", err=True)
        raise typer.Exit(exit_code_of(interrupt)) from None
    if show_results and summary.out != "-" and not reporter.inner.quiet and _stdout_is_terminal():
        from mlbcli.cli.show import print_run_results

        print_run_results(summary.kind, reporter.rows)
    raise typer.Exit(1 if summary.failed else 0)


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


@app.command(
    cls=Command, epilog="Example: mlb answer videos/ --question 'What is the person doing?' --keep 0.25"
)
@with_method_parameters
def answer(
    sources: Sources,
    question: Question = None,
    model: Model = DEFAULT_MODEL,
    method: Method = "none",
    keep: Keep = None,
    layer: Layer = None,
    query: Query = None,
    variant: Variant = None,
    positions: Positions = None,
    strict_keep: StrictKeep = False,
    debias: Debias = None,
    param: Param = None,
    frames: Frames = None,
    fps: Fps = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-new-tokens",
            metavar="N",
            help="Generation limit per answer [default: 32; with --benchmark, the benchmark's].",
            show_default=False,
            rich_help_panel=MODEL,
        ),
    ] = None,
    benchmark: Benchmark = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    temporal_spacing: TemporalSpacing = None,
    out: AnswerOut = None,
    format: Format = None,
    resume: Resume = True,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    seed: Seed = 0,
    tokens: Annotated[
        str | None,
        typer.Option(
            "--tokens",
            metavar="FOLDER",
            rich_help_panel=INPUT,
            help="Folder of tokens saved by `compress --save-tokens`: those videos skip decode and encode.",
        ),
    ] = None,
    workers: Workers = 2,
    decode_timeout: Timeout = 120.0,
    batch_size: BatchSize = "auto",
    runner: RunnerName = "local",
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = None,
    workers_per_node: WorkersPerNode = None,
    num_shards: NumShards = 1,
    shard_index: ShardIndex = 0,
    method_params: dict[str, Any] | None = None,
) -> None:
    """Answer questions about videos; one row per video x question (answers + token statistics).

    Multiple-choice items (manifest `options`) get the option-letter prompt, the parsed `choice`, and
    `correct` when the manifest has an `answer`; the final table then shows the accuracy of the whole
    output file. `--benchmark` renders prompts and grades as lmms-eval does for that benchmark; `mlb score`
    gives confidence intervals and paired comparisons.
    """
    _setup_logging(verbose)

    def call():
        from mlbcli import api

        reporter = _reporter(quiet)
        summary = api.answer(
            sources,
            question=question,
            spec=_model_spec(
                model,
                method,
                keep,
                layer,
                query,
                debias,
                _params(param, method_params),
                frames,
                fps,
                device,
                dtype,
                seed,
                min_pixels,
                max_pixels,
                variant=variant,
                positions=positions,
                strict_keep=strict_keep,
                temporal_spacing=temporal_spacing,
            ),
            max_new_tokens=max_new_tokens,
            benchmark=benchmark,
            tokens=tokens,
            run=_run_options(
                out,
                format,
                resume,
                overwrite,
                fail_fast,
                workers,
                decode_timeout,
                num_shards,
                shard_index,
                batch_size,
                (runner, ray_address, gpus_per_worker, workers_per_node),
            ),
            reporter=reporter,
            stdin=sys.stdin,
        )
        return summary, reporter

    _finish(call, show_results=True)


@app.command(
    cls=Command, epilog="Example: mlb compress videos/ --method uniform --keep 0.25 --out stats.parquet"
)
@with_method_parameters
def compress(
    sources: Sources,
    question: Question = None,
    model: Model = DEFAULT_MODEL,
    method: Method = "none",
    keep: Keep = None,
    layer: Layer = None,
    query: Query = None,
    variant: Variant = None,
    positions: Positions = None,
    strict_keep: StrictKeep = False,
    debias: Debias = None,
    param: Param = None,
    frames: Frames = None,
    fps: Fps = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    temporal_spacing: TemporalSpacing = None,
    save_tokens: Annotated[
        str | None,
        typer.Option(
            "--save-tokens",
            metavar="FOLDER",
            help="Folder to store each video's encoded visual tokens (safetensors).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    bias_report: Annotated[
        str | None,
        typer.Option(
            "--bias-report",
            metavar="FOLDER",
            help="Folder for per-video attention bias plots (PNG).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    out: CompressOut = None,
    format: Format = None,
    resume: Resume = True,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    seed: Seed = 0,
    workers: Workers = 2,
    decode_timeout: Timeout = 120.0,
    batch_size: BatchSize = "auto",
    runner: RunnerName = "local",
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = None,
    workers_per_node: WorkersPerNode = None,
    num_shards: NumShards = 1,
    shard_index: ShardIndex = 0,
    method_params: dict[str, Any] | None = None,
) -> None:
    """Encode videos and reduce their visual tokens; per-video token statistics, no generation."""
    _setup_logging(verbose)

    def call():
        from mlbcli import api

        reporter = _reporter(quiet)
        summary = api.compress(
            sources,
            question=question,
            spec=_model_spec(
                model,
                method,
                keep,
                layer,
                query,
                debias,
                _params(param, method_params),
                frames,
                fps,
                device,
                dtype,
                seed,
                min_pixels,
                max_pixels,
                variant=variant,
                positions=positions,
                strict_keep=strict_keep,
                temporal_spacing=temporal_spacing,
            ),
            save_tokens=save_tokens,
            bias_report=bias_report,
            run=_run_options(
                out,
                format,
                resume,
                overwrite,
                fail_fast,
                workers,
                decode_timeout,
                num_shards,
                shard_index,
                batch_size,
                (runner, ray_address, gpus_per_worker, workers_per_node),
            ),
            reporter=reporter,
            stdin=sys.stdin,
        )
        return summary, reporter

    _finish(call)


@app.command(
    cls=Command, epilog="Example (crontab): 0 2 * * * mlb summarize /srv/cams --out /srv/summaries.parquet -q"
)
@with_method_parameters
def summarize(
    sources: Sources,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            metavar="TEXT",
            help="Summary prompt (default: 'Describe what happens in this video in a few sentences.').",
            rich_help_panel=INPUT,
        ),
    ] = None,
    model: Model = DEFAULT_MODEL,
    method: Method = "none",
    keep: Keep = None,
    layer: Layer = None,
    query: Query = None,
    variant: Variant = None,
    positions: Positions = None,
    strict_keep: StrictKeep = False,
    debias: Debias = None,
    param: Param = None,
    frames: Frames = None,
    fps: Fps = None,
    max_new_tokens: MaxNew = 96,
    device: Device = "auto",
    dtype: Dtype = "auto",
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    temporal_spacing: TemporalSpacing = None,
    out: SummarizeOut = None,
    format: Format = None,
    resume: Resume = True,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    seed: Seed = 0,
    workers: Workers = 2,
    decode_timeout: Timeout = 120.0,
    batch_size: BatchSize = "auto",
    runner: RunnerName = "local",
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = None,
    workers_per_node: WorkersPerNode = None,
    num_shards: NumShards = 1,
    shard_index: ShardIndex = 0,
    method_params: dict[str, Any] | None = None,
) -> None:
    """Summarise new or changed videos (safe to run from cron; concurrent runs do not collide)."""
    _setup_logging(verbose)

    def call():
        from mlbcli import api

        kwargs = {"prompt": prompt} if prompt is not None else {}
        reporter = _reporter(quiet)
        summary = api.summarize(
            sources,
            spec=_model_spec(
                model,
                method,
                keep,
                layer,
                query,
                debias,
                _params(param, method_params),
                frames,
                fps,
                device,
                dtype,
                seed,
                min_pixels,
                max_pixels,
                variant=variant,
                positions=positions,
                strict_keep=strict_keep,
                temporal_spacing=temporal_spacing,
            ),
            max_new_tokens=max_new_tokens,
            run=_run_options(
                out,
                format,
                resume,
                overwrite,
                fail_fast,
                workers,
                decode_timeout,
                num_shards,
                shard_index,
                batch_size,
                (runner, ray_address, gpus_per_worker, workers_per_node),
            ),
            reporter=reporter,
            stdin=sys.stdin,
            **kwargs,
        )
        return summary, reporter

    _finish(call, show_results=True)


@app.command(
    cls=Command, epilog="Example: mlb sample videos/ --frames 16 --contact-sheet sheets/ --out frames.parquet"
)
def sample(
    sources: Sources,
    frames: Annotated[
        int | None,
        typer.Option(
            "--frames",
            metavar="N",
            help="Frames sampled uniformly per video (default: 32).",
            rich_help_panel=INPUT,
        ),
    ] = None,
    fps: Fps = None,
    contact_sheet: Annotated[
        str | None,
        typer.Option(
            "--contact-sheet",
            metavar="FOLDER",
            help="Folder for one image per video with the sampled frames in a grid.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    out: SampleOut = None,
    format: Format = None,
    resume: Resume = True,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    workers: Workers = 2,
    decode_timeout: Timeout = 120.0,
    num_shards: NumShards = 1,
    shard_index: ShardIndex = 0,
) -> None:
    """Decode videos and sample frames; one row per video with metadata and real timestamps."""
    _setup_logging(verbose)

    def call():
        from mlbcli import api

        reporter = _reporter(quiet)
        summary = api.sample(
            sources,
            frames=frames,
            fps=fps,
            contact_sheet=contact_sheet,
            run=_run_options(
                out,
                format,
                resume,
                overwrite,
                fail_fast,
                workers,
                decode_timeout,
                num_shards,
                shard_index,
            ),
            reporter=reporter,
            stdin=sys.stdin,
        )
        return summary, reporter

    _finish(call)


@app.command(
    cls=Command,
    epilog="Example: mlb flops --model llava-hf/llava-onevision-qwen2-7b-ov-hf --frames 32 "
    "--method fastv --keep 0.25 --layer 2",
)
@with_method_parameters
def flops(
    model: Model = DEFAULT_MODEL,
    method: Method = "none",
    keep: Keep = None,
    layer: Layer = None,
    query: Query = None,
    variant: Variant = None,
    positions: Positions = None,
    frames: Frames = None,
    debias: Debias = None,
    param: Param = None,
    method_params: dict[str, Any] | None = None,
) -> None:
    """Visual-token LLM FLOPs of a method and its ratio to the unpruned model, from the config alone.

    Convention of FastV/FastVID/LLaVA-MLB (one multiply-accumulate = one FLOP, visual tokens only), so
    the numbers compare with published tables. No weights are loaded.
    """
    _setup_logging(False)
    try:
        from mlbcli import api

        plan = api.flops(
            model=model,
            method=_method_name(method),
            keep=keep,
            layer=layer,
            query=query,
            variant=variant,
            positions=positions,
            frames=frames,
            debias=debias,
            params=_params(param, method_params),
        )
    except UsageError as error:
        typer.echo(f"mlb: error: {error}", err=True)
        raise typer.Exit(2) from None
    cuts = sorted(
        {(i, n) for i, n in enumerate(plan.tokens_per_layer) if i == 0 or n != plan.tokens_per_layer[i - 1]}
    )
    typer.echo(f"model          {plan.model} ({plan.family})")
    typer.echo(f"frames         {plan.frames} -> {plan.visual_tokens} visual tokens")
    typer.echo(f"method         {plan.method}, keep {1.0 if keep is None else keep}")
    typer.echo("tokens         " + ", ".join(f"{n} from layer {i}" for i, n in cuts))
    typer.echo(f"vanilla        {plan.flops_vanilla / 1e12:.2f} TFLOPs")
    typer.echo(f"{plan.method:14s} {plan.flops / 1e12:.2f} TFLOPs")
    typer.echo(f"ratio          {plan.ratio:.4f}")
    if plan.probe_passes:
        sizes = sorted({count for count, _ in plan.probe_passes}, reverse=True)
        typer.echo(
            f"probe passes   +{plan.flops_probes / 1e12:.2f} TFLOPs ({len(plan.probe_passes)} segment probes "
            f"of {'/'.join(map(str, sizes))} visual tokens x {plan.probe_passes[0][1]} layers, not in the ratio)"
        )
        typer.echo(f"with probes    {plan.probe_ratio:.4f} (flops_probe_ratio)")


@app.command()
def methods() -> None:
    """List the token-reduction methods, the debiasers and their hyperparameters with defaults."""
    import shutil
    import textwrap

    from mlbcli.selection.catalog import BUILTIN_METHODS, DEBIASERS, default_text, hyperparameters_of

    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    indent = " " * 13

    def para(text: str, first: str = indent) -> None:
        """`text` wrapped to the terminal, hanging under the name column."""
        typer.echo(
            textwrap.fill(text, width, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False)
        )

    def hyperparameters(name: str) -> None:
        for hp in hyperparameters_of(name):
            flag = f"--{hp.name.replace('_', '-')} {default_text(hp)}"  # e.g. "--dedup-threshold 0.9"
            first = f"{indent}{flag:26s}  "
            typer.echo(
                textwrap.fill(
                    hp.help, width, initial_indent=first, subsequent_indent=" " * 41, break_on_hyphens=False
                )
            )

    where = {
        "input": "before the LLM",
        "layer": "inside the LLM, before decoder layer --layer",
        None: "never",
    }
    typer.echo("Methods (--method NAME, any case):\n")
    for info in BUILTIN_METHODS.values():
        para(info.description, first=f"{info.name:12s} ")
        debias = (
            f"; default --debias {','.join(info.default_debias) or 'none'} (any of below)"
            if info.takes_debias
            else ""
        )
        para(f"prunes {where[info.prune_point]}{debias}")
        flags = " ".join(f"--{name}" for name in info.options) or "none"
        variants = (
            f"; --variant {' | '.join(info.variants)} (default {info.variants[0]})" if info.variants else ""
        )
        query = f"; default --query {info.default_query}" if info.default_query else ""
        para(f"options: {flags}{query}{variants}")
        hyperparameters(info.name)
    typer.echo("\nDebiasers (--debias LIST, attention methods only):\n")
    for name, description in DEBIASERS.items():
        flags = ", ".join(f"--{hp.name.replace('_', '-')}" for hp in hyperparameters_of(name))
        para(f"{description}{f' ({flags})' if flags else ''}.", first=f"{name:12s} ")
    typer.echo("")
    footer = (
        "Set a hyperparameter with its option (--dedup-threshold 0.8) or --param NAME=VALUE; one that the "
        "chosen method and debiasers do not read is an error."
    )
    typer.echo(textwrap.fill(footer, width))


@app.command(cls=Command, epilog="Example: mlb show answers.parquet --columns video_id,answer --limit 5")
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
    try:
        show_file(file, limit=limit, columns=names, as_json=as_json, failed_only=failed)
    except UsageError as error:
        typer.echo(f"mlb: error: {error}", err=True)
        raise typer.Exit(2) from None


@app.command(
    cls=Command,
    epilog=(
        "Example: mlb score fastv.parquet visionzip.parquet --against none.parquet --by category "
        "--plot pareto.png"
    ),
)
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
) -> None:
    """Accuracy of answer files with 95% confidence intervals (clustered by video), parse failures, mean
    realised keep and FLOPs ratio; with --against, a paired comparison against a baseline.

    Benchmark runs (`answer --benchmark`) are aggregated as the benchmark does (MLVU and MVBench: mean
    over the `category` column). Accuracies are percent in the table, fractions in --json.
    """
    from mlbcli.eval import score as scoring

    try:
        scores = scoring.score_files(results, by=by, against=against)
        if plot:
            baseline = scoring.score_file(against) if against else None
            scoring.plot(scores, plot, baseline)
        written = scoring.write_lmms_eval_samples(scores, samples) if samples else []
    except UsageError as error:
        typer.echo(f"mlb: error: {error}", err=True)
        raise typer.Exit(2) from None
    except MlbError as error:
        typer.echo(f"mlb: error: {error}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(scoring.to_json(scores, by, against))
    else:
        from rich.console import Console

        console = Console()
        for table in scoring.render_tables(scores, by, against):
            console.print(table)
    for path in [*([plot] if plot else []), *map(str, written)]:
        typer.echo(f"wrote {path}", err=True)


@app.command()
def doctor(
    verbose: Verbose = False,
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Keep the generated model and clip.")
    ] = False,
) -> None:
    """Offline self-check: versions, devices, and the full pipeline on a tiny random model and clip."""
    _setup_logging(verbose)
    from mlbcli.cli.doctor import run_doctor

    ok = run_doctor(echo=typer.echo, keep_files=keep_files)
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    from mlbcli.runners.signals import stop_on_signals

    # SIGTERM and SIGHUP stop a run like Ctrl-C (finished rows committed) and exit 128 + the signal.
    with stop_on_signals(exit_status=True):
        app()


if __name__ == "__main__":
    main()
