"""The 2026 families (issue 21) against their stock transformers models, on tiny checkpoints in the real
repositories' layouts: LLaVA-NeXT-Video (and, as they land, SmolVLM2, InternVL3.5, GLM-4.1V/4.6V).

For each family: the engine with an empty schedule is the stock `generate()` logit for logit (batch 1),
a batch of 4 rows gives the stock batched `generate()`'s tokens (left padding), `--method fastv --keep
1.0` is `--method none` token for token, a batch equals one-by-one under every method, every method meets
its budget or says why, and `mlb answer` runs through the CLI on a synthetic clip.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from helpers_engine import no_eos, stock_generate

from mlbcli.engine import batch as engine
from mlbcli.engine.pipeline import Pipeline, Request
from mlbcli.selection import METHODS as BUILTIN_METHODS
from mlbcli.selection import method_option_rules

QUESTION = "What is happening in the video?"
QUESTIONS = [QUESTION, "Which colour is the square?", "How many objects are there?", "Describe the video."]
FAMILIES = ["llava_next_video", "smolvlm", "internvl", "glm4v", "glm46v"]
METHODS = list(BUILTIN_METHODS)  # every registered method (the method table, no plugin needed)
BUDGET_METHODS = ["uniform", "random", "fastv", "adatp", "mlb", "visionzip", "dycoke"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from mlbcli.testing.tiny import build_tiny

    return {name: str(build_tiny(name, tmp_path_factory.mktemp(f"tiny-{name}"))) for name in FAMILIES}


@pytest.fixture(scope="module")
def adapters(model_dirs):
    from mlbcli.models import load_adapter

    return {name: load_adapter(path, device="cpu") for name, path in model_dirs.items()}


def engine_generate(adapter, video, question, max_new_tokens, plan=None):
    """Prefill with the adapter's own model inputs (interleaved visual slots) + greedy decode with logits."""
    prompt = adapter.build_prompt(question, video)
    batch, errors = engine.prefill_batch(adapter, [adapter.model_inputs(prompt, video)], [plan])
    assert not errors, errors
    with no_eos(adapter):
        gen = engine.greedy_decode(adapter, batch.rows[0], max_new_tokens=max_new_tokens, keep_logits=True)
    return prompt, batch.rows[0], gen


def _clip(frames: int = 6, seed: int = 0, size: tuple[int, int] = (90, 120)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (frames, *size, 3), dtype=np.uint8)


# -- the stock inputs of each family, as its official processor builds them ----------------------------------


def _next_video_inputs(adapter, pixels: list[dict[str, torch.Tensor]], prompts, ids=None) -> dict[str, Any]:
    return {"pixel_values_videos": torch.cat([p["pixel_values_videos"] for p in pixels])}  # [B, T, 3, S, S]


def _smolvlm_inputs(adapter, pixels: list[dict[str, torch.Tensor]], prompts, ids=None) -> dict[str, Any]:
    return {"pixel_values": torch.cat([p["pixel_values"] for p in pixels])}  # [B, T, 3, S, S]


def _internvl_inputs(adapter, pixels: list[dict[str, torch.Tensor]], prompts, ids=None) -> dict[str, Any]:
    return {"pixel_values": torch.cat([p["pixel_values"] for p in pixels])}  # [sum T, 3, S, S]


def _glm_inputs(adapter, pixels: list[dict[str, torch.Tensor]], prompts, ids=None) -> dict[str, Any]:
    from types import SimpleNamespace

    ids = prompts[0].input_ids if ids is None else ids  # [B, L], left-padded for a batch
    return {
        "pixel_values_videos": torch.cat([p["pixel_values_videos"] for p in pixels]),
        "video_grid_thw": torch.cat([p["video_grid_thw"] for p in pixels]),
        "mm_token_type_ids": adapter.mm_token_type_ids(SimpleNamespace(input_ids=ids)),
    }


