"""Every option of a run, declared once: its name, type, default, help, help panel, the subcommands that
take it, where its value goes (`ModelSpec`, `RunOptions`, a keyword of the API call, or the CLI itself)
and whether rows record it and resume compares it.

Derived from this table: the Typer options of `answer`, `compress`, `summarize`, `sample`, `flops` and
`doctor` (`mlbcli.cli.declared`), the fields of `ModelSpec` / `RunOptions` (a test checks that they
match), `RESULT_OPTIONS` / `REQUIRED_ON_RESUME` / `UNUSED_WHEN_NONE` (what resume compares) and the
allowed-value checks. Plain data: no typer, no torch, so `mlb --help` and the library both read it.

Method hyperparameters (`--dedup-threshold`...) are not here: each method declares its own.
"""

from __future__ import annotations

from typing import Any

from mlbcli.options.option import (
    BATCH_COMMANDS,
    HYPER,
    INPUT,
    MODEL,
    MODEL_COMMANDS,
    OUTPUT,
    PRUNE_COMMANDS,
    PRUNING,
    RUN,
    Option,
)

# `frames`/`fps` feed `ModelSpec` in the model commands and the sampler directly in `sample`.
_SAMPLE_CALL = {"sample": {"owner": "call"}}


def _pixel_bound(name: str, bound: str) -> Option:
    """--min-pixels / --max-pixels: a family setting of the families with dynamic resolution."""
    return Option(
        name,
        int | None,
        None,
        f"Families with dynamic resolution: {bound} bound on the pixels per frame after resizing "
        "(checkpoint default).",
        MODEL,
        MODEL_COMMANDS,
        owner="spec",
        metavar="N",
        adapter=True,
        recorded=True,
    )


