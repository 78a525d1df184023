"""What every `mlb` command shares: logging in the CLI's style, the progress reporter, device checks,
and the exit-code contract (0 all items succeeded, 1 some failed, 2 usage error).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import typer

from mlbcli.errors import MlbError, OutputLockedError, UsageError


class _LogFormatter(logging.Formatter):
    """Warnings and errors in the CLI's own style (`mlb: warning: ...`); debug lines name their logger."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno < logging.WARNING:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"mlb: {record.levelname.lower()}: {message}"
        return f"{record.levelname} {record.name}: {message}"


def setup_logging(verbose: bool) -> None:
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


def make_reporter(quiet: bool) -> Any:
    """The progress reporter for stderr, wrapped to keep the first rows (the answers table)."""
    from mlbcli.cli.show import CollectingReporter
    from mlbcli.runners.progress import PlainReporter, RichReporter

    inner = RichReporter(quiet=quiet) if sys.stderr.isatty() else PlainReporter(quiet=quiet)
    return CollectingReporter(inner)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def fail(error: Exception, code: int) -> typer.Exit:
    """Print `error` as mlb's one-line error and return the exit to raise."""
    typer.echo(f"mlb: error: {error}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """A `UsageError` inside becomes its one-line message and exit code 2."""
    try:
        yield
    except UsageError as error:
        raise fail(error, 2) from None


DTYPES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16")  # = models.resolve_dtype


def check_device(device: str, dtype: str) -> tuple[str, str]:
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
        _check_cuda(device, index)
    if kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise UsageError("--device mps: MPS is not available on this machine; use --device cpu")
    return device, dtype


def _check_cuda(device: str, index: str) -> None:
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


def method_name(name: str) -> str:
    """The registered spelling of --method (case-insensitive; a typo gets a did-you-mean), no torch."""
    from mlbcli.selection import canonical_method_name

    return canonical_method_name(name)


def method_params(values: list[str] | None, named: dict[str, Any] | None = None) -> dict[str, Any]:
    """Method hyperparameters from the named options and repeatable `--param NAME=VALUE` (NAME as
    the option spells it, `dedup-threshold`, or as the method does, `dedup_threshold`)."""
    from mlbcli.selection.params import parse_assignments

    given = {name: value for name, value in (named or {}).items() if value is not None}
    return {**given, **parse_assignments(values or [])}


LOCKED_HINT = "wait for it to finish (or stop it), or write to another --out"


def finish(call: Callable[[], tuple[Any, Any]], show_results: bool = False) -> None:
    """Run an API call and exit with the contract's code.

    `show_results`: after a short run with output in a file, print what it produced (answers,
    summaries) as a table on stdout, when stdout is a terminal.
    """
    try:
        summary, reporter = call()
    except UsageError as error:
        raise fail(error, 2) from None
    except OutputLockedError as error:
        typer.echo(f"mlb: error: {error}; {LOCKED_HINT}", err=True)
        raise typer.Exit(1) from None
    except MlbError as error:
        raise fail(error, 1) from None
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM/SIGHUP via mlbcli.runners.signals (see main)
        from mlbcli.runners.signals import exit_code_of, reason_of
        from mlbcli.runners.summary import stopped_text

        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone; the status tells
            typer.echo(f"mlb: {reason_of(interrupt)}; {stopped_text(interrupt)}", err=True)
        raise typer.Exit(exit_code_of(interrupt)) from None
    if show_results and summary.out != "-" and not reporter.inner.quiet and stdout_is_terminal():
        from mlbcli.cli.show import print_run_results

        print_run_results(summary.kind, reporter.rows)
    raise typer.Exit(1 if summary.failed else 0)
