"""Generate the DyCoke golden fixtures by running the official code (not part of the package).

Run with the reference venv, from the repository root, after `fetch github:KD-TAO/DyCoke`:

    /work/refvenv/bin/python tests/golden/methods/dycoke_generate.py /work/.mirror/KD-TAO+DyCoke/repo

It reads the official functions at COMMIT from the bare git directory (`git show COMMIT:path`), writes
each line range named below into a module under /tmp, imports it (with `transformers`' `DynamicCache`
stubbed by `object`: the pruning methods use nothing of it), and records what they return:

- `dycoke_ttm.npz`: `dycole_ttm` on [T * N, D] features; the kept ids are found by matching each output
  row to the input row it copies (the features have unique rows), so ids are in the code's order. The
  code copies rows (it merges nothing), so the official states are features[ids] (asserted here).
- `dycoke_kv.npz`: `PrunableDynamicCache.update / update_cache / dycoke_pruning` driven by the decoder
  loop's own DyCoke branch (`Qwen2Model.forward`, exec'd per layer as written), with stand-in decoder
  layers that write token indices as keys and return recorded attention weights [1, H, 1, L]; the keys
  each pruned layer gets back from the cache are the visible set of that step.

`dycoke_provenance.json` records repository, commit, files, line ranges and how each case was built.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = "KD-TAO/DyCoke"
COMMIT = "dd7463498203479d0ff6f2d29c4e72928c0af244"
TTM = ("llava/model/llava_arch.py", 35, 91)  # def dycole_ttm ... return combined_tokens
CACHE = ("llava/model/language_model/modeling_qwen2.py", 47, 114)  # class PrunableDynamicCache
LOOP = ("llava/model/language_model/modeling_qwen2.py", 1136, 1150)  # the decoder loop's DyCoke branch
CONFIG = ("llava/model/language_model/llava_qwen.py", 32, 39)  # class DycokeConfigs
OUT = Path(__file__).resolve().parent


def source(git_dir: str, spec: tuple[str, int, int]) -> str:
    path, first, last = spec
    text = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{COMMIT}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(text.splitlines()[first - 1 : last]) + "\n"


def load(git_dir: str) -> types.SimpleNamespace:
    header = "import torch\nimport torch.nn.functional as F\nfrom typing import List, Tuple\nDynamicCache = object\n"
    module = Path("/tmp/dycoke_official_dd74634.py")
    module.write_text(header + source(git_dir, TTM) + source(git_dir, CACHE) + source(git_dir, CONFIG))
    sys.path.insert(0, "/tmp")
    import dycoke_official_dd74634 as official  # type: ignore[import-not-found]

    loop = compile(textwrap.dedent(source(git_dir, LOOP)), "Qwen2Model.forward (DyCoke branch)", "exec")
    return types.SimpleNamespace(
        ttm=official.dycole_ttm, Cache=official.PrunableDynamicCache, Config=official.DycokeConfigs, loop=loop
    )


# -- TTM ---------------------------------------------------------------------------------------------------
def video(kind: str, T: int, N: int, D: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(T, N, D, generator=g)
    if kind == "static":  # one frame repeated, a little noise so that no two rows are equal
        return torch.randn(1, N, D, generator=g).expand(T, N, D) + 1e-2 * torch.randn(T, N, D, generator=g)
    if kind == "drifting":
        base, drift = torch.randn(1, N, D, generator=g), torch.randn(1, N, D, generator=g)
        steps = torch.arange(T, dtype=torch.float32).view(T, 1, 1)
        return base + 0.15 * steps * drift + 0.3 * torch.randn(T, N, D, generator=g)
    if kind == "cut":  # two scenes, the cut in the middle of a window
        a, b = torch.randn(1, N, D, generator=g), torch.randn(1, N, D, generator=g)
        scene = (torch.arange(T) >= T // 2 + 1).float().view(T, 1, 1)
        return (1 - scene) * a + scene * b + 0.2 * torch.randn(T, N, D, generator=g)
    raise ValueError(kind)


def kept_per_compared_frame(T: int, N: int, keep: float) -> int:
    """mlb's --keep reading of the official variant, written out independently: the window heads (and
    the last window's frame a+2) whole, every compared frame the same count, round(rest / compared)."""
    used = T - T % 2
    whole = len(range(0, used, 2)) - len(range(0, T - 4, 4))
    compared = used - whole
    budget = max(1, min(T * N, math.floor(T * N * keep + 0.5)))
    return max(0, min(N, math.floor((budget - whole * N) / compared + 0.5)))


