"""`mlb doctor`: tell an install problem from a model problem, offline.

It reports versions and devices, then builds a tiny random checkpoint of every supported family and a
synthetic clip in a temporary folder and runs the real pipeline on them (decode -> encode -> prune -> prefill ->
decode -> Parquet), exactly as `mlb answer` does with a real checkpoint.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from mlbcli.errors import MlbError

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "decord2",
    "av",
    "pyarrow",
    "typer",
    "rich",
    "numpy",
    "pillow",
)


def _version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def model_line(model: str | None = None) -> str:
    """The model `mlb answer` would use (`model`, else MLB_MODEL, else the default) and its state here."""
    from mlbcli.models import DEFAULT_MODEL, describe_model

    origin = "--model"
    if model is None:
        origin = "MLB_MODEL" if os.environ.get("MLB_MODEL") else "the default"
        model = os.environ.get("MLB_MODEL") or DEFAULT_MODEL
    return f"model ({origin}): {describe_model(model)}"


def _tiny_families() -> dict[str, Callable[[Path], Path]]:
    """family -> builder of a tiny random checkpoint of it in a folder (`mlbcli.testing.tiny`): every
    family the doctor runs the pipeline on."""
    from mlbcli.testing.tiny import TINY_FAMILIES, build_tiny

    return {family: functools.partial(build_tiny, family) for family in TINY_FAMILIES}


def _devices() -> str:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return ", ".join(found)


def _decoders(workdir: Path) -> str:
    """Decode a synthetic clip (kept in `workdir` for the pipeline checks) with every backend."""
    from mlbcli.io.video import decode_frames, make_test_video

    clip = make_test_video(workdir / "clip.mp4", num_frames=24)
    results = []
    for backend in ("decord", "pyav"):
        frames = decode_frames(clip, num_frames=8, backend=backend)
        results.append(f"{backend} {frames.array.shape[0]} frames")
    return ", ".join(results)


def _pipeline(workdir: Path, family: str, build: Callable[[Path], Path]) -> str:
    """`mlb answer` on the clip with a tiny random checkpoint of `family`, as a user runs it."""
    return _answer(workdir, str(build(workdir / f"tiny-{family}")), family, "uniform", device="cpu")


def _answer(workdir: Path, model: str, name: str, method: str, device: str = "auto") -> str:
    """`mlb answer` of the clip with `model` and `method` (`--keep 0.5` unless "none"), as a user runs it."""
    from mlbcli import api
    from mlbcli.io.writers import read_results

    started = time.perf_counter()
    out = workdir / f"answers-{name}-{method}.parquet"
    summary = api.answer(
        [str(workdir / "clip.mp4")],
        question="What is happening in the video?",
        model=model,
        method=method,
        keep=None if method == "none" else 0.5,
        frames=8,
        max_new_tokens=8,
        device=device,
        run=api.RunOptions(out=str(out), workers=0),
    )
    if summary.failed:
        raise RuntimeError("; ".join(summary.errors))
    row = read_results(out).to_pylist()[0]
    return (
        f"answered in {time.perf_counter() - started:.2f}s, kept {row['visual_tokens_kept']}/"
        f"{row['visual_tokens_in']} visual tokens, flops_ratio {row['flops_ratio']:.3f}"
    )


def checkpoint_summary(model: str) -> str:
    """`model`'s family and what the methods do on it, from its config alone (no weights)."""
    from mlbcli.models import adapter_class_for, load_config
    from mlbcli.selection import describe_methods

    adapter = adapter_class_for(load_config(model))
    rows = describe_methods()
    before = [row.name for row in rows if row.prune_point == "input"]
    if adapter.renumber_input_positions:
        note = (
            f"an image LLM: the {len(before)} methods that prune before the LLM ({', '.join(before)}) "
            "re-sequence the kept tokens (contiguous positions, room in its short context)"
        )
    else:
        note = "a video LLM: kept tokens keep their original positions"
    return (
        f"family {adapter.family}; all {len(rows)} methods apply ({', '.join(r.name for r in rows)}); {note}"
    )


