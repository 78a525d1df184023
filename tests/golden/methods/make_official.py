"""Golden fixtures of the pre-LLM peers: their official selection code run on small inputs.

Run with a Python that has torch (e.g. /work/refvenv/bin/python), from the repository root:

    python tests/golden/methods/make_official.py --mirror /work/.mirror

For each method the official code is read from a bare git mirror of its repository at the commit
recorded below (`git show COMMIT:FILE`), cut to the recorded line range, written to a file under a
temporary folder and executed there with the small stubs it needs (a `self` holding its settings);
nothing of it is copied into mlbcli. Each method gets `<method>.pt` (inputs and the official outputs:
kept flat ids t * N + n in entry order, their states, positions) and `<method>.json` (provenance).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
KEEPS = (0.1, 0.25, 0.5)

FASTVID = {
    "repository": "https://github.com/LunarShen/FastVID",
    "mirror": "LunarShen+FastVID",
    "commit": "a40a109cb8df20e8c2c17c6850f8269717369990",
    "file": "fastvid_llavavideo/LLaVA-NeXT/llava/model/language_model/modeling_qwen2.py",
    "lines": [894, 1084],
}
HOLITOM = {
    "repository": "https://github.com/cokeshao/HoliTom",
    "mirror": "cokeshao+HoliTom",
    "commit": "e9b2972f6895c9e7d7fe74eb8c3a2ecaab8056e0",
    "file": "holitom/llava_arch.py",
    "lines": [29, 312],
}
VISIONZIP = {
    "repository": "https://github.com/cokeshao/HoliTom (VisionZip's LLaVA-OneVision port)",
    "mirror": "cokeshao+HoliTom",
    "commit": "e9b2972f6895c9e7d7fe74eb8c3a2ecaab8056e0",
    "file": "visionzip/llava_arch.py",
    "lines": [88, 181],
}


def official_source(mirror: Path, ref: dict[str, Any]) -> str:
    """The recorded line range of the official file at the recorded commit."""
    git_dir = mirror / ref["mirror"] / "repo"
    text = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{ref['commit']}:{ref['file']}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    first, last = ref["lines"]
    return "\n".join(text.splitlines()[first - 1 : last]) + "\n"


def load_module(name: str, source: str, folder: Path) -> types.ModuleType:
    path = folder / f"{name}.py"
    path.write_text(source)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - the official code, pinned
    return module


# -- inputs ---------------------------------------------------------------------------------------------
def videos(T: int, N: int, D: int, seed: int) -> dict[str, torch.Tensor]:
    """Random, static, drifting and cut videos [T, N, D]; every case carries a little noise so that
    no two scores tie (the official code breaks density ties at random)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, D, generator=g)
    noise = torch.randn(T, N, D, generator=g)
    drift = torch.randn(N, D, generator=g)
    other = torch.randn(N, D, generator=g)
    t = torch.arange(T, dtype=torch.float32)[:, None, None]
    cut = torch.where(t < T // 2, base[None], other[None])
    return {
        "random": noise,
        "static": base[None] + 0.01 * noise,
        "drifting": base[None] + 0.15 * t * drift[None] + 0.01 * noise,
        "cut": cut + 0.05 * noise,
    }


def saliency_for(features: torch.Tensor, seed: int) -> torch.Tensor:
    """[T, N] positive, tie-free stand-in for the vision tower's attention."""
    g = torch.Generator().manual_seed(seed + 7)
    return torch.rand(features.shape[:2], generator=g) + 1e-3


# -- FastVID --------------------------------------------------------------------------------------------
def run_fastvid(
    module_src: str,
    x: torch.Tensor,
    attn: torch.Tensor,
    frames: torch.Tensor,
    keep: float,
    params: dict[str, Any],
    grid: tuple[int, int],
    folder: Path,
) -> dict[str, torch.Tensor]:
    """The official block runs on LLaVA-Video's layout: each row of w tokens followed by a newline
    token; its constants (64 frames of 13x13, a newline every 14) are set to this input's."""
    T, N, D = x.shape
    h, w = grid
    src = textwrap.dedent(module_src)
    src = (
        src.replace("64 * 13 * 13", f"{T * N}").replace("% 14", f"% {w + 1}").replace("// 14", f"// {w + 1}")
    )
    src = src.replace("* 14 - 1", f"* {w + 1} - 1")
    body = "def block(self, hidden_states, seq_length, F):\n" + textwrap.indent(src, "    ")
    body += "    return hidden_states, keep_indexs\n"
    module = load_module("fastvid_official", "import torch\n" + body, folder)
    newline = torch.randn(1, D, generator=torch.Generator().manual_seed(99))
    rows = x.reshape(T * h, w, D)
    with_newlines = torch.cat([rows, newline.expand(T * h, 1, D)], dim=1).reshape(
        1, -1, D
    )  # [1, T*h*(w+1), D]
    settings = types.SimpleNamespace(
        video_start_idx=0,
        video_token_len=with_newlines.shape[1],
        frame_num=T,
        frame_attn_weights=attn.reshape(-1),
        frame_global_features=frames,
        fastvid_retention_ratio=keep,
        fastvid_DySeg_c=params["fastvid_segments"],
        fastvid_DySeg_tau=params["fastvid_threshold"],
        fastvid_STPrune_d=params["fastvid_contextual"],
        fastvid_DTM_p=params["fastvid_anchor_every"],
        fastvid_DTM_beta=params["fastvid_beta"],
    )
    hidden, index = module.block(settings, with_newlines, with_newlines.shape[1], F)
    visual = index % (w + 1) != w  # drop the newline tokens the official code re-inserts
    ids = (index[visual] // (w + 1)) * w + index[visual] % (w + 1)
    return {"ids": ids, "states": hidden[0][visual], "positions": ids.clone()}


def fastvid_cases(mirror: Path, folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    src = official_source(mirror, FASTVID)
    cases = []
    for seed, (T, h, w, D) in enumerate([(8, 4, 4, 16), (6, 5, 5, 12), (8, 7, 7, 8)]):
        params = {
            "fastvid_segments": 3,
            "fastvid_threshold": 0.9,
            "fastvid_contextual": 0.4,
            "fastvid_anchor_every": 4,
            "fastvid_beta": 0.6,
        }
        for kind, x in videos(T, h * w, D, seed).items():
            attn = saliency_for(x, seed)
            frames = x.mean(dim=1)
            for keep in KEEPS:
                torch.manual_seed(0)
                try:
                    out = run_fastvid(src, x, attn, frames, keep, params, (h, w), folder)
                except (RuntimeError, ValueError) as error:  # the official code fails (no anchor, overflow)
                    print(
                        f"fastvid {kind} T{T} {h}x{w} keep {keep}: official code failed: {error}",
                        file=sys.stderr,
                    )
                    continue
                cases.append(
                    {
                        "name": f"{kind}-T{T}-{h}x{w}-D{D}-keep{keep}",
                        "features": x,
                        "saliency": attn,
                        "frame_features": frames,
                        "grid": [h, w],
                        "keep": keep,
                        "params": params,
                        "ordered": True,
                        **out,
                    }
                )
    how = (
        "the block cut from Qwen2Model.forward, dedented into a function of (self, hidden_states, "
        "seq_length); `self` holds the settings; LLaVA-Video's hard-coded layout (64 frames of 13x13 "
        "with a newline token after each row) replaced by the input's (T frames of h x w, newline "
        "after each row); ids mapped back from that layout; newline tokens dropped"
    )
    return cases, {**FASTVID, "how": how}


# -- HoliTom ------------------------------------------------------------------------------------------------
def holitom_module(mirror: Path, folder: Path) -> types.ModuleType:
    src = "import math\nimport torch\n\nclass Official:\n" + official_source(mirror, HOLITOM)
    return load_module("holitom_official", src, folder)


def run_holitom(
    module: types.ModuleType, x: torch.Tensor, attn: torch.Tensor, keep: float, settings: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The driver is the reference's `prepare_inputs_labels_for_multimodal` L367-406 (read, not run:
    it needs the model), restated on one video; the methods it calls are the official ones."""
    official = module.Official()
    T, N, _ = x.shape
    tau, beta, contextual, k, max_window = (settings[n] for n in ("tau", "beta", "D", "K", "max_window"))
    normed = F.normalize(x, p=2, dim=-1)
    feature_sim = F.cosine_similarity(normed[:-1], normed[1:], dim=-1)  # [T-1, N]
    windows, reduced = official.select_static_windows(feature_sim, T, tau, max_window)
    total = T * N
    retain = min(keep / ((total - reduced) / total), 1)
    static_feat, dynamic_feat, _, dynamic_attn, static_pos, dynamic_pos = (
        official.get_static_dynamic_features(x, attn, windows, feature_sim, tau)
    )
    # the ids each output token stands for, in the official order ("one_token": static then dynamic)
    ids: list[torch.Tensor] = []
    states: list[torch.Tensor] = []
    for i, (start, end) in enumerate(windows):
        size = end - start + 1
        dyn, dyn_pos = official.merge_tokens_by_attention_density(
            dynamic_feat[i], dynamic_attn[i], dynamic_pos[i], retain, contextual, beta, k
        )
        frames = torch.arange(start, end + 1)[:, None]
        if size > 1:
            sta, sta_pos = official.merge_tokens_by_density(
                static_feat[i].unsqueeze(0), static_pos[i], retain, beta, k
            )
            ids.append((start * N + sta_pos.long()).reshape(-1))
            states.append(sta.flatten(0, 1))
        ids.append((frames * N + dyn_pos.long()).reshape(-1))
        states.append(dyn.flatten(0, 1))
        # cross-check with the official `holitom` (the states it returns, "one_token" layout)
        whole = official.holitom(
            static_feat[i],
            dynamic_feat[i],
            dynamic_attn[i],
            static_pos[i],
            dynamic_pos[i],
            size,
            retain,
            contextual,
            beta,
            k,
            x.dtype,
            "one_token",
        )
        assert torch.allclose(whole, torch.cat(states[-2:] if size > 1 else states[-1:]))
    kept = torch.cat(ids)
    return {"ids": kept, "states": torch.cat(states), "positions": torch.arange(kept.numel())}


def holitom_cases(mirror: Path, folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    module = holitom_module(mirror, folder)
    settings = {"tau": 0.8, "beta": 0.6, "D": 0.0, "K": 7, "max_window": 1024}
    cases = []
    for seed, (T, N, D) in enumerate([(8, 16, 16), (6, 25, 12), (4, 49, 8)]):
        for kind, x in videos(T, N, D, seed).items():
            attn = saliency_for(x, seed)
            for keep in KEEPS:
                for contextual in (0.0,):  # D > 0 fails in the reference (its contextual_pos view)
                    torch.manual_seed(0)
                    out = run_holitom(module, x, attn, keep, {**settings, "D": contextual})
                    params = {"holitom_threshold": 0.8, "holitom_beta": 0.6, "holitom_contextual": contextual}
                    cases.append(
                        {
                            "name": f"{kind}-T{T}-N{N}-D{D}-keep{keep}-ctx{contextual}",
                            "features": x,
                            "saliency": attn,
                            "keep": keep,
                            "params": params,
                            "ordered": True,
                            **out,
                        }
                    )
    how = (
        "the methods of LlavaMetaForCausalLM (L29-312) cut into a class `Official` and called as the "
        "reference's prepare_inputs_labels_for_multimodal L367-406 calls them on one video (features "
        "after the projector and 2x2 pooling = the input, attention = the given saliency); NO_BETA unset "
        "(beta merge, the merge's default), mm_newline_position 'one_token' (LLaVA-OneVision video)"
    )
    return cases, {**HOLITOM, "how": how}


# -- VisionZip ----------------------------------------------------------------------------------------------
def visionzip_cases(mirror: Path, folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    src = "import math\nimport torch\n" + textwrap.dedent(official_source(mirror, VISIONZIP))
    module = load_module("visionzip_official", src, folder)
    ratio = 54 / 64
    cases = []
    for seed, (T, N, D) in enumerate([(8, 16, 16), (6, 25, 12), (4, 49, 8)]):
        for kind, x in videos(T, N, D, seed).items():
            attn = saliency_for(x, seed)
            for keep in KEEPS:
                budget = math.floor(N * keep + 0.5)  # the per-frame count mlb's official variant passes
                dominant = int(budget * ratio)
                out = module.visionzip(
                    x, attn, x, dominant, budget - dominant, x.dtype, "one_token"
                )  # [T, b, D]
                ids = []
                for t in range(T):  # the ids: dominant (top attention, position order), then the targets
                    top = attn[t].topk(dominant).indices.sort().values
                    rest = torch.ones(N, dtype=torch.bool)
                    rest[top] = False
                    rest_idx = rest.nonzero().squeeze(1)
                    step = max(1, rest_idx.numel() // (budget - dominant))
                    targets = rest_idx[torch.arange(0, rest_idx.numel(), step)[: budget - dominant]]
                    ids.append(torch.cat([top, targets]) + t * N)
                kept = torch.cat(ids)
                assert torch.allclose(
                    out[:, :dominant].reshape(-1, D),
                    x.reshape(-1, D)[kept.view(T, -1)[:, :dominant].reshape(-1)],
                )
                cases.append(
                    {
                        "name": f"{kind}-T{T}-N{N}-D{D}-keep{keep}",
                        "features": x,
                        "saliency": attn,
                        "keep": keep,
                        "params": {},
                        "ordered": True,
                        "ids": kept,
                        "states": out.reshape(-1, D),
                        "positions": torch.arange(kept.numel()),
                    }
                )
    how = (
        "the nested function `visionzip` (L88-181) dedented and called per video with hidden_states = the "
        "features, attention = the given saliency, metric = the features (the reference: the last layer's "
        "keys), dominant_num = int(b * 54/64) with b = round(N * keep), mm_newline_position 'one_token'; "
        "the ids of its output restated from its own rule (dominant: topk then position order; targets: "
        "arange(0, R, R // n_ctx)) and checked against its dominant states"
    )
    return cases, {**VISIONZIP, "how": how}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--only", nargs="*", default=["fastvid", "holitom", "visionzip"])
    args = parser.parse_args()
    builders = {"fastvid": fastvid_cases, "holitom": holitom_cases, "visionzip": visionzip_cases}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            cases, provenance = builders[name](args.mirror, Path(tmp))
            torch.save(cases, HERE / f"{name}.pt")
            provenance.update(
                {
                    "cases": len(cases),
                    "torch": torch.__version__,
                    "generator": "tests/golden/methods/make_official.py",
                }
            )
            (HERE / f"{name}.json").write_text(json.dumps(provenance, indent=2) + "\n")
            print(f"{name}: {len(cases)} cases")


if __name__ == "__main__":
    main()
