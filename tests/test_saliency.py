"""`--saliency tower|proxy`: the vision tower's own attention, captured beside SDPA, equals an eager
reference of the same layer; rows record which saliency a method read; the option's usage rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlbcli.errors import UsageError
from mlbcli.models import saliency as tower_saliency
from mlbcli.selection import MethodOptions, get_method


def _frames(count: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def test_the_capture_is_off_unless_requested(tiny_adapter):
    video = tiny_adapter.encode(tiny_adapter.preprocess(_frames()))
    assert video.saliency is None


def test_siglip_tower_saliency_equals_the_eager_attention_of_the_feature_layer(tiny_adapter):
    inputs = tiny_adapter.preprocess(_frames())
    with tower_saliency.requested():
        video = tiny_adapter.encode(inputs)
    model = tiny_adapter.model
    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    layer = layer[-1] if isinstance(layer, list) else layer
    pixel = inputs["pixel_values_videos"][0]  # [T, 3, S, S]
    original = tower.config._attn_implementation
    tower.config._attn_implementation = "eager"  # the reference: transformers' own eager softmax
    try:
        with torch.no_grad():
            out = tower(pixel, output_attentions=True)
    finally:
        tower.config._attn_implementation = original
    assert tower.config._attn_implementation == original  # the capture restored the config too
    index = layer % (len(getattr(tower, "vision_model", tower).encoder.layers) + 1) - 1
    received = out.attentions[index].float().mean(dim=1).mean(dim=1)  # [T, g*g]
    side = math.isqrt(received.shape[1])
    expected = F.interpolate(
        received.view(-1, 1, side, side), size=[math.ceil(side / 2)] * 2, mode="bilinear"
    )
    assert video.saliency is not None
    assert video.saliency.shape == (video.num_frames, video.tokens_per_frame)
    torch.testing.assert_close(video.saliency, expected.reshape(video.num_frames, -1), atol=1e-6, rtol=1e-5)
    # what the tower produced is untouched by the capture
    plain = tiny_adapter.encode(inputs)
    torch.testing.assert_close(video.features, plain.features, atol=0, rtol=0)


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def qwen_adapter(request, tmp_path_factory):
    from mlbcli.models import load_adapter
    from mlbcli.testing.tiny import build_tiny

    folder = build_tiny(request.param, tmp_path_factory.mktemp(request.param))
    return load_adapter(str(folder), device="cpu")


def _eager_last_block(adapter, inputs) -> torch.Tensor:
    """[sum t*h*w] attention received by each patch in the last vision block, per temporal patch, mean
    over heads and queries, from transformers' own `eager_attention_forward` on the block's inputs."""
    import importlib

    visual = adapter.model.model.visual
    attn = visual.blocks[-1].attn
    seen: dict = {}

    def keep(module, args, kwargs):
        seen.update(kwargs, hidden_states=args[0] if args else kwargs["hidden_states"])

    handle = attn.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with torch.no_grad():
            adapter.encode(inputs)
    finally:
        handle.remove()
    modeling = importlib.import_module(type(attn).__module__)
    x, cu = seen["hidden_states"], seen["cu_seqlens"]
    q, k, v = attn.qkv(x).reshape(x.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = modeling.apply_rotary_pos_emb_vision(q, k, *seen["position_embeddings"])
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, H, S, d]
    rows = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        _, weights = modeling.eager_attention_forward(
            attn, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], None, scaling=attn.scaling
        )
        rows.append(weights.float().mean(dim=1).mean(dim=1).reshape(-1))
    return torch.cat(rows)


def test_qwen_tower_saliency_equals_the_eager_attention_of_the_last_block(qwen_adapter):
    inputs = qwen_adapter.preprocess(_frames(count=4, size=112))
    with tower_saliency.requested():
        video = qwen_adapter.encode(inputs)
    patches = _eager_last_block(qwen_adapter, inputs)  # block order
    merge = qwen_adapter.model.config.vision_config.spatial_merge_size
    tokens = patches.view(-1, merge * merge).mean(dim=-1)
    window = tower_saliency.qwen_window_index(qwen_adapter.model.model.visual, inputs["video_grid_thw"])
    if window is not None:  # Qwen2.5-VL: blocks in window order; the capture puts tokens back in raster order
        tokens = tokens[torch.argsort(window)]
    assert video.saliency is not None
    torch.testing.assert_close(video.saliency, tokens.view(video.num_frames, -1), atol=1e-6, rtol=1e-5)
    assert torch.allclose(video.saliency.sum(dim=1), video.saliency.sum(dim=1)[0])  # per frame, one mass


def test_saliency_applies_only_to_methods_that_read_it():
    with pytest.raises(UsageError, match="--saliency does not apply to --method evs"):
        get_method("evs", MethodOptions(keep=0.5, saliency="tower"))
    with pytest.raises(UsageError, match="--saliency must be"):
        MethodOptions(saliency="cls")
    for name in ("fastvid", "holitom", "visionzip", "flashvid"):
        assert get_method(name, MethodOptions(keep=0.5)).saliency == "tower"
        assert get_method(name, MethodOptions(keep=0.5, saliency="proxy")).saliency == "proxy"
    assert get_method("evs", MethodOptions(keep=0.5)).saliency is None
    # VisionZip's paper reading ranks by the proxy only: --saliency is refused there, and rows say None
    with pytest.raises(UsageError, match="--variant paper"):
        get_method("visionzip", MethodOptions(keep=0.5, variant="paper", saliency="tower"))
    assert get_method("visionzip", MethodOptions(keep=0.5, variant="paper")).saliency is None


def _answer(model: Path, clips: Path, out: Path, **options) -> list[dict]:
    import json

    from mlbcli import api
    from mlbcli.io.writers import read_results

    summary = api.answer(
        [str(clips)],
        model=str(model),
        question="What happens?",
        frames=4,
        max_new_tokens=2,
        run=api.RunOptions(out=str(out), workers=0),
        **options,
    )
    assert summary.failed == 0
    rows = sorted(read_results(out).to_pylist(), key=lambda row: row["video_id"])
    assert json.loads(rows[0]["options_json"])["saliency"] == options.get("saliency")
    return rows


@pytest.mark.parametrize("method", ["visionzip", "fastvid"])
def test_rows_record_the_saliency_read(method, tiny_model_dir, clips_dir, tmp_path):
    tower = _answer(tiny_model_dir, clips_dir, tmp_path / "tower.parquet", method=method, keep=0.25)
    proxy = _answer(
        tiny_model_dir, clips_dir, tmp_path / "proxy.parquet", method=method, keep=0.25, saliency="proxy"
    )
    assert {row["saliency"] for row in tower} == {"tower"}
    assert {row["saliency"] for row in proxy} == {"proxy"}
    # the tower's attention is another signal: it keeps other tokens than the proxy on some video
    assert any(a["kept_tokens"] != b["kept_tokens"] for a, b in zip(tower, proxy, strict=True))
    plain = _answer(tiny_model_dir, clips_dir, tmp_path / "none.parquet", method="uniform", keep=0.25)
    assert {row["saliency"] for row in plain} == {None}


def test_saliency_proxy_reproduces_the_rows_of_the_proxy(tiny_adapter):
    """`--saliency proxy` keeps exactly what the methods kept before tower saliency existed (a video
    without `saliency`), even given a video that carries the tower's attention."""
    from mlbcli.engine.pipeline import EncodedVideo, Pipeline, Request

    with tower_saliency.requested():
        video = tiny_adapter.encode(tiny_adapter.preprocess(_frames(count=6)))
    bare = tiny_adapter.encode(tiny_adapter.preprocess(_frames(count=6)))
    assert video.saliency is not None and bare.saliency is None

    def kept(name: str, options: MethodOptions, tokens) -> tuple[object, object]:
        pipe = Pipeline(tiny_adapter, method=get_method(name, options))
        (result,) = pipe.run([Request(EncodedVideo(tokens, 0.0), "What happens?", generate=False)])
        assert result.error is None and result.stats is not None
        return result.stats.kept_tokens, result.stats.saliency

    for name in ("fastvid", "holitom", "visionzip"):
        before = kept(name, MethodOptions(keep=0.25), bare)  # nothing captured: the proxy, as before
        assert kept(name, MethodOptions(keep=0.25, saliency="proxy"), video) == (before[0], "proxy")
        assert before[1] == "proxy"
        assert kept(name, MethodOptions(keep=0.25), video)[1] == "tower"