def ttm_cases(official: types.SimpleNamespace) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    arrays: dict[str, np.ndarray] = {}
    cases: list[dict[str, Any]] = []
    shapes = [(8, 16, 8), (12, 25, 16), (16, 49, 16), (6, 30, 8), (10, 16, 16), (7, 25, 8), (9, 16, 32)]
    kinds = ["random", "static", "drifting", "cut"]
    settings: list[tuple[str, float]] = [("keep", 0.1), ("keep", 0.25), ("keep", 0.5)]
    settings += [("merge_ratio", 0.7), ("merge_ratio", 0.3), ("merge_ratio", 0.9)]
    seed = 0
    for T, N, D in shapes:
        for kind in kinds:
            seed += 1
            x = video(kind, T, N, D, seed)
            flat = x.reshape(T * N, D)
            source = f"video{seed:02d}"
            arrays[source] = x.numpy()  # [T, N, D], shared by the settings below
            for how, value in settings:
                if how == "keep":  # the code takes K only: pass the K whose int((1-K)N) is our count
                    count = kept_per_compared_frame(T, N, value)
                    ratio = 1.0 - (count + 0.5) / N
                else:
                    ratio = value
                out = official.ttm(flat.clone(), N, ratio)  # [K, D]
                match = (out[:, None, :] == flat[None, :, :]).all(-1)  # [K, T*N]
                # every output row is an exact copy of one input row (no merging): states = features[ids]
                assert bool((match.sum(1) == 1).all()), "every output row copies exactly one input row"
                ids = match.float().argmax(1)
                assert torch.equal(out, flat[ids])
                name = f"ttm{len(cases):03d}"
                arrays[f"{name}_ids"] = ids.numpy()
                cases.append(
                    {
                        "name": name,
                        "features": source,
                        "video": kind,
                        "T": T,
                        "N": N,
                        "D": D,
                        "seed": seed,
                        how: value,
                        "official_merging_ratio": ratio,
                        "kept": int(ids.numel()),
                        "tie_free": tie_free(x),
                    }
                )
    return arrays, cases


def tie_free(x: torch.Tensor) -> bool:
    """No two same-position similarities of a frame pair the code ranks are closer than 1e-6."""
    T = x.shape[0]
    pairs = [(i, i + 1) for i in range(0, T - 1, 2)] + [(i, i + 2) for i in range(0, T - 4, 4)]
    for a, b in pairs:
        sim = F.cosine_similarity(x[a], x[b], dim=1).sort().values
        if bool((sim[1:] - sim[:-1] < 1e-6).any()):
            return False
    return True


# -- KV ----------------------------------------------------------------------------------------------------
class StandInLayer:
    """A decoder layer that only talks to the cache: keys = token indices; returns recorded weights."""

    def __init__(self, index: int, weights: dict[int, torch.Tensor], seen: dict[int, list[int]]):
        self.index, self.weights, self.seen = index, weights, seen

    def __call__(
        self, hidden_states: torch.Tensor, *, past_key_value: Any, position_ids: torch.Tensor, **_: Any
    ):
        q = position_ids.shape[1]
        key = position_ids.to(torch.float32).view(1, 1, q, 1)  # [B, Hkv, q, 1]: each key holds its index
        keys, _ = past_key_value.update(key, key, self.index)
        self.seen[self.index] = keys.view(-1).long().tolist()
        length = keys.shape[-2]
        weights = self.weights.get(self.index, torch.zeros(1, 1, q, length))
        return (hidden_states, weights, past_key_value)


def run_decode(official: types.SimpleNamespace, case: dict[str, Any], heads: torch.Tensor) -> list[list[int]]:
    """Prefill, then one forward per decode step through the official DyCoke branch; per step the video
    keys (0..n-1) layer L gets from the cache. heads: [S, H, L0 + S] per-step weights of layer L-1."""
    start, n, text, layers, L = case["start"], case["n"], case["text"], case["layers"], case["L"]
    config = official.Config()
    config.dycoke_layer_idx, config.dycoke_radio = L, case["P"]
    config.image_token_start_index = start
    config.image_token_length = n - 1  # llava_arch.py:390, `image_feature.size()[0] - 1` of the TTM output
    cache = official.Cache()
    model = types.SimpleNamespace(dycoke=True, dycoke_l=L, DycokeConfig=config)
    prefill = start + n + 1 + text  # prefix, video, image_newline, question
    visible: list[list[int]] = []
    for step in range(-1, heads.shape[0]):
        seq_length = prefill if step < 0 else 1
        past = 0 if step < 0 else prefill + step
        positions = torch.arange(past, past + seq_length).view(1, -1)
        weights = {} if step < 0 else {L - 1: heads[step, :, : past + 1].view(1, -1, 1, past + 1)}
        seen: dict[int, list[int]] = {}
        layer_outputs: Any = None
        hidden_states = torch.zeros(1, seq_length, 1)
        for layer_idx in range(layers):
            scope = {
                "self": model,
                "seq_length": seq_length,
                "past_key_values_length": past,
                "layer_idx": layer_idx,
                "past_key_values": cache,
                "layer_outputs": layer_outputs,
                "position_ids": positions,
                "decoder_layer": StandInLayer(layer_idx, weights, seen),
                "hidden_states": hidden_states,
                "output_attentions": True,
                "use_cache": True,
            }
            exec(official.loop, {}, scope)
            layer_outputs = scope["layer_outputs"]
        if step >= 0:
            for j in range(L, layers):  # every pruned layer sees the same keys within a step
                assert seen[j] == seen[L]
            visible.append(sorted(k - start for k in seen[L] if start <= k < start + n))
    return visible


