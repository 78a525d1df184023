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
from typing import Annotated, Any

import typer

from mlbcli import __version__
from mlbcli.errors import MlbError, OutputLockedError, UsageError

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"  # same as mlbcli.models.DEFAULT_MODEL

app = typer.Typer(
    name="mlb",
    help=(
        "Answer questions about many videos with a Video LLM, cheaply: visual tokens are pruned inside "
        "the model with attention debiasing.\n\n"
        "Examples:\n\n"
        "  mlb answer videos/ --question 'What is the person doing?' --keep 0.25 --method uniform\n\n"
        "  find /data -name '*.mp4' | mlb answer - --question '...' --out - | jq .answer\n\n"
        "  mlb answer bench.jsonl --out answers.parquet      # per-row questions, options, ground truth\n\n"
        "  mlb summarize /srv/cams --out summaries.parquet   # nightly: only new or changed videos\n\n"
        "  mlb sample videos/ --frames 16 --contact-sheet sheets/\n\n"
        "  mlb doctor                                        # offline self-check of the install"
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- shared option types ---------------------------------------------------------------------------------
Sources = Annotated[
    list[str],
    typer.Argument(
        help="Video files, folders (recursive), manifests (.jsonl/.csv/.parquet) or '-' for paths on stdin.",
        show_default=False,
    ),
]
Question = Annotated[str | None, typer.Option("--question", help="Question for items that carry none.")]
Model = Annotated[str, typer.Option("--model", envvar="MLB_MODEL", help="Hub id or local checkpoint folder.")]
Method = Annotated[str, typer.Option("--method", help="Token-reduction method (see `mlb methods`).")]
Keep = Annotated[
    float,
    typer.Option("--keep", help="Fraction of visual tokens kept past the pruning point, 0 < keep <= 1."),
]
Layer = Annotated[
    int,
    typer.Option(
        "--layer",
        help="Attention methods: prune before decoder layer K, scored by the attention of layer K-1.",
    ),
]
Query = Annotated[
    str,
    typer.Option(
        "--query",
        help="Attention probe rows: 'question' (all question tokens) or 'last' (last prompt token, FastV).",
    ),
]
Debias = Annotated[
    str | None,
    typer.Option(
        "--debias",
        help="Comma list of debiasers overriding the method's default (global, local, grid, tail, none).",
    ),
]
Param = Annotated[
    list[str] | None,
    typer.Option("--param", help="Method hyperparameter NAME=VALUE (repeatable); see `mlb methods`."),
]
Frames = Annotated[
    int | None,
    typer.Option(
        "--frames",
        help="Frames sampled uniformly per video (default: the model's usual, 32 for LLaVA-OneVision).",
    ),
]
Fps = Annotated[float | None, typer.Option("--fps", help="Sample at this rate instead (capped by --frames).")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", help="Generation limit per answer.")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps.")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16.")]
Out = Annotated[
    str | None,
    typer.Option(
        "--out", "-o", help="Output file, or '-' for JSON lines on stdout [default: <command>.parquet]."
    ),
]
Format = Annotated[str | None, typer.Option("--format", help="parquet | jsonl | csv (default: from --out).")]
Resume = Annotated[bool, typer.Option("--resume/--no-resume", help="Skip items already in --out.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace --out instead of resuming it.")]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed item.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging, decoder messages included.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for stochastic methods.")]
MinPixels = Annotated[
    int | None,
    typer.Option(
        "--min-pixels",
        help="Qwen2-VL family: lower bound on the pixels per frame after resizing (checkpoint default).",
    ),
]
MaxPixels = Annotated[
    int | None,
    typer.Option(
        "--max-pixels",
        help="Qwen2-VL family: upper bound on the pixels per frame after resizing (checkpoint default).",
    ),
]
NumShards = Annotated[
    int,
    typer.Option(
        "--num-shards",
        help="Split the videos into this many shards "
        "(one process per GPU or array task; each writes its own --out).",
    ),
]
ShardIndex = Annotated[int, typer.Option("--shard-index", help="The shard this process takes, 0-based.")]
Workers = Annotated[int, typer.Option("--workers", help="Background decode processes (0 = inline).")]
Timeout = Annotated[
    float,
    typer.Option(
        "--decode-timeout", help="Abandon a video whose decode takes longer than this many seconds."
    ),
]


def with_method_parameters(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one named option per method hyperparameter (`--dedup-threshold`...).

    The options are generated from the one registry (`mlbcli.selection.params.HYPERPARAMETERS`), so a
    new hyperparameter appears in every command's --help with its default and the methods it applies
    to. The command receives the given ones (None = not given) as `method_params`.
    """
    from mlbcli.selection.params import HYPERPARAMETERS

    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "method_params"]
    extra = []
    for name, hp in HYPERPARAMETERS.items():
        default = "derived" if hp.default is None else hp.default
        option = typer.Option(
            f"--{name.replace('_', '-')}",
            show_default=False,
            help=f"[{', '.join(hp.methods)}] {hp.help} [default: {default}]",
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


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING  # progress lines come from the reporter
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:
        # transformers/hub chatter (progress bars, advisory warnings) is noise for batch users.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        for name in ("transformers", "huggingface_hub", "urllib3", "filelock"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _reporter(quiet: bool) -> Any:
    from mlbcli.progress import PlainReporter, RichReporter

    if sys.stderr.isatty():
        return RichReporter(quiet=quiet)
    return PlainReporter(quiet=quiet)


def _run_options(
    out, fmt, resume, overwrite, fail_fast, workers, timeout, num_shards=1, shard_index=0
) -> Any:
    from mlbcli.api import RunOptions

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


def _finish(call: Any) -> None:
    """Run an API call and exit with the contract's code."""
    try:
        summary = call()
    except UsageError as error:
        typer.echo(f"mlb: error: {error}", err=True)
        raise typer.Exit(2) from None
    except OutputLockedError as error:
        typer.echo(f"mlb: {error}", err=True)
        raise typer.Exit(1) from None
    except MlbError as error:
        typer.echo(f"mlb: {error}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM/SIGHUP via mlbcli.signals (see main)
        import contextlib

        from mlbcli.signals import exit_code_of, reason_of

        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone; the status tells
            typer.echo(f"mlb: {reason_of(interrupt)}; finished rows are saved, rerun to resume", err=True)
        raise typer.Exit(exit_code_of(interrupt)) from None
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


@app.command(epilog="Example: mlb answer videos/ --question 'What is the person doing?' --keep 0.25")
@with_method_parameters
def answer(
    sources: Sources,
    question: Question = None,
    model: Model = DEFAULT_MODEL,
    method: Method = "none",
    keep: Keep = 1.0,
    layer: Layer = 2,
    query: Query = "question",
    debias: Debias = None,
    param: Param = None,
    frames: Frames = None,
    fps: Fps = None,
    max_new_tokens: MaxNew = 32,
    device: Device = "auto",
    dtype: Dtype = "auto",
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    out: Out = None,
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
            help="Folder of tokens saved by `compress --save-tokens`: those videos skip decode and encode.",
        ),
    ] = None,
    workers: Workers = 2,
    decode_timeout: Timeout = 120.0,
    num_shards: NumShards = 1,
    shard_index: ShardIndex = 0,
    method_params: dict[str, Any] | None = None,
) -> None:
    """Answer questions about videos; one row per video x question (answers + token statistics).

    Multiple-choice items (manifest `options`) get the option-letter prompt, the parsed `choice`, and
    `correct` when the manifest has an `answer`; the final table then shows the accuracy.
    """
    _setup_logging(verbose)

    def call():
        from mlbcli import api

        return api.answer(
            sources,
            question=question,
            model=model,
            method=method,
            keep=keep,
            layer=layer,
            query=query,
            debias=debias,
            params=_params(param, method_params),
            frames=frames,
            fps=fps,
            max_new_tokens=max_new_tokens,
            device=device,
            dtype=dtype,
            seed=seed,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            tokens=tokens,
            run=_run_options(
                out, format, resume, overwrite, fail_fast, workers, decode_timeout, num_shards, shard_index
            ),
            reporter=_reporter(quiet),
            stdin=sys.stdin,
        )

    _finish(call)


@app.command(epilog="Example: mlb compress videos/ --method uniform --keep 0.25 --out stats.parquet")
@with_method_parameters
def compress(
    sources: Sources,
    question: Question = None,
    model: Model = DEFAULT_MODEL,
    method: Method = "none",
    keep: Keep = 1.0,
    layer: Layer = 2,
    query: Query = "question",
    debias: Debias = None,
    param: Param = None,
    frames: Frames = None,
    fps: Fps = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    save_tokens: Annotated[
        str | None,
        typer.Option(
            "--save-tokens", help="Folder to store each video's encoded visual tokens (safetensors)."
        ),
    ] = None,
    bias_report: Annotated[
        str | None, typer.Option("--bias-report", help="Folder for per-video attention bias plots (PNG).")
    ] = None,
    out: Out = None,
    format: Format = None,
    resume: Resume = True,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    seed: Seed = 0,
    workers: Workers = 2,
    decode_timeout: Timeout = 120.0,
    num_shards: NumShards = 1,
    shard_index: ShardIndex = 0,
    method_params: dict[str, Any] | None = None,
) -> None:
    """Encode videos and reduce their visual tokens; per-video token statistics, no generation."""
    _setup_logging(verbose)

    def call():
        from mlbcli import api

        return api.compress(
            sources,
            question=question,
            model=model,
            method=method,
            keep=keep,
            layer=layer,
            query=query,
            debias=debias,
            params=_params(param, method_params),
            frames=frames,
            fps=fps,
            device=device,
            dtype=dtype,
            seed=seed,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            save_tokens=save_tokens,
            bias_report=bias_report,
            run=_run_options(
                out, format, resume, overwrite, fail_fast, workers, decode_timeout, num_shards, shard_index
            ),
            reporter=_reporter(quiet),
            stdin=sys.stdin,
        )

    _finish(call)


@app.command(epilog="Example (crontab): 0 2 * * * mlb summarize /srv/cams --out /srv/summaries.parquet -q")
@with_method_parameters
def summarize(
    sources: Sources,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            help="Summary prompt [default: 'Describe what happens in this video in a few sentences.'].",
        ),
    ] = None,
    model: Model = DEFAULT_MODEL,
    method: Method = "none",
    keep: Keep = 1.0,
    layer: Layer = 2,
    query: Query = "question",
    debias: Debias = None,
    param: Param = None,
    frames: Frames = None,
    fps: Fps = None,
    max_new_tokens: MaxNew = 96,
    device: Device = "auto",
    dtype: Dtype = "auto",
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    out: Out = None,
    format: Format = None,
    resume: Resume = True,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    seed: Seed = 0,
    workers: Workers = 2,
    decode_timeout: Timeout = 120.0,
    num_shards: NumShards = 1,
    shard_index: ShardIndex = 0,
    method_params: dict[str, Any] | None = None,
) -> None:
    """Summarise new or changed videos (safe to run from cron; concurrent runs do not collide)."""
    _setup_logging(verbose)

    def call():
        from mlbcli import api

        kwargs = {"prompt": prompt} if prompt is not None else {}
        return api.summarize(
            sources,
            model=model,
            method=method,
            keep=keep,
            layer=layer,
            query=query,
            debias=debias,
            params=_params(param, method_params),
            frames=frames,
            fps=fps,
            max_new_tokens=max_new_tokens,
            device=device,
            dtype=dtype,
            seed=seed,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            run=_run_options(
                out, format, resume, overwrite, fail_fast, workers, decode_timeout, num_shards, shard_index
            ),
            reporter=_reporter(quiet),
            stdin=sys.stdin,
            **kwargs,
        )

    _finish(call)