#: family -> (adapter, its pixel inputs per row, prompts) -> the visual kwargs of stock `generate()`.
STOCK_VISUAL: dict[str, Callable[..., dict[str, Any]]] = {
    "llava_next_video": _next_video_inputs,
    "smolvlm": _smolvlm_inputs,
    "internvl": _internvl_inputs,
    "glm4v": _glm_inputs,
    "glm46v": _glm_inputs,
}


def _stock_batch(adapter, name: str, clips: list[np.ndarray], questions: list[str]):
    """Stock `generate()` on the rows left-padded into one batch, as a processor with padding_side="left"
    builds them: (prompts, output)."""
    pixels = [adapter.preprocess(clip) for clip in clips]
    videos = [adapter.encode(p) for p in pixels]
    prompts = [adapter.build_prompt(q, v) for q, v in zip(questions, videos, strict=True)]
    width = max(p.length for p in prompts)
    pad = adapter.tokenizer.pad_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - prompt.length :] = prompt.input_ids[0]
        mask[row, width - prompt.length :] = 1
    visual = STOCK_VISUAL[name](adapter, pixels, prompts, ids)
    out = stock_generate(adapter, 6, input_ids=ids, attention_mask=mask, **visual)
    return prompts, out, width


# -- parity with stock generate --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_empty_schedule_reproduces_stock_generate(adapters, name):
    adapter = adapters[name]
    clip = _clip(7)
    pixel = adapter.preprocess(clip)
    video = adapter.encode(pixel)
    prompt, _, gen = engine_generate(adapter, video, QUESTION, 10)
    visual = STOCK_VISUAL[name](adapter, [pixel], [prompt])
    out = stock_generate(adapter, 10, input_ids=prompt.input_ids, **visual)
    assert gen.token_ids == out.sequences[0, prompt.length :].tolist()
    for ours, theirs in zip(gen.logits, out.logits, strict=True):
        assert torch.equal(ours, theirs[0].float())  # identical, not merely close


@pytest.mark.parametrize("name", FAMILIES)
def test_output_depends_on_video(adapters, name):
    """Guards the tiny model itself: a model that ignores the video would make the tests vacuous."""
    adapter = adapters[name]
    a = engine_generate(adapter, adapter.encode(adapter.preprocess(_clip(6))), QUESTION, 6)[2].token_ids
    same = np.full_like(_clip(6), 200)
    b = engine_generate(adapter, adapter.encode(adapter.preprocess(same)), QUESTION, 6)[2].token_ids
    assert a != b


@pytest.mark.parametrize("method", ["none", "fastv"])
@pytest.mark.parametrize("name", FAMILIES)
def test_batch_of_four_equals_stock_batched_generate(adapters, name, method):
    """Four rows (different videos and question lengths) in one `Pipeline.run` give the tokens of the
    stock batched `generate()` on the same rows, left-padded; `fastv --keep 1.0` prunes nothing."""
    adapter = adapters[name]
    clips = [_clip(6, seed=s) for s in range(4)]
    prompts, out, width = _stock_batch(adapter, name, clips, QUESTIONS)
    keep = {"keep": 1.0} if method == "fastv" else {}
    pipe = Pipeline(adapter, method=method, **keep)
    results = pipe.run([Request(pipe.encode(clip), q, 6) for clip, q in zip(clips, QUESTIONS, strict=True)])
    for row, result in enumerate(results):
        assert result.error is None, result.error
        assert result.token_ids == out.sequences[row, width:].tolist(), row
        assert result.stats.keep_realized == 1.0
    assert len({tuple(r.token_ids) for r in results}) > 1  # the rows really differ


@pytest.mark.parametrize("name", FAMILIES)
def test_fastv_keep_one_equals_none(adapters, name):
    adapter = adapters[name]
    encoded = Pipeline(adapter).encode(_clip(6, seed=5))
    none = Pipeline(adapter, method="none").answer(encoded, QUESTION, max_new_tokens=6)
    full = Pipeline(adapter, method="fastv", keep=1.0).answer(encoded, QUESTION, max_new_tokens=6)
    assert full.token_ids == none.token_ids and full.stats.keep_realized == 1.0
    pruned = Pipeline(adapter, method="fastv", keep=0.25).answer(encoded, QUESTION, max_new_tokens=6)
    assert pruned.stats.visual_tokens_kept < none.stats.visual_tokens_kept  # guards the comparison


