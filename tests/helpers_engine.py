"""Helpers shared by the engine / families / methods tests: run the engine the way `Pipeline` does.

Not a conftest (the lead owns ``tests/conftest.py``): test modules import this by name, like
``helpers_video``, which works because pytest puts ``tests/`` on ``sys.path`` for rootdir-relative
test modules without ``__init__.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mlbcli.engine import batch as engine


def prefill(adapter, prompt, video, plan=None) -> engine.PrefillResult:
    """`engine.prefill` of `prompt` (built for `video`), its visual block and question rows, under `plan`."""
    visual = torch.arange(prompt.visual_start, prompt.visual_start + prompt.num_visual)
    return engine.prefill(
        adapter,
        adapter.embed(prompt, video),
        adapter.position_ids(prompt, video),
        visual,
        prompt.question_index,
        plan,
    )


@contextlib.contextmanager
def no_eos(adapter) -> Iterator[None]:
    """No early stop inside the block, so that every one of the max_new_tokens logits can be compared."""
    saved = adapter.model.generation_config.eos_token_id
    adapter.model.generation_config.eos_token_id = -1
    try:
        yield
    finally:
        adapter.model.generation_config.eos_token_id = saved


def stock_generate(adapter, max_new_tokens, **inputs):
    """Stock `generate()` for exactly `max_new_tokens` steps with nothing suppressed: no EOS at all, so
    that it matches `engine_generate` under `no_eos` token for token. (`min_new_tokens` would instead
    mask the EOS logits, and a reply that wants to end early would then differ from ours.)"""
    config = adapter.model.generation_config
    saved = config.eos_token_id, config.pad_token_id
    config.eos_token_id, config.pad_token_id = None, 0
    try:
        return adapter.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    finally:
        config.eos_token_id, config.pad_token_id = saved


def engine_generate(adapter, video, question, max_new_tokens, plan=None):
    """Prefill + greedy decode of `question` about `video` with logits kept: (prompt, state, generation)."""
    prompt = adapter.build_prompt(question, video)
    state = prefill(adapter, prompt, video, plan)
    with no_eos(adapter):
        gen = engine.greedy_decode(adapter, state, max_new_tokens=max_new_tokens, keep_logits=True)
    return prompt, state, gen
