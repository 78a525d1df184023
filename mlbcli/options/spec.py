"""The options of a run as the library takes them: which model, method and sampling (`ModelSpec`) and
how the batch runs (`RunOptions`). Built once (by the CLI or a notebook) and passed to `mlbcli.api` as
they are. Their fields are the "spec" and "run" options of `mlbcli.options.table` (a test checks), and
what rows record and resume compares is derived from that table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from mlbcli.errors import UsageError
from mlbcli.options.lookup import check_choices
from mlbcli.options.table import OPTIONS

if TYPE_CHECKING:
    from mlbcli.engine.pipeline import Pipeline
    from mlbcli.selection import MethodOptions


@dataclass(frozen=True)
class RunOptions:
    """Options shared by every batch command."""

    out: str | None = None  # output path, "-" for JSON lines on stdout; None = <kind>.parquet
    fmt: str | None = None  # parquet | jsonl | csv; None = from the suffix
    resume: bool = True
    overwrite: bool = False
    fail_fast: bool = False
    workers: int = 2  # background decode processes (0 = decode inline, still with the timeout)
    prefetch: int = 4  # decoded videos buffered ahead of the model
    decode_timeout_s: float | None = 120.0  # None = no limit (library use only)
    batch_size: int | None = None  # items per model batch; None = auto (1 on CPU, largest that fits on CUDA)
    runner: str = "local"  # "local" (this process) or "ray" (Ray Data: decode tasks + model actor pool)
    # Where and how wide the Ray runner runs (runner "ray" only): a `mlbcli.runners.ray.RayOptions`
    # (typed loosely so that the options, below the runners, import nothing of them).
    ray: Any = None
    num_shards: int = 1  # split the videos over independent processes (GPUs, SLURM array tasks)...
    shard_index: int = 0  # ...and this process takes shard `shard_index` (0-based)

    def __post_init__(self) -> None:
        check_choices("run", asdict(self))
        if self.runner not in ("local", "ray"):
            raise UsageError(f"--runner must be local or ray, not {self.runner!r}")
        if self.ray is not None and self.runner != "ray":
            raise UsageError("--ray-address, --gpus-per-worker and --workers-per-node apply to --runner ray")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1 or auto, got {self.batch_size}")
        # Checked here, not only in the CLI, so library callers get a one-line usage error, not a
        # ValueError from deep inside prefetch after the writer has been opened.
        if self.workers < 0:
            raise UsageError(f"--workers must be >= 0, got {self.workers}")
        if self.prefetch < 1:
            raise UsageError(f"prefetch must be >= 1, got {self.prefetch}")
        if self.decode_timeout_s is not None and not (0 < self.decode_timeout_s < math.inf):
            raise UsageError(
                f"--decode-timeout must be a finite number of seconds > 0, got {self.decode_timeout_s}"
            )
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise UsageError(
                f"--shard-index must be in 0..{self.num_shards - 1} and --num-shards >= 1, "
                f"got {self.shard_index}/{self.num_shards}"
            )


# Options that change what a row contains: resuming a file written with other values would mix
# configurations in one table, so it is refused (use --overwrite or another --out).
RESULT_OPTIONS = tuple(option.name for option in OPTIONS if option.recorded)
# Options whose absence in an older file means it predates them and differs ("inputs": before the
# reference processors' conventions, mlb resized without rounding and timed frames otherwise).
REQUIRED_ON_RESUME = tuple(option.name for option in OPTIONS if option.required_on_resume)
# Options that resolve to the method's own default, and to None for a method that does not use them.
UNUSED_WHEN_NONE = tuple(option.name for option in OPTIONS if option.method_default)


def _inputs_version() -> int:
    """`models.base.INPUTS_VERSION`, imported when a spec is built (the CLI's --help stays light)."""
    from mlbcli.models.base import INPUTS_VERSION

    return INPUTS_VERSION


@dataclass(frozen=True)
class ModelSpec:
    """Which model, method and sampling a model command runs with (validated before any work)."""

    model: str
    method: str = "none"
    # None = not given: the method's own default (keep 1.0, layer 2, its query); an option given to a
    # method that does not use it is a UsageError (`selection.base.check_method_options`).
    keep: float | None = None
    layer: int | None = None
    query: str | None = None
    debias: tuple[str, ...] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None  # "paper" / "official" (peers), "budget" / "paper" (mlb)
    positions: str | None = None  # "original" / "contiguous" ids of tokens kept before the LLM
    saliency: str | None = None  # "tower" / "proxy": what methods that read saliency read
    strict_keep: bool = False  # a row whose method missed its budget is an error row
    seed: int = 0
    frames: int | None = None
    fps: float | None = None
    device: str = "auto"
    dtype: str = "auto"
    # Family settings (`ModelAdapter.option_defaults`), None = not given: per-frame pixel bounds of the
    # families with dynamic resolution; "reference" (the official processors' timing) or "exact" (real
    # frame times) for families that encode the time between temporal patches.
    min_pixels: int | None = None
    max_pixels: int | None = None
    temporal_spacing: str | None = None
    # Version of mlb's input preparation (resize, frame counts, timing); recorded so that resuming a file
    # made by an mlb that prepared inputs otherwise is refused. 2: the reference processors' conventions.
    inputs: int = field(default_factory=_inputs_version)

    def __post_init__(self) -> None:
        _validate_sampling(self.frames, self.fps)
        # hyperparameter names as the method spells them, whoever typed them (`dedup-threshold` from a
        # notebook, `dedup_threshold` from the CLI): what `recorded()` stores and resume compares
        object.__setattr__(self, "params", _normalized_params(self.params))
        check_choices("spec", asdict(self))  # e.g. --temporal-spacing; the family check is the adapter's
        from mlbcli.selection import get_method, validate_method_options

        # UsageError on bad --keep/--layer/--query, or one the method does not use, before any work
        # (torch-free: the CLI checks before loading anything)
        validate_method_options(self._method_name, self.method_options())
        # Building the method checks its hyperparameters (ranges, relations between them) here too,
        # not only once the model has loaded (`--dedup-threshold 7` is exit 2 in a second, not minutes).
        get_method(self.method, self.method_options())

    @functools.cached_property
    def _method_name(self) -> str:
        from mlbcli.selection import canonical_method_name

        return canonical_method_name(self.method)

    @functools.cached_property
    def _method_options(self) -> MethodOptions:
        from mlbcli.selection import MethodOptions

        return MethodOptions(
            keep=self.keep,
            layer=self.layer,
            query=self.query,
            seed=self.seed,
            debias=self.debias,
            params=dict(self.params),
            variant=self.variant,
            positions=self.positions,
            saliency=self.saliency,
        )

    def method_options(self) -> MethodOptions:
        """The method's options, built once per spec (the method, `recorded` and the checks share them)."""
        return self._method_options

    def resolved_method_options(self) -> dict[str, Any]:
        """keep/layer/query (`UNUSED_WHEN_NONE`) as the method runs with them: the given value, else
        the method's own default, and None where the method does not use the option
        (`selection.base.Method.resolved_options`, the one rule)."""
        from mlbcli.selection import resolved_method_options

        resolved = resolved_method_options(self._method_name, self.method_options())
        return {key: resolved[key] for key in UNUSED_WHEN_NONE}

    def recorded(self) -> dict[str, Any]:
        """The spec as recorded in `options_json` and compared on resume: keep/layer/query resolved to
        what the method runs with (None where the method does not use them), so a changed default (or
        an explicit value equal to it) compares by meaning."""
        out = {**asdict(self), **self.resolved_method_options()}
        if out["temporal_spacing"] == "reference":  # the default, given explicitly: the same run
            out["temporal_spacing"] = None
        return out

    def keep_requested(self) -> float | None:
        """The `keep_requested` column: --keep (the method's default when unset) for methods with a
        budget, else None."""
        keep: float | None = self.resolved_method_options()["keep"]
        return keep

    def adapter_options(self) -> dict[str, Any]:
        """The family settings the adapter takes (`ModelAdapter.option_defaults`); None = not given."""
        return {option.name: getattr(self, option.name) for option in OPTIONS if option.adapter}

    def pipeline(self) -> Pipeline:
        from mlbcli.engine.pipeline import Pipeline
        from mlbcli.selection import get_method

        method = get_method(self.method, self.method_options())
        return Pipeline(
            self.model,
            method=method,
            device=self.device,
            dtype=self.dtype,
            adapter_options=self.adapter_options(),
            strict_keep=self.strict_keep,
        )


def _model_spec(
    spec: ModelSpec | None = None,
    debias: Sequence[str] | str | None = None,
    params: dict[str, Any] | None = None,
    **options: Any,
) -> ModelSpec:
    """The run's `ModelSpec`: `spec` as built by the caller (the CLI builds it once), or one built from
    keyword options (notebook sugar; `debias` may be a comma list, "global,local"). Not both."""
    if spec is not None:
        if options or debias is not None or params is not None:
            given = sorted(
                [*options, *(["debias"] if debias is not None else []), *(["params"] if params else [])]
            )
            raise TypeError(f"pass either spec= or model options, not both (got {', '.join(given)})")
        return spec
    if isinstance(debias, str):
        debias = tuple(part.strip() for part in debias.split(",") if part.strip())
    unknown = set(options) - {f.name for f in fields(ModelSpec)}
    if unknown:
        raise TypeError(f"unknown model option(s): {', '.join(sorted(unknown))}")
    if "model" not in options:
        raise TypeError("model= is required (a hub id or a local checkpoint folder)")
    return ModelSpec(
        debias=tuple(debias) if debias is not None else None, params=dict(params or {}), **options
    )


def _normalized_params(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with names normalised (`selection.parameters.normalize_name`) and None ("not given",
    as methods read it) dropped; two spellings of one name with different values are a `UsageError`."""
    from mlbcli.selection.parameters import normalize_name

    out: dict[str, Any] = {}
    for raw, value in params.items():
        if value is None:
            continue
        name = normalize_name(raw)
        if name in out and out[name] != value:
            raise UsageError(
                f"parameter {name!r} given twice with different values ({out[name]!r}, {value!r})"
            )
        out[name] = value
    return out


def _validate_sampling(frames: int | None, fps: float | None) -> None:
    if frames is not None and frames < 1:
        raise UsageError(f"--frames must be >= 1, got {frames}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise UsageError(f"--fps must be a positive number, got {fps}")