@pytest.mark.parametrize("name", FAMILIES)
def test_pruning_removes_frame_tokens_only_and_keeps_positions(adapters, name):
    """Uniform pruning before the LLM: the text between frames (labels, timestamps, delimiters) stays, the
    survivors keep their own positions (never renumbered), and the first logits equal the stock model
    fed exactly those embeddings at those positions. A wrong slot map or renumbering fails here."""
    from mlbcli.selection import MethodOptions, get_method

    adapter = adapters[name]
    video = adapter.encode(adapter.preprocess(_clip(6, seed=9)))
    prompt = adapter.build_prompt(QUESTION, video)
    plan = get_method("random", MethodOptions(keep=0.3, seed=1)).plan(video, prompt)
    _, state, gen = engine_generate(adapter, video, QUESTION, 2, plan)
    slots = prompt.visual_slots()
    kept = torch.ones(prompt.length, dtype=torch.bool)
    kept[slots] = False
    kept[slots[state.kept_ids]] = True
    keep = torch.nonzero(kept).flatten()
    assert 0 < state.kept_ids.numel() < video.num_visual
    assert (
        state.position_ids.shape[-1]
        == keep.numel()
        == prompt.length - video.num_visual + state.kept_ids.numel()
    )
    full = adapter.position_ids(prompt, video)
    assert torch.equal(state.position_ids, full[..., keep])
    with torch.inference_mode():
        out = adapter.model(
            inputs_embeds=adapter.embed(prompt, video)[:, keep],
            position_ids=full[..., keep],
            logits_to_keep=1,
        )
    assert torch.equal(out.logits[:, -1].float(), gen.logits[0][None])


# -- batched == one by one, every method ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", FAMILIES)
def test_batch_equals_one_by_one_under_pruning(adapters, name, method):
    adapter = adapters[name]
    keep = {"keep": 0.5} if "keep" in method_option_rules(method)[0] else {}  # none/slowfast refuse it
    pipe = Pipeline(adapter, method=method, **keep)
    videos = [
        pipe.encode(_clip(f, seed=f, size=s)) for f, s in [(6, (90, 120)), (4, (64, 64)), (8, (72, 96))]
    ]
    requests = [
        Request(videos[o], q, m) for o, q, m in zip([0, 1, 0, 2], QUESTIONS, [4, 2, 5, 3], strict=True)
    ]
    batched = pipe.run(requests)
    alone = [Pipeline(adapter, method=method, **keep).run([r])[0] for r in requests]
    for a, b in zip(batched, alone, strict=True):
        assert a.error is None and b.error is None, (a.error, b.error)
        assert a.token_ids == b.token_ids
        row_a, row_b = a.stats.as_row(), b.stats.as_row()
        attention = [
            (row_a.pop(column), row_b.pop(column))
            for column in ("attention_per_frame", "attention_per_frame_debiased")
        ]
        assert row_a == row_b  # counts, per-layer tokens, kept per frame, FLOPs: exact
        for attention_a, attention_b in attention:
            if attention_b is not None:
                assert attention_a == pytest.approx(attention_b, rel=1e-4, abs=1e-6)


# -- every method: runs, measures, meets the budget or says why ---------------------------------------------------