def attention_sequence(case: dict[str, Any], seed: int) -> torch.Tensor:
    """[S, H, L0 + S]: per step, per head, a softmax row over the keys the step's token sees. A step is
    'same' (the previous logits moved a little: cosine above 0.9) or 'new' (fresh logits)."""
    g = torch.Generator().manual_seed(seed)
    S, H = len(case["modes"]), case["heads"]
    total = case["start"] + case["n"] + 1 + case["text"] + S
    logits = torch.randn(H, total, generator=g) * case["sharpness"]
    out = torch.zeros(S, H, total)
    prefill = total - S
    for s, mode in enumerate(case["modes"]):
        if mode == "new":
            logits = torch.randn(H, total, generator=g) * case["sharpness"]
        else:
            logits = logits + case["jitter"] * torch.randn(H, total, generator=g)
        seen = prefill + s + 1
        out[s, :, :seen] = torch.softmax(logits[:, :seen], dim=-1)
    return out


def kv_cases(official: types.SimpleNamespace) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    arrays: dict[str, np.ndarray] = {}
    cases: list[dict[str, Any]] = []
    patterns = {
        "mixed": ["new", "same", "same", "new", "same", "new", "new", "same", "same", "same", "new", "same"],
        "steady": ["new"] + ["same"] * 11,
        "restless": ["new"] * 12,
    }
    settings = [(20, 0.7, 2.0, 0.05), (49, 0.7, 2.0, 0.05), (64, 0.5, 1.0, 0.1), (100, 0.9, 3.0, 0.02)]
    seed = 100
    for n, P, sharpness, jitter in settings:
        for pattern, modes in patterns.items():
            seed += 1
            case = {
                "n": n,
                "P": P,
                "L": 3,
                "layers": 5,
                "start": 5,
                "text": 7,
                "heads": 4,
                "sharpness": sharpness,
                "jitter": jitter,
                "pattern": pattern,
                "modes": modes,
                "seed": seed,
            }
            heads = attention_sequence(case, seed)
            visible = run_decode(official, case, heads)
            # what dycoke_pruning reads: layer L-1's weights, mean over heads, last query, the video span
            start = case["start"]
            video = torch.stack([heads[s].mean(0)[start : start + n] for s in range(len(modes))])  # [S, n]
            name = f"kv{len(cases):03d}"
            arrays[f"{name}_attention"] = video.numpy()
            arrays[f"{name}_visible"] = np.concatenate([np.asarray(v, dtype=np.int64) for v in visible])
            arrays[f"{name}_counts"] = np.asarray([len(v) for v in visible], dtype=np.int64)
            sims = [None] + [
                float(F.cosine_similarity(video[s, : n - 1], video[s - 1, : n - 1], dim=0))
                for s in range(1, len(modes))
            ]
            case.update(name=name, similarity=sims, pruned=[len(v) < n for v in visible])
            cases.append(case)
    return arrays, cases


def main() -> None:
    git_dir = sys.argv[1]
    official = load(git_dir)
    torch.manual_seed(0)
    ttm_arrays, ttm = ttm_cases(official)
    kv_arrays, kv = kv_cases(official)
    np.savez_compressed(OUT / "dycoke_ttm.npz", **ttm_arrays)
    np.savez_compressed(OUT / "dycoke_kv.npz", **kv_arrays)
    provenance = {
        "repository": f"https://github.com/{REPO}",
        "commit": COMMIT,
        "commit_date": "2025-11-22 (HEAD at generation; the code last changed in 8df4296, 2025-04-10)",
        "functions": [
            {"name": "dycole_ttm", "file": TTM[0], "lines": [TTM[1], TTM[2]]},
            {"name": "PrunableDynamicCache", "file": CACHE[0], "lines": [CACHE[1], CACHE[2]]},
            {"name": "Qwen2Model.forward, DyCoke branch", "file": LOOP[0], "lines": [LOOP[1], LOOP[2]]},
            {"name": "DycokeConfigs", "file": CONFIG[0], "lines": [CONFIG[1], CONFIG[2]]},
        ],
        "how": __doc__,
        "torch": torch.__version__,
        "generator": "tests/golden/methods/dycoke_generate.py",
        "ttm_cases": ttm,
        "kv_cases": kv,
    }
    (OUT / "dycoke_provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    print(f"{len(ttm)} TTM cases, {len(kv)} KV cases")


if __name__ == "__main__":
    main()
