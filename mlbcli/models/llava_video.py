"""LLaVA-Video (`llava-hf/LLaVA-Video-7B-Qwen2-hf` and the like): a LLaVA-OneVision checkpoint.

How transformers loads it: the llava-hf conversion is a `llava_onevision` config
(`LlavaOnevisionForConditionalGeneration`, SigLIP-384 + Qwen2), so the stock model runs exactly the
OneVision video layout: 27 x 27 SigLIP patches per frame, projector, bilinear pooling to 14 x 14 =
196 tokens per frame, and ONE `image_newline` after the last frame (`get_video_features`); the prompt
holds T*196 + 1 `<video>` placeholders. (The original LLaVA-NeXT code base configures LLaVA-Video with
a newline after every row of every frame, `mm_newline_position="grid"`; transformers does not implement
that layout, and mlb reproduces the stock transformers model, token for token.)

So the adapter IS the OneVision adapter; what differs is the checkpoint's default frame count: 64
uniformly sampled frames (the model card and lmms-eval's `max_frames_num`), against OneVision's 32.

Detection. Both share `model_type` "llava_onevision" and nothing in the config tells them apart, so a
llava_onevision checkpoint is LLaVA-Video when the name of its hub repo or folder says so (`LLaVA-Video`,
`llava_video`, `llavavideo`, any case; for a hub-cache snapshot folder, the repo's cache folder name).
Anything else loads as OneVision: the same model, run the same way, only with OneVision's default frame
count.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from mlbcli.models.llava_onevision import LlavaOnevisionAdapter

_NAME = re.compile(r"llava[-_ ]?video", re.IGNORECASE)


class LlavaVideoAdapter(LlavaOnevisionAdapter):
    family = "llava_video"
    model_types = ("llava_onevision",)
    default_frames = 64
    prompt_profile = "llava_vid"  # lmms-eval's `llava_vid` model: Video-MME ends "The best answer is:"

    @classmethod
    def detect(cls, config: Any) -> bool:
        parts = PurePath(str(getattr(config, "_name_or_path", "") or "")).parts
        if len(parts) >= 3 and parts[-2] == "snapshots":  # <cache>/models--org--name/snapshots/<sha>
            parts = parts[:-2]
        return bool(parts) and bool(_NAME.search(parts[-1]))