@pytest.mark.parametrize("frames", [1, 3, 8])
@pytest.mark.parametrize("name", FAMILIES)
def test_budget_met_or_explained_for_every_method(adapters, name, frames):
    from mlbcli.errors import UsageError

    adapter = adapters[name]
    encoded = Pipeline(adapter).encode(_clip(frames, seed=frames, size=(56, 56)))
    video = encoded.tokens
    T, n = video.num_frames, video.num_visual
    budget = math.floor(n * 0.25 + 0.5)
    explained = {}
    for method in BUDGET_METHODS:
        if method == "mlb" and budget <= T and not adapter.renumber_input_positions:
            with pytest.raises(UsageError, match="summary tail"):
                Pipeline(adapter, method=method, keep=0.25).reduce(encoded, QUESTION)
            continue
        stats, _ = Pipeline(adapter, method=method, keep=0.25).reduce(encoded, QUESTION)
        if stats.keep_note is None:
            assert 2 * abs(stats.visual_tokens_kept - budget) <= max(1, T), (method, stats.visual_tokens_kept)
        else:
            explained[method] = stats.keep_note
            assert f"budget {budget}" in stats.keep_note
    assert set(explained) <= {"dycoke"}, explained


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", FAMILIES)
def test_every_method_end_to_end(adapters, name, method):
    adapter = adapters[name]
    keep = {"keep": 0.5} if "keep" in method_option_rules(method)[0] else {}
    pipe = Pipeline(adapter, method=method, **keep)
    encoded = pipe.encode(_clip(6))
    result = pipe.answer(encoded, QUESTION, max_new_tokens=3)
    stats, video = result.stats, encoded.tokens
    assert 1 <= len(result.token_ids) <= 3
    assert stats.visual_tokens_in == video.num_visual
    assert stats.visual_tokens_kept == stats.tokens_per_layer[-1]
    assert len(stats.kept_per_frame) == video.num_frames
    assert sum(stats.kept_per_frame) + stats.appended_tokens == stats.visual_tokens_kept
    if method == "none":
        assert stats.keep_realized == 1.0 and stats.flops_ratio == 1.0
    elif method not in ("slowfast", "mlb"):
        assert stats.flops_ratio < 1.0


# -- config-only cost, CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_flops_from_config_counts_the_tokens_a_run_sees(model_dirs, adapters, name):
    from mlbcli.api import flops

    dynamic = callable(getattr(type(adapters[name]), "frame_size", None))  # GLM: sized by the video
    size = {"resolution": "112x112"} if dynamic else {}
    plan = flops(model=model_dirs[name], method="uniform", keep=0.5, frames=8, **size)
    assert plan.family == name
    adapter = adapters[name]
    saved = dict(adapter.preprocess_config)
    if dynamic:  # `mlb flops` knows the config alone: the processor's default pixel bounds
        adapter.preprocess_config.pop("size")
    try:
        run = Pipeline(adapter).encode(_clip(8, size=(112, 112))).tokens
    finally:
        adapter.preprocess_config.update(saved)
    assert plan.visual_tokens == run.num_visual
    assert 0 < plan.flops < plan.flops_vanilla


@pytest.mark.parametrize("command", ["answer", "compress", "summarize"])
@pytest.mark.parametrize("name", FAMILIES)
def test_cli_commands_with_the_checkpoint(model_dirs, clips_dir, tmp_path, name, command):
    """`mlb answer|compress|summarize clip --model <checkpoint>` end to end (decode -> encode -> prune ->
    answer -> Parquet), with `--batch-size 2` over two clips."""
    from typer.testing import CliRunner

    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    out = tmp_path / "rows.parquet"
    args = [command, str(clips_dir / "a.mp4"), str(clips_dir / "b.mp4"), "--model", model_dirs[name]]
    args += ["--method", "fastv", "--keep", "0.5", "--frames", "6", "--batch-size", "2", "--workers", "0"]
    if command != "summarize":
        args += ["--question", QUESTION]
    if command != "compress":
        args += ["--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = read_results(out).to_pylist()
    assert len(rows) == 2
    for row in rows:
        assert row["error"] is None
        assert row["visual_tokens_kept"] < row["visual_tokens_in"]
        text = {"answer": "answer", "summarize": "summary"}.get(command)
        assert text is None or row[text] is not None