@app.command(epilog="Example: mlb sample videos/ --frames 16 --contact-sheet sheets/ --out frames.parquet")
def sample(
    sources: Sources,
    frames: Annotated[
        int | None, typer.Option("--frames", help="Frames sampled uniformly per video [default: 32].")
    ] = None,
    fps: Fps = None,
    contact_sheet: Annotated[
        str | None,
        typer.Option(
            "--contact-sheet", help="Folder for one image per video with the sampled frames in a grid."
        ),
    ] = None,
    out: Out = None,
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

        return api.sample(
            sources,
            frames=frames,
            fps=fps,
            contact_sheet=contact_sheet,
            run=_run_options(
                out, format, resume, overwrite, fail_fast, workers, decode_timeout, num_shards, shard_index
            ),
            reporter=_reporter(quiet),
            stdin=sys.stdin,
        )

    _finish(call)


@app.command(
    epilog="Example: mlb flops --model llava-hf/llava-onevision-qwen2-7b-ov-hf --frames 32 "
    "--method fastv --keep 0.25 --layer 2"
)
@with_method_parameters
def flops(
    model: Model = DEFAULT_MODEL,
    method: Method = "none",
    keep: Keep = 1.0,
    layer: Layer = 2,
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
            method=method,
            keep=keep,
            layer=layer,
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
    typer.echo(f"method         {plan.method}, keep {keep}")
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
    """List the token-reduction methods and what they do."""
    from mlbcli.selection import available_methods

    for name, description in available_methods().items():
        typer.echo(f"{name:12s} {description}")


@app.command()
def doctor(
    verbose: Verbose = False,
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Keep the generated model and clip.")
    ] = False,
) -> None:
    """Offline self-check: versions, devices, and the full pipeline on a tiny random model and clip."""
    _setup_logging(verbose)
    from mlbcli.doctor import run_doctor

    ok = run_doctor(echo=typer.echo, keep_files=keep_files)
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    from mlbcli.signals import stop_on_signals

    # SIGTERM and SIGHUP stop a run like Ctrl-C (finished rows committed) and exit 128 + the signal.
    with stop_on_signals(exit_status=True):
        app()


if __name__ == "__main__":
    main()