#: The pruning method `mlb doctor --model` runs besides `--method none` (any family takes it).
CHECKPOINT_METHOD = "uniform"


def _checks(workdir: Path, model: str | None = None) -> list[tuple[str, Callable[[], str]]]:
    """The checks: devices, decoding, then the pipeline on every tiny family, or with `model` on that
    checkpoint (its config, then one answer unpruned and one pruned)."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ("devices", _devices),
        ("video decoding", lambda: _decoders(workdir)),
    ]
    if model is not None:
        checks.append((f"checkpoint {model}", functools.partial(checkpoint_summary, model)))
        for method in ("none", CHECKPOINT_METHOD):
            label = f"answer with --method {method}{'' if method == 'none' else ' --keep 0.5'}"
            checks.append((label, functools.partial(_answer, workdir, model, "model", method)))
        return checks
    for family, build in _tiny_families().items():
        check = functools.partial(_pipeline, workdir, family, build)
        checks.append((f"pipeline on a tiny {family} model", check))
    return checks


def _run_checks(checks: list[tuple[str, Callable[[], str]]], echo: Callable[[str], None]) -> bool:
    """Run every check (not just up to the first failure), one line each; True when all pass. After a
    checkpoint that does not load, its answer checks are skipped (they would fail the same way)."""
    ok = loaded = True
    for label, check in checks:
        if not loaded and label.startswith("answer with"):
            echo(f"[skip] {label}: the checkpoint did not load")
            continue
        try:
            echo(f"[ok]   {label}: {check()}")
        except Exception as error:
            ok, loaded = False, loaded and not label.startswith("checkpoint ")
            if isinstance(error, MlbError):  # mlb's own one-line errors (a checkpoint that does not load)
                echo(f"[FAIL] {label}: {error}")
                continue
            echo(f"[FAIL] {label}: {type(error).__name__}: {error}")
            echo("       " + traceback.format_exc().strip().splitlines()[-1])
    return ok


def _workdir(keep_files: bool | str | Path) -> Path:
    """Where the checks write: the folder `keep_files` names (created), else a temporary one."""
    if isinstance(keep_files, (str, Path)):
        folder = Path(keep_files).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return folder.resolve()
    return Path(tempfile.mkdtemp(prefix="mlb-doctor-"))


def run_doctor(
    echo: Callable[[str], None] = print, keep_files: bool | str | Path = False, model: str | None = None
) -> bool:
    """Print versions, the model `mlb answer` would use, then run the checks; True when all pass.

    Without `model`: the pipeline on a tiny random checkpoint of every family (the installation), and
    the line of the model `mlb answer` would use (MLB_MODEL, else the default) as information. With
    `model` (hub id or folder): that checkpoint instead, its family, what the methods do on it, and one
    answer unpruned and one pruned. `keep_files`: True keeps the temporary folder, a folder (str or
    Path) is where the tiny checkpoints and clip are written and kept, ready for `--model`.
    """
    from mlbcli import __version__

    echo(f"mlb {__version__} on Python {platform.python_version()} ({platform.platform()})")
    for name in PACKAGES:
        echo(f"  {name:13s} {_version(name)}")
    if model is None:
        echo(model_line(model))
    workdir = _workdir(keep_files)
    try:
        ok = _run_checks(_checks(workdir, model), echo)
    finally:
        if keep_files:
            echo(f"files kept in {workdir}")
            if model is None and (workdir / "tiny-llava_onevision").is_dir():
                echo(f"try: mlb answer examples/manifest.jsonl --model {workdir / 'tiny-llava_onevision'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if model is not None:
        echo(f"{model}: loads and answers here" if ok else f"{model}: some checks failed (see above)")
        return ok
    echo(
        "all checks passed: mlb is installed correctly; problems with a real model are about the model"
        if ok
        else "some checks failed: this is an installation problem (see above)"
    )
    return ok
