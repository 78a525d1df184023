"""Golden fixtures for `--method flashvid --variant official`: the official code run on small inputs.

Provenance: Fanziyang-v/FlashVID at commit 1d37422c5afcaa15ee46b5355f5ba798fa93290a (MIT licence),
`flashvid/utils.py` lines 23-406 (`flashvid_compression`, `segment_compression`, `segment`,
`additional_segment`, `dpc_knn`, `spatiotemporal_compression`, `fastv_prune`),
`flashvid/token_selection.py` lines 1-190 (ADTS "attn_div_v2", `attn_based_token_selection`) and
`flashvid/configuration_flashvid.py`. How: the three files are read from a snapshot of the repository
(`git show COMMIT:path`, the bare git directory in $FLASHVID_GIT) into a temporary package with an
empty `__init__.py` (the official one imports transformers' model classes to patch them), imported,
and called on plain tensors: `flashvid_compression(features, tower_attention, FlashVidConfig(...))`
for the vision side (defaults of `flashvid()`: attn_div_v2, alpha 0.7, temporal 0.8, segment 0.9,
expansion 1.25), then `fastv_prune` on the compressed tokens with a given last-row attention for the
in-LLM step (llm_retention_ratio 0.3). Nothing of it is copied into mlbcli.

Cases: min_segment_num 2 (the default 8 makes every frame of a <= 8-frame clip its own segment, where
the port deliberately differs, see `mlbcli.selection.ops.flashvid`); cases where the official ADTS
picks a token twice, and those with a one-frame segment, are left out (counted in the file); `dpc_knn`'s random density noise is set to zero
(`zero_noise`). Run:
    FLASHVID_GIT=/work/.mirror/Fanziyang-v+FlashVID/repo /work/refvenv/bin/python tests/golden/methods/flashvid_make.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

COMMIT = "1d37422c5afcaa15ee46b5355f5ba798fa93290a"
FILES = ["flashvid/utils.py", "flashvid/token_selection.py", "flashvid/configuration_flashvid.py"]
OUT = Path(__file__).with_name("flashvid_official.pt")


def official(git_dir: str):
    root = Path(tempfile.mkdtemp())
    (root / "flashvid").mkdir()
    (root / "flashvid" / "__init__.py").write_text("")
    for path in FILES:
        text = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"{COMMIT}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (root / path).write_text(text)
    sys.path.insert(0, str(root))
    from flashvid.configuration_flashvid import FlashVidConfig
    from flashvid.utils import fastv_prune, flashvid_compression, segment

    return FlashVidConfig, flashvid_compression, fastv_prune, segment


def zero_noise(tensor: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """Stands in for `torch.rand_like` in `dpc_knn`'s `density + rand_like(density) * 1e-6`: the noise only
    breaks density ties at random (a one-cluster frame: every density is exp(0) = 1), which no port can
    reproduce; without it ties go to `torch.topk`'s order, as in the port. With NOISE=1 it stays."""
    return torch.zeros_like(tensor)


def video(kind: str, T: int, N: int, D: int, g: torch.Generator) -> torch.Tensor:
    base = torch.randn(N, D, generator=g) + 1.0  # a shared offset: projector outputs share a direction
    if kind == "random":
        return torch.randn(T, N, D, generator=g) + 1.0
    if kind == "static":
        return base.expand(T, N, D) + 0.01 * torch.randn(T, N, D, generator=g)
    if kind == "drifting":
        drift = torch.randn(N, D, generator=g)
        return torch.stack([base + 0.12 * t * drift for t in range(T)]) + 0.05 * torch.randn(
            T, N, D, generator=g
        )
    other = torch.randn(N, D, generator=g) + 1.0  # cut: two scenes, the change in the middle
    scenes = [base if t < T // 2 else other for t in range(T)]
    return torch.stack(scenes) + 0.1 * torch.randn(T, N, D, generator=g)


def main() -> None:
    FlashVidConfig, flashvid_compression, fastv_prune, segment = official(os.environ["FLASHVID_GIT"])
    noise = os.environ.get("NOISE") == "1"
    if not noise:
        torch.rand_like = (
            zero_noise  # this generator process only (the official module reads torch.rand_like)
        )
    cases, skipped, single = [], 0, 0
    seed = 0
    for kind in ("random", "static", "drifting", "cut"):
        for T, N, D in ((4, 16, 8), (8, 25, 16), (6, 49, 32)):
            for keep in (0.1, 0.25, 0.5):
                seed += 1
                g = torch.Generator().manual_seed(seed)
                features = video(kind, T, N, D, g).float().contiguous()
                saliency = torch.softmax(torch.randn(T, N, generator=g), dim=-1)
                config = FlashVidConfig(
                    retention_ratio=keep, token_selection_method="attn_div_v2", min_segment_num=2
                )
                if bool((segment(features.mean(1), 0.9, 2, True) == 1).any()):
                    single += 1  # a one-frame segment: the port deliberately differs there
                    continue
                torch.manual_seed(seed)  # the official DPC-kNN adds 1e-6 random noise to densities
                states, ids = flashvid_compression(features.clone(), saliency.clone(), config)
                if ids.unique().numel() != ids.numel():
                    skipped += 1  # the official ADTS picked a token twice
                    continue
                K = ids.numel()
                attention = torch.rand(K, generator=g)
                config.visual_token_start_index, config.visual_token_length = 0, K
                cos = ids.float().view(1, K, 1)
                hidden, _, _, _, _, keep_idx = fastv_prune(
                    states[None].clone(),
                    None,
                    attention.view(1, 1, 1, K),
                    None,
                    None,
                    (cos, cos.clone()),
                    config,
                )
                cases.append(
                    {
                        "kind": kind,
                        "keep": keep,
                        "features": features,
                        "saliency": saliency,
                        "ids": ids.clone(),
                        "states": states.clone(),
                        "attention": attention,
                        "inner_ids": ids[keep_idx].clone(),
                        "inner_states": hidden[0].clone(),
                    }
                )
    meta = {
        "repository": "Fanziyang-v/FlashVID",
        "commit": COMMIT,
        "files": FILES,
        "params": {"flashvid_min_segments": 2},
        "skipped_duplicate_adts": skipped,
        "skipped_one_frame_segment": single,
        "torch": str(torch.__version__),
        "density_noise": noise,
    }
    torch.save({"meta": meta, "cases": cases}, OUT if not noise else OUT.with_suffix(".noise.pt"))
    print(f"{len(cases)} cases, {skipped} + {single} skipped -> {OUT}")


if __name__ == "__main__":
    main()
