"""Generate the small demo clips used by examples/manifest.jsonl (committed; about 0.3 MB in all).

    python examples/make_clips.py build/examples/clips   # `make examples`: an ignored folder
    python examples/make_clips.py examples/clips         # replace the committed clips

The encoder stamps each file, so the bytes differ from the committed ones at every run even though the
frames are the same: writing into examples/clips leaves the tree dirty until they are committed.

The clips are synthetic (PyAV, H.264) so the examples run anywhere without downloading media:
a yellow disc and a red square moving over a gradient, a clip with four hard scene cuts, and a
nearly still scene. Real questions about them are answerable by a real Video LLM.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlbcli.io.video import make_test_video

CLIPS = {
    "moving.mp4": {"pattern": "moving", "num_frames": 64, "seed": 1},
    "scenes.mp4": {"pattern": "flash", "num_frames": 64, "seed": 2},
    "still.mp4": {"pattern": "static", "num_frames": 48, "seed": 3},
    "cams/gate/2026-11-20.mp4": {"pattern": "moving", "num_frames": 48, "seed": 4},
    "cams/yard/2026-11-20.mp4": {"pattern": "static", "num_frames": 48, "seed": 5},
}


def main(folder: str = "build/examples/clips") -> None:
    root = Path(folder)
    for name, kwargs in CLIPS.items():
        path = make_test_video(root / name, width=320, height=240, fps=16, **kwargs)
        print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(*sys.argv[1:])
