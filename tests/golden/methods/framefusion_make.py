"""Golden fixtures for `--method framefusion --variant official`: the official code run on small inputs.

Provenance: thu-nics/FrameFusion at commit fbec1d2e6bd383361c2c87ca13e73f80a8c1a9e9 (MIT licence),
`framefusion/main.py` lines 1-380 (`FrameFusion.prepare`, `forward`, `compute_similarity_and_token_index_by_patch`,
`merge_tokens_and_get_mask`, `_compute_pruning_ratio`, `find_contigious_latter_index`). How: the file is
read from a snapshot of the repository (`git show COMMIT:path`, the bare git directory in
$FRAMEFUSION_GIT) into a temporary folder and imported (it needs torch only). The generator drives
`FrameFusion.forward` the way `framefusion/models/qwen2/modeling_qwen2.py` does: one call before layer
0 (no attention), then one call per layer with that layer's last-row attention (given, random), until
pruning is done. The sequence is the visual block alone (patch type = place in the frame); the
position embeddings passed in are the tokens' flat ids, so the ones that come out name the survivors.
Defaults of `apply_framefusion` (similarity_lower_bound 0.6, ratio_lower_bound 0.1), cost = --keep,
28 layers (the official constant). Run:
    FRAMEFUSION_GIT=/work/.mirror/thu-nics+FrameFusion/repo /work/refvenv/bin/python tests/golden/methods/framefusion_make.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

COMMIT = "fbec1d2e6bd383361c2c87ca13e73f80a8c1a9e9"
FILE = "framefusion/main.py"
OUT = Path(__file__).with_name("framefusion_official.pt")


def official(git_dir: str) -> type:
    root = Path(tempfile.mkdtemp())
    text = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{COMMIT}:{FILE}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (root / "framefusion_main.py").write_text(text)
    sys.path.insert(0, str(root))
    from framefusion_main import FrameFusion

    return FrameFusion


def video(kind: str, T: int, N: int, D: int, g: torch.Generator) -> torch.Tensor:
    base = torch.randn(N, D, generator=g)
    if kind == "random":
        return torch.randn(T, N, D, generator=g)
    if kind == "static":
        return base.expand(T, N, D) + 0.3 * torch.randn(T, N, D, generator=g)
    if kind == "drifting":
        drift = torch.randn(N, D, generator=g)
        return torch.stack([base + 0.25 * t * drift for t in range(T)]) + 0.3 * torch.randn(
            T, N, D, generator=g
        )
    other = torch.randn(N, D, generator=g)
    return torch.stack([base if t < T // 2 else other for t in range(T)]) + 0.5 * torch.randn(
        T, N, D, generator=g
    )


def run(FrameFusion: type, features: torch.Tensor, keep: float, g: torch.Generator) -> dict:
    T, N, D = features.shape
    L = T * N
    fusion = FrameFusion(cost=keep, similarity_lower_bound=0.6, ratio_lower_bound=0.1)
    fusion.prepare(torch.arange(N).repeat(T)[None], N, 0, L, L, L)
    hidden = features.reshape(1, L, D).clone()
    ids = torch.arange(L, dtype=torch.float32).view(1, L, 1)
    hidden, pe, _ = fusion.forward(hidden, [ids, ids.clone()], None)
    attention: dict[int, torch.Tensor] = {}
    layer = 1
    while not fusion.finish_pruning and layer < 28:
        n = hidden.shape[1]
        attention[layer] = torch.rand(n, generator=g)
        hidden, pe, _ = fusion.forward(hidden, pe, None, attention[layer].view(1, 1, 1, n))
        layer += 1
    return {
        "ids": pe[0][0, :, 0].long(),
        "states": hidden[0].clone(),
        "attention": attention,
        "sparsity": list(fusion.sparsity_list),
    }


def main() -> None:
    FrameFusion = official(os.environ["FRAMEFUSION_GIT"])
    cases = []
    seed = 0
    for kind in ("random", "static", "drifting", "cut"):
        for T, N, D in ((4, 16, 8), (8, 25, 16), (6, 49, 16)):
            for keep in (0.1, 0.25, 0.5):
                seed += 1
                g = torch.Generator().manual_seed(seed)
                features = video(kind, T, N, D, g).float().contiguous()
                out = run(FrameFusion, features, keep, g)
                cases.append({"kind": kind, "keep": keep, "features": features, **out})
    meta = {
        "repository": "thu-nics/FrameFusion",
        "commit": COMMIT,
        "file": FILE,
        "lines": "1-380",
        "defaults": {"similarity_lower_bound": 0.6, "ratio_lower_bound": 0.1, "num_layers": 28},
        "torch": str(torch.__version__),
    }
    torch.save({"meta": meta, "cases": cases}, OUT)
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
