"""Golden fixtures of the peers whose official code lives outside a model fork: EVS (vLLM).

Run with a Python that has torch (e.g. /work/refvenv/bin/python), from the repository root:

    python tests/golden/methods/make_official_peers.py --vllm-evs PATH/vllm/multimodal/evs.py

`PATH/vllm/multimodal/evs.py` is vLLM's file at the commit recorded below (the whole vLLM repository is
too large to mirror here; the file was taken from the stored index of GitHub at that commit, and its
sha256 is checked). It is imported from its own folder and `compute_retention_mask` is called as vLLM
calls it; nothing of it is copied into mlbcli. Writes `evs.pt` (inputs and the official outputs: kept
flat ids t * N + n in entry order, their states, positions) and `evs.json` (provenance).

VidCom2 and PruneVid fixtures are made by `make_official_vidcom2_prunevid.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_official import KEEPS, videos  # noqa: E402 - the shared inputs (random/static/drifting/cut)

EVS = {
    "repository": "https://github.com/vllm-project/vllm",
    "commit": "094f117823287790739d3022162a3f30f13d758b",
    "file": "vllm/multimodal/evs.py",
    "lines": [17, 93],  # compute_retained_tokens_count, compute_retention_mask
    "sha256": "4a4c21af834201c92f32ed34ee467a7d2eee35deb9cfdfba1740018dff94af8b",
}


def load_evs(path: Path) -> Any:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != EVS["sha256"]:
        raise SystemExit(f"{path}: sha256 {digest}, expected vLLM {EVS['commit'][:8]}'s {EVS['sha256']}")
    spec = importlib.util.spec_from_file_location("vllm_evs_official", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evs_cases(module: Any) -> list[dict[str, Any]]:
    """Every video x keep on two grids: vLLM's mask on [T*h*w, D] with merge size 1 and q = 1 - keep.
    The noise on every case makes dissimilarities distinct, so the kept set has no tie at its edge."""
    cases = []
    for T, h, w, seed in ((8, 3, 4, 0), (6, 4, 4, 1)):
        for name, x in videos(T, h * w, 16, seed).items():
            for keep in KEEPS:
                mask = module.compute_retention_mask(x.reshape(T * h * w, -1), (T, h, w), 1, 1.0 - keep)
                ids = mask.nonzero().flatten()  # vLLM keeps the retained embeddings in sequence order
                cases.append(
                    {
                        "name": f"{name} T{T} {h}x{w} keep {keep}",
                        "features": x,
                        "grid": [h, w],
                        "keep": keep,
                        "params": {},
                        "saliency": None,
                        "ids": ids,
                        "states": x.reshape(T * h * w, -1)[ids],
                        "positions": ids.clone(),  # recompute_mrope_positions: the original (t, h, w)
                        "ordered": True,
                    }
                )
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--vllm-evs", type=Path, required=True, help="vllm/multimodal/evs.py at EVS['commit']"
    )
    args = parser.parse_args()
    cases = evs_cases(load_evs(args.vllm_evs))
    torch.save(cases, HERE / "evs.pt")
    provenance = {
        **EVS,
        "how": "compute_retention_mask(video_embeds=[T*h*w, D], video_size_thw=(T, h, w), "
        "spatial_merge_size=1, q=1-keep) imported from vLLM's file; kept ids = the mask's nonzero "
        "indices (vLLM gathers the retained embeddings in sequence order), positions = the original "
        "ones (recompute_mrope_positions keeps each token's (t, h, w))",
        "cases": len(cases),
        "torch": torch.__version__,
        "generator": "tests/golden/methods/make_official_peers.py",
    }
    (HERE / "evs.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"evs: {len(cases)} cases")


if __name__ == "__main__":
    main()
