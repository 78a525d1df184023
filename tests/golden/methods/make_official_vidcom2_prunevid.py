"""Golden fixtures of VidCom2 and PruneVid: the authors' selection code run on small inputs.

Run with a Python that has torch and numpy (e.g. /work/refvenv/bin/python), from the repository root:

    python tests/golden/methods/make_official_vidcom2_prunevid.py --mirror /work/.mirror

As `make_official.py`: each official file is read from a bare git mirror at the recorded commit
(`git show COMMIT:FILE`), cut to the recorded line ranges, written under a temporary folder and
executed there with the stubs it needs (a `self` holding PLLaVA's config); nothing of it is copied
into mlbcli. Writes `vidcom2.pt` / `prunevid.pt` (inputs and the official outputs: kept flat ids
t * N + n in entry order, their states, positions) and `vidcom2.json` / `prunevid.json` (provenance).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_official import KEEPS, load_module, official_source, videos  # noqa: E402 - shared helpers

VIDCOM2 = {
    "repository": "https://github.com/xuyang-liu16/VidCom2",
    "mirror": "xuyang-liu16+VidCom2",
    "commit": "944a17d14f4848ad080a65eab2b0711a760fa154",
    "file": "token_compressor/vidcom2/vidcom2.py",
    "lines": [1, 115],  # the whole module: vidcom2_compression and its helpers
}
PRUNEVID_MERGE = {
    "repository": "https://github.com/Visual-AI/PruneVid",
    "mirror": "Visual-AI+PruneVid",
    "commit": "b12600c6176c606ee4b6b7d9e26f4aa46d0dfd42",
    "file": "models/pllava/modeling_pllava.py",
    # index_points, cluster_dpc_knn, smooth_labels, segment_lengths, refine_clusters (module level)
    "lines": [92, 316],
    # PllavaForConditionalGeneration.compute_cluster_vectors, spatial_merge_tokens, merge_frames_dynamic
    "method_lines": [714, 827],
}
PRUNEVID_SELECT = {
    "file": "models/pllava/elastic_cache.py",
    "lines": [108, 155],  # VTPWindowCache.__init__ and process_attention
}


# -- VidCom2 ------------------------------------------------------------------------------------------------
def vidcom2_module(mirror: Path, folder: Path) -> types.ModuleType:
    return load_module("vidcom2_official", official_source(mirror, VIDCOM2), folder)


def run_vidcom2(module: types.ModuleType, x: torch.Tensor, keep: float) -> dict[str, torch.Tensor]:
    """LLaVA-OneVision's path (`models/llava.py` L152-161, mm_newline_position "one_token"):
    `vidcom2_compression(features [T*N, D], "llava_ov", base_scale=keep)`; its frame size (196) is set
    to N. The kept per-frame indices are read from a spy on `select_outlier_indices` (the function
    returns states only) and checked against the states it returns."""
    T, N, D = x.shape
    module.MODEL_SPECS["llava_ov"]["tpf"] = N
    seen: list[list[torch.Tensor]] = []
    official_select = module.select_outlier_indices

    def spy(scores: torch.Tensor, scales: torch.Tensor, tpf: int) -> list[torch.Tensor]:
        out: list[torch.Tensor] = official_select(scores, scales, tpf)
        seen.append(out)
        return out

    module.select_outlier_indices = spy
    try:
        states = module.vidcom2_compression(x.reshape(T * N, D), "llava_ov", base_scale=keep)
    finally:
        module.select_outlier_indices = official_select
    ids = torch.cat([idx + t * N for t, idx in enumerate(seen[0])])  # per frame ascending, frame order
    assert torch.equal(states, x.reshape(T * N, D)[ids])
    # the kept tokens are concatenated (then LLaVA's one newline token): contiguous positions
    return {"ids": ids, "states": states, "positions": torch.arange(ids.numel())}


def vidcom2_ties(x: torch.Tensor, keep: float, module: types.ModuleType) -> bool:
    """Whether a frame's k-th and (k+1)-th lowest scores tie (then the kept set is topk's choice)."""
    T, N, D = x.shape
    sel = module.select_low_var_channels(x.reshape(T * N, D))
    v, f = module.compute_gaussian_scores(sel, N)
    scales = module.compute_scales(-v.mean(dim=-1), keep)
    ks = (scales * N).round().long().clamp(min=1).tolist()
    scores = (v + f).sort(dim=-1).values  # [T, N]
    return any(k < N and bool(scores[t, k - 1] == scores[t, k]) for t, k in enumerate(ks))


def vidcom2_cases(mirror: Path, folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    module = vidcom2_module(mirror, folder)
    cases = []
    for seed, (T, N, D) in enumerate([(8, 16, 16), (6, 25, 12), (4, 49, 8), (8, 36, 32)]):
        inputs = videos(T, N, D, seed)
        # exact ties: every frame the same, tokens repeated in pairs (equal scores inside a frame)
        g = torch.Generator().manual_seed(seed + 100)
        half = torch.randn((N + 1) // 2, D, generator=g)
        tied = torch.cat([half, half])[:N][None].expand(T, N, D).contiguous()
        inputs["tied"] = tied
        for kind, x in inputs.items():
            for keep in KEEPS:
                out = run_vidcom2(module, x, keep)
                ties = vidcom2_ties(x, keep, module)
                cases.append(
                    {
                        "name": f"{kind}-T{T}-N{N}-D{D}-keep{keep}",
                        "features": x,
                        "saliency": None,
                        "keep": keep,
                        "params": {},
                        "ordered": not ties,  # tied edges: the kept set is torch.topk's choice
                        **out,
                    }
                )
    how = (
        "the whole module executed from the mirror; vidcom2_compression(features.reshape(T*N, D), "
        "'llava_ov', base_scale=keep) as LLaVA-OneVision's one_token path calls it (models/llava.py "
        "L152-161), MODEL_SPECS['llava_ov']['tpf'] set to N; ids from a spy on select_outlier_indices "
        "(per frame ascending, frame order), checked against the returned states; positions "
        "contiguous (the kept tokens are concatenated). 'tied' cases (identical frames, tokens "
        "repeated in pairs) have equal scores at the budget edge: the set is torch.topk's choice there "
        "(ordered False)"
    )
    return cases, {**VIDCOM2, "how": how}


# -- PruneVid -----------------------------------------------------------------------------------------------
def prunevid_modules(mirror: Path, folder: Path) -> tuple[types.ModuleType, types.ModuleType]:
    functions = official_source(mirror, PRUNEVID_MERGE)
    methods = official_source(mirror, {**PRUNEVID_MERGE, "lines": PRUNEVID_MERGE["method_lines"]})
    src = (
        "import torch\nimport torch.nn.functional as F\nfrom torch import einsum\n\n"
        + functions
        + "\n\nclass Official:\n"
        + methods
    )
    merge = load_module("prunevid_official", src, folder)
    cache_src = "import numpy as np\nimport torch\n\n" + official_source(
        mirror, {**PRUNEVID_MERGE, **PRUNEVID_SELECT}
    )
    return merge, load_module("prunevid_cache_official", cache_src, folder)


def prunevid_videos(T: int, N: int, D: int, seed: int) -> dict[str, torch.Tensor]:
    """The shared videos with noise large enough that no density is within PLLaVA's 1e-6 tie noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, D, generator=g)
    noise = torch.randn(T, N, D, generator=g)
    drift = torch.randn(N, D, generator=g)
    other = torch.randn(N, D, generator=g)
    t = torch.arange(T, dtype=torch.float32)[:, None, None]
    half = torch.where(torch.arange(N)[None, :, None] < N // 2, base[None], noise)  # half static
    return {
        "random": noise,
        "static": base[None] + 0.2 * noise,
        "drifting": base[None] + 0.15 * t * drift[None] + 0.2 * noise,
        "cut": torch.where(t < T // 2, base[None], other[None]) + 0.2 * noise,
        "half-static": half + 0.2 * noise,
    }


def run_prunevid_merge(
    module: types.ModuleType, x: torch.Tensor, grid: tuple[int, int], params: dict[str, float], seed: int
) -> dict[str, Any]:
    """`merge_frames_dynamic` on one video [1, T*N, D]; the cluster centres of every DPC-kNN call are
    read from a spy on `index_points` (called with the centres, `index_down`)."""
    T, N, D = x.shape
    official = module.Official()
    official.config = types.SimpleNamespace(
        num_frames=T,
        pooling_shape=(T, *grid),
        temporal_segment_ratio=params["prunevid_segment_ratio"],
        cluster_ratio=params["prunevid_cluster_ratio"],
    )
    centres: list[torch.Tensor] = []
    official_index_points = module.index_points

    def spy(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        centres.append(idx[0].clone())
        return official_index_points(points, idx)

    module.index_points = spy
    torch.manual_seed(seed)  # cluster_dpc_knn's density noise
    try:
        states, static_sizes, dynamic_sizes, windows = official.merge_frames_dynamic(
            x.reshape(1, T * N, D), threshold=params["prunevid_threshold"], k=7
        )
    finally:
        module.index_points = official_index_points
    return {
        "states": states[0],
        "static_sizes": static_sizes,
        "dynamic_sizes": dynamic_sizes,
        "windows": windows,
        "centres": centres,
    }


def prunevid_merge_ids(x: torch.Tensor, merged: dict[str, Any], threshold: float) -> torch.Tensor:
    """The flat id each merged token stands for (its cluster centre; a static one in the segment's first
    frame), in the official order. The static mask is merge_frames_dynamic's (L785-790) restated; the
    centres are the recorded ones (the first call clusters the frames)."""
    T, N, _ = x.shape
    centres = iter(merged["centres"][1:])
    positions = torch.arange(N)
    ids: list[torch.Tensor] = []
    start = 0
    for W in merged["windows"]:
        unit = torch.nn.functional.normalize(x[start : start + W], dim=-1)  # [W, N, D]
        sim = (torch.einsum("wlc,tlc->wtl", unit, unit).sum(dim=-2) - 1).sum(dim=-2) / (W * (W - 1))
        static = sim > threshold  # W = 1: nan, never static
        groups = [start * N + positions[static]] + [
            t * N + positions[~static] for t in range(start, start + W)
        ]
        for group in groups:
            ids.append(group[next(centres)] if group.numel() > 14 else group)
        start += W
    return torch.cat(ids)


def run_prunevid_select(
    module: types.ModuleType, merged: dict[str, Any], attention: torch.Tensor, alpha: float
) -> torch.Tensor:
    """`VTPWindowCache.process_attention` on the [n] attention as [1, 1 head, 1 query, n] (its max over
    heads and over the text rows is then the attention itself), and `prompt_prefill`'s sort (L174-176):
    the kept indices into the merged sequence, ascending."""
    cache = module.VTPWindowCache(alpha=alpha, selected_layer=10)
    top = cache.process_attention(
        attention.view(1, 1, 1, -1), merged["static_sizes"], merged["dynamic_sizes"], merged["windows"]
    )
    return top.sort().values


def prunevid_cases(mirror: Path, folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    merge_module, cache_module = prunevid_modules(mirror, folder)
    params = {
        "prunevid_segment_ratio": 0.25,
        "prunevid_threshold": 0.8,
        "prunevid_cluster_ratio": 0.5,
        "prunevid_alpha": 0.4,
    }
    cases = []
    skipped = 0
    # T >= 7: the frame clustering takes the 7 nearest frames (topk k=7 over T frames)
    for seed, (T, h, w, D) in enumerate([(8, 4, 4, 16), (8, 5, 5, 12), (7, 6, 6, 32), (8, 7, 7, 8)]):
        for kind, x in prunevid_videos(T, h * w, D, seed).items():
            merged = run_prunevid_merge(merge_module, x, (h, w), params, seed=0)
            again = run_prunevid_merge(merge_module, x, (h, w), params, seed=1)
            if not torch.equal(merged["states"], again["states"]):  # the density noise decided a tie
                skipped += 1
                print(f"prunevid {kind} T{T} {h}x{w}: depends on the tie noise, skipped", file=sys.stderr)
                continue
            ids = prunevid_merge_ids(x, merged, params["prunevid_threshold"])
            assert ids.numel() == merged["states"].shape[0]
            g = torch.Generator().manual_seed(seed + 11)
            attention = torch.rand(ids.numel(), generator=g)  # tie-free
            top = run_prunevid_select(cache_module, merged, attention, params["prunevid_alpha"])
            cases.append(
                {
                    "name": f"{kind}-T{T}-{h}x{w}-D{D}",
                    "features": x,
                    "grid": [h, w],
                    "keep": None,
                    "params": params,
                    "ordered": True,
                    "merge": {
                        "ids": ids,
                        "states": merged["states"],
                        "positions": torch.arange(ids.numel()),  # PLLaVA concatenates the merged tokens
                        "static_sizes": merged["static_sizes"],
                        "dynamic_sizes": merged["dynamic_sizes"],
                        "windows": merged["windows"],
                    },
                    "attention": attention,
                    # after layer 10: the kept tokens keep their merged positions (position_ids[:, index_list])
                    "ids": ids[top],
                    "states": merged["states"][top],
                    "positions": top,
                }
            )
    how = (
        "module-level functions (L92-316) and PllavaForConditionalGeneration's compute_cluster_vectors, "
        "spatial_merge_tokens, merge_frames_dynamic (L714-827, in a class `Official` whose config holds "
        "num_frames = T, pooling_shape = (T, h, w), temporal_segment_ratio 0.25, cluster_ratio 0.5) "
        "called on features [1, T*N, D] with threshold (tau) 0.8, k 7 (scripts/eval.sh's settings); "
        "cluster centres read from a spy on index_points; ids = each merged token's centre (static: "
        "the segment's first frame), the static mask restated from L785-790; every case run under two "
        "seeds of cluster_dpc_knn's 1e-6 density noise and kept only when both agree. In-LLM: "
        "elastic_cache.py VTPWindowCache(alpha=0.4).process_attention (L108-155) on the case's [n] "
        "attention as [1, 1, 1, n] (PLLaVA's max over heads and text rows is then that attention; mlb's "
        "probe gives a mean over heads and question rows instead), indices sorted as prompt_prefill "
        "does (L174-176); positions = the kept tokens' merged positions (position_ids[:, index_list])"
    )
    provenance = {
        **PRUNEVID_MERGE,
        "select": {**PRUNEVID_SELECT, "commit": PRUNEVID_MERGE["commit"]},
        "settings": {**params, "selected_layer": 10, "mlb_layer": 11},
        "skipped_tie_cases": skipped,
        "how": how,
    }
    return cases, provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--only", nargs="*", default=["vidcom2", "prunevid"])
    args = parser.parse_args()
    builders = {"vidcom2": vidcom2_cases, "prunevid": prunevid_cases}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            cases, provenance = builders[name](args.mirror, Path(tmp))
            torch.save(cases, HERE / f"{name}.pt")
            provenance.update(
                {
                    "cases": len(cases),
                    "torch": torch.__version__,
                    "generator": "tests/golden/methods/make_official_vidcom2_prunevid.py",
                }
            )
            (HERE / f"{name}.json").write_text(json.dumps(provenance, indent=2) + "\n")
            print(f"{name}: {len(cases)} cases")


if __name__ == "__main__":
    main()
