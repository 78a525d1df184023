"""`lmms-eval --model mlb`: lmms-eval's own pipeline (its tasks, prompts, filters, metrics) with mlb's engine.

`pip install mlbcli[lmms-eval]` registers this module's `manifest` under lmms-eval's entry-point group
``lmms_eval.models`` (lmms-eval 0.7.3 `models/registry_v2.py`: a `ModelManifest`, or a callable returning
one, per entry point), so::

    lmms-eval --model mlb --model_args pretrained=llava-hf/llava-onevision-qwen2-0.5b-ov-hf,method=adatp,keep=0.25 \\
        --tasks videomme

`--model_args` are `mlbcli.api.answer`'s model options (`ModelSpec`): pretrained (or model), method, keep,
layer, query, variant, frames, fps, dtype, seed, device, params (a JSON object of method hyperparameters).
One that mlb does not know is an error. Each `generate_until` call answers all its requests in one
`mlbcli.api.answer` run (the model loads once): the request's context is the prompt text exactly as the
task built it (mlb adds only the family's chat template), its video comes from the task's `doc_to_visual`.
Log-likelihood requests (multiple-choice-by-perplexity tasks) are not supported: mlb generates text.
lmms-eval's own `--device` arrives as mlb's `device` option; `--batch_size` as mlb's batch size.
A local task works as any other (`--include_path DIR` with a task YAML whose `dataset_path: json` reads a
local JSONL file); tests/data/lmms_eval_task is one, run end to end by tests/test_lmms_eval_plugin.py.

It sits above `mlbcli.api`, as a notebook does (it calls the API inside its methods), which is why it
lives beside `api.py` and not in `eval/`; nothing in the package imports it.
"""

from __future__ import annotations

import importlib
import json
import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from mlbcli.errors import UsageError

__all__ = ["MODEL_NAME", "MlbLmms", "manifest"]

logger = logging.getLogger(__name__)

MODEL_NAME = "mlb"
#: mlb's default generation limit when a task sets none (lmms-eval's models use 1024; mlb answers briefly).
DEFAULT_MAX_NEW_TOKENS = 32
_SPEC_ARGS = ("model", "method", "keep", "layer", "query", "variant", "frames", "fps", "dtype", "seed",
              "device", "params", "debias", "min_pixels", "max_pixels")  # fmt: skip
# What lmms-eval's evaluator adds to --model_args besides `device` (a `ModelSpec` field, so in _SPEC_ARGS).
_LMMS_EVAL_ARGS = ("batch_size", "max_batch_size")

try:  # the base class is lmms-eval's; without lmms-eval the module imports, and the class says what is missing
    _Base: Any = importlib.import_module("lmms_eval.api.model").lmms
except ImportError:  # pragma: no cover - exercised only without lmms-eval
    _Base = object


def manifest() -> Any:
    """The entry point lmms-eval loads: model ``mlb`` is `MlbLmms` (a "simple" model: text + video)."""
    registry = importlib.import_module("lmms_eval.models.registry_v2")
    return registry.ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.MlbLmms")


def _spec_options(args: dict[str, Any]) -> dict[str, Any]:
    """`--model_args` -> `ModelSpec` fields; an argument mlb does not take is a UsageError."""
    options = dict(args)
    if "pretrained" in options:
        if "model" in options:
            raise UsageError("--model_args: give pretrained or model, not both")
        options["model"] = options.pop("pretrained")
    unknown = sorted(set(options) - set(_SPEC_ARGS))
    if unknown:
        raise UsageError(
            f"--model_args: mlb does not take {', '.join(unknown)} (it takes {', '.join(_SPEC_ARGS)})"
        )
    if "model" not in options:
        raise UsageError("--model_args: pretrained=MODEL (a hub id or a local checkpoint folder) is required")
    params = options.get("params")
    if isinstance(params, str):
        try:
            options["params"] = json.loads(params)
        except json.JSONDecodeError as error:
            raise UsageError(f"--model_args params: not a JSON object ({error.msg})") from None
    if isinstance(options.get("debias"), str):
        options["debias"] = tuple(options["debias"].split("+"))
    options["model"] = str(options["model"])
    return options


