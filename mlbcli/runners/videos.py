"""How a video reaches a `ModelWorker`: decoded ahead in background processes, or loaded from tokens
that `compress --save-tokens` stored. Shared by the local runner, `mlb sample` and the Ray actors.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mlbcli.errors import UsageError

if TYPE_CHECKING:
    from mlbcli.engine.pipeline import Pipeline
    from mlbcli.io.sampling import FrameRule
    from mlbcli.io.sources import Item
    from mlbcli.io.video import Frames
    from mlbcli.options import ModelSpec, RunOptions
    from mlbcli.runners.tasks import DecodedVideo


def decode_group(
    group: list[Item], num_frames: int | None, fps: float | None, rule: FrameRule | None = None
) -> Frames:
    """Worker-side decode of one video (top level, so decode processes can pickle it)."""
    from mlbcli.io.sampling import GENERIC
    from mlbcli.io.video import decode_frames

    return decode_frames(group[0].video_path, num_frames=num_frames, fps=fps, rule=rule or GENERIC)


def decoded(
    groups: list[list[Item]],
    run: RunOptions,
    num_frames: int | None,
    fps: float | None,
    rule: FrameRule | None = None,
) -> Iterator[tuple[list[Item], Any, float]]:
    """(group, Frames or exception, seconds waited) in input order, decoded ahead in the background.

    `rule` is the model family's frame rule (`ModelAdapter.frame_rule`); none for `mlb sample`."""
    from mlbcli.io.prefetch import prefetch

    decode = functools.partial(decode_group, num_frames=num_frames, fps=fps, rule=rule)
    waited = time.perf_counter()
    for group, result in prefetch(
        groups, decode, workers=run.workers, depth=run.prefetch, timeout_s=run.decode_timeout_s
    ):
        yield group, result, time.perf_counter() - waited
        waited = time.perf_counter()


def decoded_videos(
    groups: list[list[Item]], run: RunOptions, num_frames: int | None, fps: float | None, rule: FrameRule
) -> Iterator[DecodedVideo]:
    """`decoded` as `DecodedVideo`s for a `ModelWorker` (a failed decode carries its error)."""
    from mlbcli.runners.tasks import DecodedVideo

    for group, frames, decode_s in decoded(groups, run, num_frames, fps, rule):
        if isinstance(frames, BaseException):
            yield DecodedVideo(group, error=frames, decode_s=decode_s)
        else:
            yield DecodedVideo(group, frames=frames, decode_s=decode_s)


def saved_videos(
    groups: list[list[Item]], tokens_dir: str, pipe: Pipeline, spec: ModelSpec
) -> tuple[list[DecodedVideo], list[list[Item]]]:
    """(videos whose tokens `compress --save-tokens` stored in `tokens_dir`, the groups left to decode)."""
    from mlbcli.io.tokens import require_tokens_dir

    require_tokens_dir(tokens_dir)
    found: list[DecodedVideo] = []
    remaining = []
    for group in groups:
        video = saved_video(group, tokens_dir, pipe, spec)
        if video is None:
            remaining.append(group)
        else:
            found.append(video)
    return found, remaining


def saved_video(group: list[Item], tokens_dir: str, pipe: Pipeline, spec: ModelSpec) -> DecodedVideo | None:
    """The `DecodedVideo` of `group` from its tokens in `tokens_dir` (saved by `compress --save-tokens`),
    or None when there are none (for this model and this very file).

    The run's explicit sampling options (`--frames`/`--fps`) must agree with how the tokens were
    sampled, and the tokens must come from this input preparation: otherwise the video's rows are errors
    rather than answers from other frames. Used by the local runner and by the Ray actors.
    """
    from mlbcli.engine.pipeline import EncodedVideo
    from mlbcli.engine.saved_tokens import load_video_tokens
    from mlbcli.runners.tasks import DecodedVideo, SavedFrames

    saved = load_video_tokens(tokens_dir, group[0], pipe.adapter.model_id)
    if saved is None:
        return None
    frames = SavedFrames(list(range(len(saved.timestamps_s))), saved.timestamps_s)
    video = DecodedVideo(group, frames=frames, video=EncodedVideo(saved.tokens, 0.0))
    mismatch = saved.inputs_mismatch() or saved.sampling_mismatch(spec.frames, spec.fps, pipe.frame_rule)
    if mismatch is not None:
        video.error = UsageError(mismatch)
    elif saved.reduced:
        video.override = saved.stored_reduction()
        if pipe.method.name != "none":
            video.error = UsageError(
                f"{saved.path.name} holds tokens already reduced by {saved.method_name!r}; "
                "use --method none with them, or save unreduced tokens (compress --method none)"
            )
    return video
