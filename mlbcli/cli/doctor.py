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
    from mlbcli import api
    from mlbcli.io.writers import read_results

    model = build(workdir / f"tiny-{family}")
    started = time.perf_counter()
    out = workdir / f"answers-{family}.parquet"
    summary = api.answer(
        [str(workdir / "clip.mp4")],
        question="What is happening in the video?",
        model=str(model),
        method="uniform",
        keep=0.5,
        frames=8,
        max_new_tokens=8,
        device="cpu",
        run=api.RunOptions(out=str(out), workers=0),
    )
    if summary.failed:
        raise RuntimeError("; ".join(summary.errors))
    row = read_results(out).to_pylist()[0]
    return (
        f"answered in {time.perf_counter() - started:.2f}s, kept {row['visual_tokens_kept']}/"
        f"{row['visual_tokens_in']} visual tokens, flops_ratio {row['flops_ratio']:.3f}"
    )


def _checks(workdir: Path) -> list[tuple[str, Callable[[], str]]]:
    checks: list[tuple[str, Callable[[], str]]] = [
        ("devices", _devices),
        ("video decoding", lambda: _decoders(workdir)),
    ]
    for family, build in _tiny_families().items():
        check = functools.partial(_pipeline, workdir, family, build)
        checks.append((f"pipeline on a tiny {family} model", check))
    return checks


def _run_checks(checks: list[tuple[str, Callable[[], str]]], echo: Callable[[str], None]) -> bool:
    """Run every check (not just up to the first failure), one line each; True when all pass."""
    ok = True
    for label, check in checks:
        try:
            echo(f"[ok]   {label}: {check()}")
        except Exception as error:
            ok = False
            echo(f"[FAIL] {label}: {type(error).__name__}: {error}")
            echo("       " + traceback.format_exc().strip().splitlines()[-1])
    return ok


def run_doctor(
    echo: Callable[[str], None] = print, keep_files: bool = False, model: str | None = None
) -> bool:
    """Print versions, the model `mlb answer` would use, then run the checks; True when all pass.

    `model` defaults to MLB_MODEL, else the default model. Its line is information, not a check:
    the checks are about the installation.
    """
    from mlbcli import __version__

    echo(f"mlb {__version__} on Python {platform.python_version()} ({platform.platform()})")
    for name in PACKAGES:
        echo(f"  {name:13s} {_version(name)}")
    echo(model_line(model))
    workdir = Path(tempfile.mkdtemp(prefix="mlb-doctor-"))
    try:
        ok = _run_checks(_checks(workdir), echo)
    finally:
        if keep_files:
            echo(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    echo(
        "all checks passed: mlb is installed correctly; problems with a real model are about the model"
        if ok
        else "some checks failed: this is an installation problem (see above)"
    )
    return ok