def _limit(gen_kwargs: dict[str, Any]) -> int:
    """The task's token limit; settings that ask for sampling or beams are refused: mlb decodes greedily,
    and silently answering greedily where a task asked for something else would change its numbers."""
    if gen_kwargs.get("do_sample"):
        raise UsageError("the task asks for sampling (do_sample); mlb decodes greedily")
    if float(gen_kwargs.get("temperature") or 0) > 0 and gen_kwargs.get("do_sample") is not False:
        raise UsageError(f"the task asks for temperature {gen_kwargs['temperature']}; mlb decodes greedily")
    if int(gen_kwargs.get("num_beams") or 1) > 1:
        raise UsageError(f"the task asks for {gen_kwargs['num_beams']} beams; mlb decodes greedily")
    value = gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS
    return int(value)


def _cut(text: str, until: Any) -> str:
    """The reply up to the first of the task's stop strings (greedy decoding has no stop strings)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


class MlbLmms(_Base):
    """lmms-eval's model API on mlb's engine (module docstring)."""

    is_simple = True

    def __init__(
        self, batch_size: int | str | None = 1, max_batch_size: int | None = None, **model_args: Any
    ):
        if _Base is object:
            raise UsageError("the lmms-eval plugin needs lmms-eval: pip install 'mlbcli[lmms-eval]'")
        super().__init__()
        from mlbcli.options.spec import ModelSpec

        options = _spec_options(model_args)
        self.spec = ModelSpec(**options)
        self.batch_size = None if batch_size in (None, "auto") else int(batch_size)

    def generate_until(self, requests: list[Any]) -> list[str]:
        """One reply per request: (context, gen_kwargs, doc_to_visual, doc_id, task, split) as lmms-eval
        passes them; requests with the same generation limit are answered in one run."""
        from mlbcli import api

        replies = [""] * len(requests)
        groups: dict[int, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[_limit(request.args[1])].append(index)
        with tempfile.TemporaryDirectory(prefix="mlb-lmms-eval-") as folder:
            for limit, indices in groups.items():
                manifest_path = Path(folder) / f"requests-{limit}.jsonl"
                with open(manifest_path, "w", encoding="utf-8") as fh:
                    for index in indices:
                        fh.write(json.dumps(self._row(index, requests[index]), ensure_ascii=False) + "\n")
                out = Path(folder) / f"answers-{limit}.jsonl"
                run = api.RunOptions(out=str(out), resume=False, workers=0, batch_size=self.batch_size)
                api.answer(
                    [str(manifest_path)], max_new_tokens=limit, run=run, progress=False, spec=self.spec
                )
                for row in api.iter_rows(str(out)):
                    index = int(str(row["question_id"]).removeprefix("request-"))
                    if row.get("error"):
                        logger.warning("request %d (%s): %s", index, row.get("video_path"), row["error"])
                    replies[index] = _cut(row.get("answer") or "", requests[index].args[1].get("until"))
        return replies

    def _row(self, index: int, request: Any) -> dict[str, Any]:
        context, _, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        videos = [v for v in visuals if isinstance(v, str)]
        if len(videos) != 1 or len(visuals) != 1:
            raise NotImplementedError(
                f"{task} doc {doc_id}: mlb answers about one video per question, got {len(visuals)} visuals"
            )
        return {
            "video": str(Path(videos[0]).resolve()),
            "question": context,
            "question_id": f"request-{index}",
        }

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "mlb generates answers (generate_until); log-likelihood tasks (multiple choice by perplexity, "
            "e.g. *_mcppl) are not supported: choose the task's generation variant"
        )

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("mlb answers single-round questions; multi-round tasks are not supported")
