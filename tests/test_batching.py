"""A batch gives every request the answer it gets alone: same tokens, same token statistics (fp32).

The requests differ in video length, frame size and question length, so the packed batch is padded
and rows leave the decode batch at different steps; one video has two questions (a shared prefix
fanned out inside the batch). A wrong mask, a row swap or padding seen by a real token would change
some row's tokens here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlbcli.engine import batch as engine
from mlbcli.engine import prefill as prefill_module
from mlbcli.engine.pipeline import Pipeline, Request
from mlbcli.selection import MethodOptions, get_method
from mlbcli.selection.base import Method

FAMILIES = [
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "llava_next",
    "qwen3_vl",
    "qwen3_vl_moe",
    "llava_video",
]
METHODS = [
    "none",
    "uniform",
    "random",
    "fastv",
    "adatp",
    "mlb",
    "visionzip",
    "dycoke",
    "slowfast",
    "evs",
    "vidcom2",
    "fastvid",
    "holitom",
    "prunevid",
]
QUESTIONS = [
    "What is happening in the video?",
    "Which colour is the large square in the middle of the first frames, and does it move?",
    "How many?",
    "Describe the scene.",
]
MAX_NEW = [4, 2, 5, 3]  # rows finish at different steps


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_adapter):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import (
        build_tiny_llava_next,
        build_tiny_llava_video,
        build_tiny_qwen2_vl,
        build_tiny_qwen3_vl,
    )

    built = {
        "qwen2_vl": build_tiny_qwen2_vl(tmp_path_factory.mktemp("q2"), version="2"),
        "qwen2_5_vl": build_tiny_qwen2_vl(tmp_path_factory.mktemp("q25"), version="2.5"),
        "llava_next": build_tiny_llava_next(tmp_path_factory.mktemp("next")),
        "qwen3_vl": build_tiny_qwen3_vl(tmp_path_factory.mktemp("q3")),
        "qwen3_vl_moe": build_tiny_qwen3_vl(tmp_path_factory.mktemp("q3moe"), moe=True),
        "llava_video": build_tiny_llava_video(tmp_path_factory.mktemp("LLaVA-Video")),
    }
    loaded = {name: load_adapter(str(path), device="cpu") for name, path in built.items()}
    return {"llava_onevision": tiny_adapter, **loaded}


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    shapes = [(6, 90, 120), (4, 64, 64), (8, 72, 96)]  # different lengths and token grids
    return [rng.integers(0, 255, (*shape, 3), dtype=np.uint8) for shape in shapes]


def _requests(pipe: Pipeline, clips: list[np.ndarray]) -> list[Request]:
    videos = [pipe.encode(clip) for clip in clips]
    # video 0 is asked twice (shared prefix inside the batch for question-agnostic methods)
    owners = [0, 1, 0, 2]
    return [
        Request(videos[owner], question, limit)
        for owner, question, limit in zip(owners, QUESTIONS, MAX_NEW, strict=True)
    ]


def _assert_same(batched, alone) -> None:
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
            if attention_b is None:
                assert attention_a is None
            else:
                assert attention_a == pytest.approx(attention_b, rel=1e-4, abs=1e-6)
        _assert_same_info(a.stats.info, b.stats.info)


def _assert_same_info(a, b) -> None:
    """Method diagnostics: equal, except float attention masses (batched matmuls round differently)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_same_info(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same_info(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    else:
        assert a == b


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_one_by_one(adapters, clips, family, method):
    from mlbcli.selection import method_option_rules

    # --keep only where the method has a budget (none and slowfast refuse it)
    keep = {"keep": 0.5} if "keep" in method_option_rules(method)[0] else {}
    pipe = Pipeline(adapters[family], method=method, **keep)
    requests = _requests(pipe, clips)
    batched = pipe.run(requests)
    alone = [Pipeline(adapters[family], method=method, **keep).run([r])[0] for r in requests]
    _assert_same(batched, alone)
    assert [len(r.token_ids) <= limit for r, limit in zip(batched, MAX_NEW, strict=True)] == [True] * 4


def test_padding_really_happens(adapters, clips, monkeypatch):
    """Guards the test above: its rows must have different lengths, so the batch is padded."""
    lengths = []
    pack = prefill_module.pack_rows

    def spy(seqs):
        lengths.append([seq.length for seq in seqs])
        return pack(seqs)

    monkeypatch.setattr(prefill_module, "pack_rows", spy)
    pipe = Pipeline(adapters["qwen2_5_vl"], method="fastv", keep=0.5)
    pipe.run(_requests(pipe, clips))
    assert any(len(set(row)) > 1 for row in lengths)


def test_mixed_methods_decode_together(adapters, clips):
    """Rows with a per-request method (full prefill) and shared-prefix rows are decoded as one batch."""
    adapter = adapters["llava_onevision"]
    fastv = get_method("fastv", MethodOptions(keep=0.25))
    pipe = Pipeline(adapter)
    requests = _requests(pipe, clips)
    requests[1].method = fastv
    requests[3].method = fastv
    batched = pipe.run(requests)
    alone = [Pipeline(adapter).run([r])[0] for r in requests]
    _assert_same(batched, alone)


class _FailsAtLayer(Method):
    """A method whose pruner raises inside the prefill, after layers 0..1 are cached."""

    name = "fails-at-layer-2"
    description = "test only"
    prune_point = "layer"

    def plan(self, video, prompt):
        def boom(ctx: engine.LayerContext) -> engine.LayerKeep:
            raise RuntimeError("pruner exploded")

        return engine.PrunePlan(steps={2: boom})


def test_a_failing_row_fails_alone(adapters, clips):
    adapter = adapters["qwen2_5_vl"]
    pipe = Pipeline(adapter, method="fastv", keep=0.5)
    requests = _requests(pipe, clips)
    requests[1].method = _FailsAtLayer()
    requests[2].prompt = "why " * 200_000  # cannot fit any context: refused before tokenising
    batched = pipe.run(requests)
    assert "pruner exploded" in str(batched[1].error)
    assert "characters" in str(batched[2].error)
    alone = [Pipeline(adapter, method="fastv", keep=0.5).run([r])[0] for r in (requests[0], requests[3])]
    _assert_same([batched[0], batched[3]], alone)


def test_compress_batch_equals_one_by_one(adapters, clips):
    pipe = Pipeline(adapters["llava_next"], method="adatp", keep=0.25)
    requests = [Request(r.video, r.prompt, generate=False) for r in _requests(pipe, clips)]
    batched = pipe.run(requests)
    alone = [pipe.run([r])[0] for r in requests]
    for a, b in zip(batched, alone, strict=True):
        assert a.text is None and a.stats.as_row()["tokens_per_layer"] == b.stats.as_row()["tokens_per_layer"]
        assert torch.equal(a.state.kept_ids, b.state.kept_ids)


def test_encode_many_equals_encode(adapters, clips):
    for family, adapter in adapters.items():
        pipe = Pipeline(adapter)
        together = pipe.encode_many(clips)
        for clip, video in zip(clips, together, strict=True):
            single = pipe.encode(clip).tokens
            torch.testing.assert_close(video.tokens.features, single.features, rtol=1e-5, atol=1e-5)
            assert video.tokens.grid == single.grid, family


# -- the CLI: --batch-size changes nothing but the speed ------------------------------------------------

TIMING = {"decode_s", "encode_s", "prefill_s", "generate_s", "started_at_utc", "options_json"}


def _cli_rows(args: list) -> list[dict]:
    from typer.testing import CliRunner

    from mlbcli.cli.app import app
    from mlbcli.io.writers import read_results

    out = args[args.index("--out") + 1]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    return [
        {k: v for k, v in row.items() if k not in TIMING}
        for row in sorted(
            read_results(out).to_pylist(), key=lambda r: (r["video_id"], r.get("question_id") or "")
        )
    ]


@pytest.mark.parametrize(
    ("command", "method"), [("answer", "fastv"), ("summarize", "uniform"), ("compress", "mlb")]
)
def test_cli_batch_size_gives_the_same_rows(tiny_model_dir, clips_dir, tmp_path, command, method):
    import json
    import shutil

    folder = tmp_path / "clips"
    shutil.copytree(clips_dir, folder)
    (folder / "broken.mp4").write_bytes(b"not a video")  # an error row inside a batch
    manifest = tmp_path / "m.jsonl"
    lines = [
        ("a.mp4", "What moves?"),
        ("b.mp4", "What flashes?"),
        ("a.mp4", "Colour?"),
        ("sub/c.mp4", "Why?"),
    ]
    lines.append(("broken.mp4", "Anything?"))
    manifest.write_text(
        "".join(json.dumps({"video": str(folder / v), "question": q}) + "\n" for v, q in lines)
    )
    source = manifest if command != "summarize" else folder
    common = [command, source, "--model", tiny_model_dir, "--method", method, "--keep", "0.5"]
    common += ["--frames", "6", "--workers", "0", "-q"]
    if command != "compress":
        common += ["--max-new-tokens", "4"]
    one = _cli_rows([*common, "--batch-size", "1", "--out", tmp_path / "one.parquet"])
    three = _cli_rows([*common, "--batch-size", "3", "--out", tmp_path / "three.parquet"])
    assert len(one) == (5 if command != "summarize" else 4)
    assert sum(1 for row in one if row["error"]) == 1
    # equal rows; attention masses (also inside the segments JSON) up to float rounding of batched
    # matmuls (the last-token probe row of fastv is one matrix-vector product)
    for rows in (one, three):
        for row in rows:
            row["segments"] = json.loads(row["segments"]) if row.get("segments") else None
    _assert_same_info(one, three)


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_batch_size_is_a_usage_error(tiny_model_dir, clips_dir, value):
    from typer.testing import CliRunner

    from mlbcli.cli.app import app

    result = CliRunner().invoke(
        app,
        ["answer", str(clips_dir), "--question", "q", "--model", str(tiny_model_dir), "--batch-size", value],
    )
    assert result.exit_code == 2
    assert "--batch-size" in result.output
