"""Exceptions mlb raises. The CLI maps `UsageError` to exit code 2; per-item errors become rows."""

from __future__ import annotations


class MlbError(Exception):
    """Base class of every error mlb raises on purpose."""


class UsageError(MlbError):
    """Bad options or inputs for the whole run (exit code 2): nothing was processed."""


class VideoDecodeError(MlbError):
    """A video could not be opened, decoded or sampled. Becomes the item's `error`."""


class DecodeTimeout(VideoDecodeError):
    """Decoding took longer than the per-video timeout and was abandoned."""


class ModelLoadError(UsageError):
    """The model could not be loaded (not cached and hub unreachable, unsupported family...)."""


class OutputLockedError(MlbError):
    """Another mlb process is writing the same output file."""