#: The table. Order = the order of the options in `--help` (inside each panel).
OPTIONS: tuple[Option, ...] = (
    Option(
        "sources",
        list[str],
        None,
        "Video files, folders (recursive), manifests (.jsonl/.csv/.parquet) or '-' for paths on stdin.",
        None,
        BATCH_COMMANDS,
        argument=True,
        metavar="SOURCE...",
        show_default=False,
    ),
    Option(
        "question",
        str | None,
        None,
        "Question for items that carry none.",
        INPUT,
        frozenset({"answer", "compress"}),
        metavar="TEXT",
    ),
    Option(
        "prompt",
        str | None,
        None,
        "Summary prompt (default: 'Describe what happens in this video in a few sentences.').",
        INPUT,
        frozenset({"summarize"}),
        metavar="TEXT",
        recorded=True,
    ),
    Option(
        "model",
        str,
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",  # = mlbcli.models.DEFAULT_MODEL (a test checks)
        "Hub id or local checkpoint folder.",
        MODEL,
        PRUNE_COMMANDS | {"doctor"},
        owner="spec",
        envvar="MLB_MODEL",
        metavar="ID|PATH",
        recorded=True,
        # the doctor checks a checkpoint only when asked (never the environment's model: that may be 7B)
        per_command={
            "doctor": {
                "type": str | None,
                "default": None,
                "owner": "cli",
                "envvar": None,
                "recorded": False,
                "help": "A checkpoint to check instead of the tiny models: that it loads, its family, "
                "what the methods do on it, one answer unpruned and one pruned.",
            }
        },
    ),
    Option(
        "method",
        str,
        "none",
        "Token-reduction method, e.g. fastv, adatp, mlb, uniform (see `mlb methods`).",
        PRUNING,
        PRUNE_COMMANDS,
        owner="spec",
        metavar="NAME",
        complete="method",
        recorded=True,
    ),
    # --keep/--layer/--query/--variant/--positions default to None ("not given"): the method resolves its
    # own default, and one given to a method that does not use it is an error (one rule, in the library).
    Option(
        "keep",
        float | None,
        None,
        "Fraction of visual tokens kept past the pruning point, 0 < keep <= 1 (default 1.0 = no "
        "pruning). A method that cannot meet it says why in the keep_note column.",
        PRUNING,
        PRUNE_COMMANDS,
        owner="spec",
        metavar="FRACTION",
        show_default=False,
        recorded=True,
        method_default=True,
    ),
    Option(
        "layer",
        int | None,
        None,
        "Attention methods: prune before decoder layer K, scored by the attention of layer K-1 (default 2).",
        PRUNING,
        PRUNE_COMMANDS,
        owner="spec",
        metavar="K",
        show_default=False,
        recorded=True,
        method_default=True,
    ),
    Option(
        "query",
        str | None,
        None,
        "Attention probe rows: 'question' (all question tokens) or 'last' (last prompt token). "
        "Default: last for fastv (FastV's own), question for adatp and mlb.",
        PRUNING,
        PRUNE_COMMANDS,
        owner="spec",
        metavar="question|last",
        show_default=False,
        recorded=True,
        method_default=True,
    ),
    Option(
        "variant",
        str | None,
        None,
        "Reading of a peer method: 'paper' (default) or 'official' (the peer's code) for visionzip, "
        "dycoke, slowfast; 'budget' (default) or 'paper' (fixed layout, no --keep) for mlb.",
        PRUNING,
        PRUNE_COMMANDS,
        owner="spec",
        metavar="NAME",
        show_default=False,
        recorded=True,
    ),
    Option(
        "positions",
        str | None,
        None,
        "Position ids of tokens kept before the LLM: 'original' (default) or 'contiguous' "
        "(re-sequenced, as peers that concatenate; default of --variant official).",
        PRUNING,
        PRUNE_COMMANDS,
        owner="spec",
        metavar="original|contiguous",
        show_default=False,
        recorded=True,
    ),
    Option(
        "saliency",
        str | None,
        None,
        "What fastvid, holitom, visionzip and flashvid read as token saliency: 'tower' (default: the "
        "vision tower's own attention; the proxy where the family has none to read, and the row's "
        "saliency column says so) or 'proxy' (the pseudo-[CLS] similarity of the features).",
        PRUNING,
        PRUNE_COMMANDS,
        owner="spec",
        metavar="tower|proxy",
        show_default=False,
        recorded=True,
    ),
    Option(
        "strict_keep",
        bool,
        False,
        "A row whose method could not meet --keep (keep_note) becomes an error row.",
        PRUNING,
        MODEL_COMMANDS,
        owner="spec",
        recorded=True,
    ),
    Option(
        "debias",
        str | None,
        None,
        "Comma list of debiasers overriding the method's default (global, local, grid, tail, none).",
        PRUNING,
        PRUNE_COMMANDS,
        owner="spec",
        metavar="LIST",
        recorded=True,
    ),
    # The library's side of --param and the hyperparameter options: validated by the method.
    Option("params", dict[str, Any], None, "", None, frozenset(), owner="spec", recorded=True),
    Option(
        "frames",
        int | None,
        None,
        "Frames sampled uniformly per video, first and last included (default: the model's usual; "
        "families with a frame rule adjust it, e.g. to an even count).",
        INPUT,
        PRUNE_COMMANDS | {"sample"},
        owner="spec",
        metavar="N",
        recorded=True,
        per_command={
            "sample": {"owner": "call", "help": "Frames sampled uniformly per video (default: 32)."}
        },
    ),
    Option(
        "fps",
        float | None,
        None,
        "Sample duration x RATE frames instead, spread over the whole clip (capped by --frames).",
        INPUT,
        BATCH_COMMANDS,
        owner="spec",
        metavar="RATE",
        recorded=True,
        per_command=_SAMPLE_CALL,
    ),
    Option(
        "param",
        list[str] | None,
        None,
        "Method hyperparameter (repeatable), the same as its own option below.",
        HYPER,
        PRUNE_COMMANDS,
        owner="cli",
        metavar="NAME=VALUE",
    ),
    Option(
        "max_new_tokens",
        int,
        96,
        "Generation limit per answer.",
        MODEL,
        frozenset({"answer", "summarize"}),
        metavar="N",
        recorded=True,
        per_command={
            "answer": {
                "type": int | None,
                "default": None,
                "help": "Generation limit per answer [default: 32; with --benchmark, the benchmark's].",
                "show_default": False,
            }
        },
    ),
    Option(
        "benchmark",
        str | None,
        None,
        "Grade like lmms-eval's task: its prompt, post-prompt and option layout, its policy for "
        "unparsable replies and its aggregation ({benchmarks}); default: the generic multiple-choice prompt.",
        INPUT,
        frozenset({"answer"}),
        metavar="NAME",
        complete="benchmark",
        recorded=True,
    ),
    Option(
        "grader",
        str | None,
        None,
        "Whose verdict `choice`/`correct` are: lmms-eval (what lmms-eval's task reads and counts) or mlb "
        "(mlb's parser); rows record both. Default: lmms-eval with an lmms-eval --benchmark, else mlb.",
        INPUT,
        frozenset({"answer"}),
        metavar="NAME",
        choices=("lmms-eval", "mlb"),
        recorded=True,
    ),
    Option(
        "device",
        str,
        "auto",
        "auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.",
        MODEL,
        MODEL_COMMANDS,
        owner="spec",
        metavar="DEVICE",
    ),
    Option(
        "dtype",
        str,
        "auto",
        "auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16.",
        MODEL,
        MODEL_COMMANDS,
        owner="spec",
        metavar="DTYPE",
        recorded=True,
    ),
    # Family settings (`ModelAdapter.option_defaults`): the adapter of a family that has no such
    # setting refuses a given value (`ModelAdapter.check_options`), so they stay None unless given.
    *(_pixel_bound(name, bound) for name, bound in (("min_pixels", "lower"), ("max_pixels", "upper"))),
    Option(
        "temporal_spacing",
        str | None,
        None,
        "Families that encode time between temporal patches: that time as the official processors compute "
        "it ('reference', default: 2N/(k*fps) for k of N frames, frame times index/fps) or from the "
        "container's real frame times ('exact').",
        MODEL,
        MODEL_COMMANDS,
        owner="spec",
        metavar="reference|exact",
        show_default=False,
        choices=("reference", "exact"),
        adapter=True,
        recorded=True,
    ),
    # The version of mlb's input preparation (resize, frame counts, timing): a file made by an mlb that
    # prepared inputs otherwise is refused on resume (one that lacks it predates version 2).
    Option("inputs", int, None, "", None, frozenset(), owner="spec", recorded=True, required_on_resume=True),
    Option(
        "save_tokens",
        str | None,
        None,
        "Folder to store each video's encoded visual tokens (safetensors).",
        OUTPUT,
        frozenset({"compress"}),
        metavar="FOLDER",
    ),
    Option(
        "bias_report",
        str | None,
        None,
        "Folder for per-video attention bias plots (PNG).",
        OUTPUT,
        frozenset({"compress"}),
        metavar="FOLDER",
    ),
    Option(
        "contact_sheet",
        str | None,
        None,
        "Folder for one image per video with the sampled frames in a grid.",
        OUTPUT,
        frozenset({"sample"}),
        metavar="FOLDER",
    ),
    Option(
        "out",
        str | None,
        None,
        "Output file (.parquet, .jsonl, .csv), or '-' for JSON lines on stdout. [default: {command}.parquet]",
        OUTPUT,
        BATCH_COMMANDS,
        owner="run",
        flags=("--out", "-o"),
        metavar="FILE",
        show_default=False,
    ),
    Option(
        "format",
        str | None,
        None,
        "Output format (default: from the --out suffix).",
        OUTPUT,
        BATCH_COMMANDS,
        owner="run",
        attribute="fmt",
        metavar="parquet|jsonl|csv",
        choices=("parquet", "jsonl", "csv"),
    ),
    Option(
        "resume",
        bool,
        True,
        "Skip items already in --out.",
        OUTPUT,
        BATCH_COMMANDS,
        owner="run",
        flags=("--resume/--no-resume",),
    ),
    Option(
        "overwrite", bool, False, "Replace --out instead of resuming it.", OUTPUT, BATCH_COMMANDS, owner="run"
    ),
    Option("fail_fast", bool, False, "Stop at the first failed item.", RUN, BATCH_COMMANDS, owner="run"),
    Option(
        "retry_failed",
        bool,
        False,
        "Try again the videos whose last run failed and that have not changed since (size, mtime); "
        "without it they are skipped and counted on the last line.",
        RUN,
        frozenset({"summarize"}),
    ),
    Option(
        "quiet",
        bool,
        False,
        "No progress: print only failed items and the final line (cron).",
        RUN,
        BATCH_COMMANDS,
        owner="cli",
        flags=("--quiet", "-q"),
    ),
    Option(
        "verbose",
        bool,
        False,
        "Debug logging, decoder messages included.",
        RUN,
        BATCH_COMMANDS | {"doctor"},
        owner="cli",
        flags=("--verbose", "-v"),
    ),
    Option(
        "keep_files",
        str | None,
        None,
        "Write the tiny checkpoints and clip to this folder and keep them; the doctor prints the "
        "`mlb answer ... --model` line that uses one.",
        None,
        frozenset({"doctor"}),
        owner="cli",
        metavar="DIR",
        show_default=False,
    ),
    Option(
        "resolution",
        str | None,
        None,
        "Families with dynamic resolution: the videos' frame size, WxH (default: frames at the pixel budget).",
        MODEL,
        frozenset({"flops"}),
        owner="cli",
        metavar="WxH",
        show_default=False,
    ),
    Option(
        "seed",
        int,
        0,
        "Seed for stochastic methods.",
        PRUNING,
        MODEL_COMMANDS,
        owner="spec",
        metavar="N",
        recorded=True,
    ),
    Option(
        "tokens",
        str | None,
        None,
        "Folder of tokens saved by `compress --save-tokens`: those videos skip decode and encode.",
        INPUT,
        frozenset({"answer"}),
        metavar="FOLDER",
    ),
    Option(
        "workers",
        int,
        2,
        "Background decode processes (0 = inline).",
        RUN,
        BATCH_COMMANDS,
        owner="run",
        metavar="N",
    ),
    Option("prefetch", int, 4, "", None, frozenset(), owner="run"),  # decoded videos buffered ahead
    Option(
        "decode_timeout",
        float,
        120.0,
        "Abandon a video whose decode takes longer than this many seconds.",
        RUN,
        BATCH_COMMANDS,
        owner="run",
        attribute="decode_timeout_s",
        metavar="SECONDS",
    ),
    Option(
        "batch_size",
        str,
        "auto",
        "Video x question items per model batch (vision tower, prefill and decode together); "
        "auto = 1 on CPU, on CUDA the largest that fits (halved on out-of-memory).",
        RUN,
        MODEL_COMMANDS,
        owner="run",
        metavar="N|auto",
    ),
    Option(
        "runner",
        str,
        "local",
        "Where the model work runs: this process, or Ray Data (decode tasks + a model actor pool; "
        "needs pip install 'mlbcli[ray]').",
        RUN,
        MODEL_COMMANDS,
        owner="run",
        metavar="local|ray",
    ),
    # The three pieces of `RunOptions.ray` (the CLI builds a `RayOptions` from them).
    Option("ray", Any, None, "", None, frozenset(), owner="run"),
    Option(
        "ray_address",
        str | None,
        None,
        "Ray cluster to join (default: $RAY_ADDRESS, else a local Ray instance). --runner ray only.",
        RUN,
        MODEL_COMMANDS,
        owner="cli",
        metavar="ADDR",
    ),
    Option(
        "gpus_per_worker",
        float | None,
        None,
        "GPUs per model actor (default: 1 when the cluster has GPUs, else 0). --runner ray only.",
        RUN,
        MODEL_COMMANDS,
        owner="cli",
        metavar="N",
    ),
    Option(
        "workers_per_node",
        int | None,
        None,
        "Model actors per node (default 1). --runner ray only.",
        RUN,
        MODEL_COMMANDS,
        owner="cli",
        metavar="N",
    ),
    Option(
        "num_shards",
        int,
        1,
        "Split the videos into this many shards (one process per GPU or array task; each writes its own --out).",
        RUN,
        BATCH_COMMANDS,
        owner="run",
        metavar="N",
    ),
    Option(
        "shard_index",
        int,
        0,
        "The shard this process takes, 0-based.",
        RUN,
        BATCH_COMMANDS,
        owner="run",
        metavar="I",
    ),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
