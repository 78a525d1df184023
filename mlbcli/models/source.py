"""What a `--model` string names: a local checkpoint folder or a hub id (`resolve_model`)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mlbcli.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"

#: `org/name`: the shape of a hub id, which is also the shape of a relative path one folder deep.
_HUB_ID_SHAPE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: Where `--model` can come from, for messages (the CLI flag, its environment variable, the Makefile).
MODEL_OPTIONS = "`--model PATH`, `MLB_MODEL=PATH` or `make demo MODEL=PATH`"


@dataclass(frozen=True)
class ModelSource:
    """What a `--model` string names.

    `ref` is what transformers reads and what result rows record as `model`: the absolute folder of a
    local checkpoint, or the hub id. `given` is the string as the user wrote it.
    """

    given: str
    ref: str
    local: bool


def _is_hub_id_shaped(model_id: str) -> bool:
    return bool(_HUB_ID_SHAPE.match(model_id))


def _hub_model_known(model_id: str) -> bool:
    """Whether `model_id` is a hub model this machine knows: the default one, or one in the HF cache."""
    if model_id == DEFAULT_MODEL:
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except (ImportError, ValueError, OSError):
        return False


def resolve_model(model_id: str) -> ModelSource:
    """The checkpoint a `--model` string names. The rule:

    - an existing folder is a local checkpoint (transformers' own rule), even when the string also
      has the `org/name` shape of a hub id; rows then record the folder's absolute path, never the
      bare string, so results of a local folder can never pass for the hub model's;
    - when such a string is also a hub model known here (the default model, or one in the HF cache),
      the choice is announced with a warning: write `./org/name` to mean the folder without it, or
      run from another directory to get the hub model;
    - a string written as a path (`./x`, `../x`, `/x`, `~/x`, or two or more `/`) that is no folder
      is an error; anything else is a hub id.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        folder = str(path.resolve())
        explicit_path = model_id.startswith((".", "/", "~")) or os.path.isabs(model_id)
        if not explicit_path and _is_hub_id_shaped(model_id) and _hub_model_known(model_id):
            log.warning(
                "--model %r is a hub id and also a folder in the current directory: loading the folder "
                "%s (results record that path), not the hub model. Write --model ./%s to use the folder "
                "without this warning, or run from another directory to use the hub model.",
                model_id,
                folder,
                model_id,
            )
        return ModelSource(given=model_id, ref=folder, local=True)
    if path.exists():
        raise ModelLoadError(f"--model {model_id!r} is a file; pass the checkpoint folder")
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise ModelLoadError(f"--model {model_id!r}: no such folder")
    return ModelSource(given=model_id, ref=model_id, local=False)
