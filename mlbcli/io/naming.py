"""File names for per-video side outputs (saved tokens, contact sheets, bias reports).

One rule for all of them, so that two different ids can never share a file: a readable prefix (the id
with unsafe characters replaced, cut to 80 characters) plus the FULL sha1 hex digest of the exact id.
The prefix is only for people; the digest alone decides identity. (A 32-bit digest collided naturally
after ~125k ids sharing a long folder prefix; 160 bits do not.)

The names stay inside the target folder whatever the id holds ("../x", "/etc/x", ".."): only
[A-Za-z0-9._-] survive, and leading dots/dashes are stripped so a name is never hidden or option-like.

This module must stay import-light (no torch): `sample` uses it.
"""

from __future__ import annotations

import hashlib
import json
import re

__all__ = ["safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PREFIX_CHARS = 80


def _digest(identity: str) -> str:
    # surrogatepass: ids from non-UTF-8 file names hold lone surrogates; this encoding is still injective.
    return hashlib.sha1(identity.encode("utf-8", "surrogatepass")).hexdigest()


def safe_name(video_id: str, suffix: str = "", *, question_id: str | None = None) -> str:
    """`<readable prefix>-<40 hex sha1><suffix>` for `video_id` (and optionally one question of it).

    `question_id` is hashed together with `video_id` unambiguously (as a JSON pair), so the pair
    ("a#1", None) and ("a", "1") get different names although their readable prefixes agree.
    """
    if question_id is None:
        readable, identity = video_id, video_id
    else:
        readable, identity = f"{video_id}#{question_id}", json.dumps([video_id, str(question_id)])
    prefix = _UNSAFE.sub("_", readable).strip("._-")[:_PREFIX_CHARS].rstrip("._-") or "video"
    return f"{prefix}-{_digest(identity)}{suffix}"
