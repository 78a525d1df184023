"""Benchmark conventions: how lmms-eval prompts, grades and aggregates each video benchmark.

`mlb answer --benchmark NAME` renders every multiple-choice item exactly as lmms-eval's task renders it
(prompt layout, option labels, post-prompt: byte for byte, for the default model profile), applies that
task's policy for a reply that names no option, and `mlb score` aggregates the rows as that task does.
Without `--benchmark`, `prompting.format_question` (the generic layout) is used and an unparsable reply
is counted wrong.

Reference: lmms-eval at commit 75571cfe (0.7.x), `lmms_eval/tasks/<task>/utils.py` and the task YAML
(`lmms_eval_specific_kwargs.default`). Each `Benchmark` names its source.

What is emulated and what is not:

- The prompt text is lmms-eval's `doc_to_text` for the task's `default` profile, or for the profile the
  caller names (`Benchmark.prompt(..., profile)`: the model adapter says which profile lmms-eval drives its
  family with, e.g. `qwen3_vl` on Video-MME). The chat template around it is the model family's, as
  lmms-eval's own model classes apply it.
- The letter is read by mlb's parser (`prompting.parse_choice`), which is more robust than the tasks'
  extractors (lower-case letters, option text, answer phrases; several options named is ambiguous, not one
  of them). So a reply that lmms-eval grades by accident (``Answer: b`` read as A) is graded here by what it
  says. What differs is only which replies count as unparsable; the policy for those follows the task:

  ======================  ==================================  =========================  ==========
  benchmark               unparsable reply                    aggregation                lmms-eval
                                                                                         scale
  ======================  ==================================  =========================  ==========
  videomme                wrong                               micro                      percent
  mvbench                 empty reply excluded, else wrong    macro over subtasks        percent
  egoschema               seeded random option                micro                      fraction
  nextqa                  seeded random option                micro                      fraction
  longvideobench          seeded random option                micro                      fraction
  mlvu                    wrong                               macro over task types      percent
  ======================  ==================================  =========================  ==========

  lmms-eval draws its random option from the unseeded global RNG; here it is drawn from a generator seeded
  by (`--seed`, video id, question id), so a rerun, a resumed run or another batch size gives the same
  guess. A guessed row has `choice` = the guess and `parse_failed` = true.
- Macro aggregation averages the per-category accuracies over the manifest's `category` column (MVBench's
  subtask, MLVU's task type); without that column it is the micro accuracy. MVBench's published number is
  the mean of its 20 subtasks (lmms-eval logs each subtask; they have 200 questions each, so macro and
  micro agree on the full set).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mlbcli.errors import UsageError
from mlbcli.eval.prompting import LETTERS, _strip_label, answer_letter, parse_choice

__all__ = ["BENCHMARKS", "Benchmark", "Verdict", "get_benchmark", "judge", "options_for"]

ParseFailure = Literal["wrong", "random", "excluded"]

#: lmms-eval's default multiple-choice post-prompt (many tasks' YAML).
LETTER_POST_PROMPT = "Answer with the option's letter from the given choices directly."
#: Video-MME's instruction line (`videomme_doc_to_text`, `option_prompt`).
VIDEOMME_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video and the "
    "subtitles. Respond with only the letter (A, B, C, or D) of the correct option."
)


def _options(options: Sequence[str]) -> list[tuple[str, str]]:
    """(letter, option text without the label of its own letter): "A. dog" at A -> ("A", "dog")."""
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options are supported, got {len(options)}")
    return [
        (letter, _strip_label(str(opt), letter).strip())
        for letter, opt in zip(LETTERS, options, strict=False)
    ]


#: The key of lmms-eval's Qwen3-VL prompt profile in a task's YAML (`lmms_eval_specific_kwargs`).
QWEN3_VL_PROFILE = "qwen3_vl"
#: lmms-eval's LLaVA-Video profile (`--model llava_vid`); only Video-MME defines one.
LLAVA_VID_PROFILE = "llava_vid"


def _require(options: Sequence[str] | None, name: str) -> Sequence[str]:
    if not options:
        raise UsageError(f"--benchmark {name} needs multiple-choice items (a manifest with 'options')")
    return options


# -- prompt layouts (question, options, lmms-eval profile) -> text -------------------------------------------
def _videomme(question: str, options: Sequence[str] | None, profile: str | None) -> str:
    # videomme.yaml default: post_prompt "\nAnswer with the option's letter from the given choices directly."
    # utils.videomme_doc_to_text: option_prompt + "\n" + question + "\n" + options + "\n" + post_prompt,
    # options "A. ..." joined by "\n" (the dataset's options carry the labels).
    opts = "\n".join(f"{letter}. {text}" for letter, text in _options(_require(options, "videomme")))
    if profile == QWEN3_VL_PROFILE:
        # videomme.yaml qwen3_vl profile: utils.videomme_doc_to_text_qwen3vl.
        return f"Question: {question}\nOptions:\n{opts}\nAnswer with the option letter only."
    if profile == LLAVA_VID_PROFILE:
        # videomme.yaml llava_vid profile (LLaVA-Video): post_prompt "The best answer is:", no blank line.
        return f"{VIDEOMME_INSTRUCTION}\n{question}\n{opts}\nThe best answer is:"
    return f"{VIDEOMME_INSTRUCTION}\n{question}\n{opts}\n\n{LETTER_POST_PROMPT}"


def _mvbench(question: str, options: Sequence[str] | None, profile: str | None) -> str:
    # mvbench_<subtask>.yaml: post_prompt "Only give the best option.\n"; utils.mvbench_doc_to_text:
    # "Question:" + question + "\nOption:\n" + "(A) text\n" per candidate + post_prompt.
    opts = "".join(f"({letter}) {text}\n" for letter, text in _options(_require(options, "mvbench")))
    return f"Question:{question}\nOption:\n{opts}Only give the best option.\n"


def _egoschema(question: str, options: Sequence[str] | None, profile: str | None) -> str:
    # egoschema_subset.yaml / utils.egoschema_doc_to_text: question + "\n" + option per option (the
    # dataset's options carry "A. " labels) + "\nAnswer with the option's letter from the given choices
    # directly." (forced whenever the doc has options).
    opts = "".join(f"\n{letter}. {text}" for letter, text in _options(_require(options, "egoschema")))
    return f"{question}{opts}\n{LETTER_POST_PROMPT}"


def _nextqa(question: str, options: Sequence[str] | None, profile: str | None) -> str:
    # nextqa_mc_test.yaml has no lmms_eval_specific_kwargs, so no pre/post-prompt;
    # utils.nextqa_doc_to_text_mc: [question.strip(), "A. a0.strip()", ...] joined by "\n".
    opts = [f"{letter}. {text}" for letter, text in _options(_require(options, "nextqa"))]
    return "\n".join([question.strip(), *opts])


def _longvideobench(question: str, options: Sequence[str] | None, profile: str | None) -> str:
    # longvideobench_val_v.yaml: post_prompt "Answer with the option's letter from the given choices
    # directly.\n"; utils.longvideobench_doc_to_text: question + "\n" + "A. c0\nB. c1..." + "\n" + post.
    # utils.longvideobench_doc_to_text keeps only the candidates that are not "N/A" (questions with fewer
    # than five options are padded with "N/A" in the dataset).
    kept = [opt for opt in _require(options, "longvideobench") if str(opt) != "N/A"]
    opts = "\n".join(f"{letter}. {text}" for letter, text in _options(kept))
    return f"{question}\n{opts}\n{LETTER_POST_PROMPT}\n"


# An option written into an MLVU question: "(A) text" on its own line.
_INLINE_OPTION = re.compile(r"^\(([A-Z])\)\s?(.*)$", re.MULTILINE)


def _mlvu(question: str, options: Sequence[str] | None, profile: str | None) -> str:
    # mlvu_dev.yaml default: post_prompt "\nOnly give the best option.\nBest option: ("; utils.mlvu_doc_to_text:
    # pre_prompt + question + post_prompt. The dataset's question already lists its options ("(A) ..."
    # lines); separate manifest options are written that way unless the question already lists them.
    if options and not inline_options(question):
        question = question + "".join(f"\n({letter}) {text}" for letter, text in _options(options))
    return f"{question}\nOnly give the best option.\nBest option: ("


def inline_options(question: str) -> list[str]:
    """Options listed inside a question as "(A) text" lines, in order from A; [] when there are none."""
    found = _INLINE_OPTION.findall(question)
    letters = [letter for letter, _ in found]
    if len(found) < 2 or letters != list(LETTERS[: len(found)]):
        return []
    return [text.strip() for _, text in found]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's conventions (see the module docstring for the table)."""

    name: str
    render: Callable[[str, Sequence[str] | None, str | None], str]
    on_unparsable: ParseFailure  # a non-empty reply that names no option
    on_empty: ParseFailure  # an empty reply
    aggregation: Literal["micro", "macro"]
    scale: Literal["percent", "fraction"]  # how lmms-eval reports the score
    lmms_eval_task: str  # task name (samples files are named after it)
    lmms_eval_metric: str  # the metric key of its per-sample records
    max_new_tokens: int | None  # the task's generation limit (None: the task sets none)
    source: str  # where the conventions come from in lmms-eval
    category: str = ""  # what the manifest `category` column holds for macro aggregation

    def prompt(self, question: str, options: Sequence[str] | None, profile: str | None = None) -> str:
        """The exact text lmms-eval gives the model for this item, in lmms-eval's prompt `profile` (the key
        of `lmms_eval_specific_kwargs`; None or one the task lacks: its `default` profile)."""
        return self.render(question, options, profile)

    def policy(self, response: str) -> ParseFailure:
        return self.on_empty if not response.strip() else self.on_unparsable


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "videomme",
            _videomme,
            "wrong",
            "wrong",
            "micro",
            "percent",
            "videomme",
            "videomme_perception_score",
            16,
            "lmms_eval/tasks/videomme/{videomme.yaml, utils.py: videomme_doc_to_text, videomme_process_results}",
        ),
        Benchmark(
            "mvbench",
            _mvbench,
            "wrong",
            "excluded",
            "macro",
            "percent",
            "mvbench",
            "mvbench_accuracy",
            16,
            "lmms_eval/tasks/mvbench/{mvbench_*.yaml, utils.py: mvbench_doc_to_text, mvbench_aggregate_results}",
            category="subtask (action_sequence, moving_count, ...)",
        ),
        Benchmark(
            "egoschema",
            _egoschema,
            "random",
            "random",
            "micro",
            "fraction",
            "egoschema_subset",
            "score",
            16,
            "lmms_eval/tasks/egoschema/{egoschema_subset.yaml, utils.py: egoschema_doc_to_text, "
            "parse_multi_choice_response}",
        ),
        Benchmark(
            "nextqa",
            _nextqa,
            "random",
            "random",
            "micro",
            "fraction",
            "nextqa_mc_test",
            "exact_match",
            None,
            "lmms_eval/tasks/nextqa/{nextqa_mc_test.yaml, utils.py: nextqa_doc_to_text_mc, "
            "parse_multi_choice_response}",
        ),
        Benchmark(
            "longvideobench",
            _longvideobench,
            "random",
            "random",
            "micro",
            "fraction",
            "longvideobench_val_v",
            "lvb_acc",
            32,
            "lmms_eval/tasks/longvideobench/{longvideobench_val_v.yaml, utils.py: longvideobench_doc_to_text, "
            "parse_multi_choice_response}",
        ),
        Benchmark(
            "mlvu",
            _mlvu,
            "wrong",
            "wrong",
            "macro",
            "percent",
            "mlvu_dev",
            "mlvu_percetion_score",  # (sic: lmms-eval's key)
            16,
            "lmms_eval/tasks/mlvu/{mlvu_dev.yaml, utils.py: mlvu_doc_to_text, mlvu_aggregate_results_dev}",
            category="task type (anomaly_reco, count, ego, needle, order, plotQA, topic_reasoning)",
        ),
    )
}


def get_benchmark(name: str | None) -> Benchmark | None:
    """The benchmark called `name` (case-insensitive), None for None; a UsageError names the choices."""
    if name is None:
        return None
    key = name.strip().lower().replace("-", "").replace("_", "")
    for bench in BENCHMARKS.values():
        if bench.name == key:
            return bench
    raise UsageError(f"unknown --benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")


def options_for(benchmark: Benchmark | None, question: str | None, options: Sequence[str] | None):
    """The options an item is graded against: its own, or (MLVU) those its question lists inline."""
    if options:
        return tuple(options)
    if benchmark is not None and benchmark.name == "mlvu" and question:
        return tuple(inline_options(question)) or None
    return None


@dataclass(frozen=True)
class Verdict:
    """How one reply is graded: the letter it counts as, whether that is right, whether parsing failed."""

    choice: str | None  # the parsed letter, or the seeded guess (random policy)
    correct: bool | None  # None: no ground truth, or excluded by the benchmark's policy
    parse_failed: bool


def guess(options: Sequence[str], *, seed: int, video_id: str, question_id: str | None) -> str:
    """The seeded random option of the "random" policy: the same for the same item and seed."""
    rng = random.Random(f"mlb-guess:{seed}:{video_id}:{question_id}")  # str seeds hash with SHA-512
    return rng.choice(LETTERS[: min(len(options), len(LETTERS))])


def judge(
    response: str,
    options: Sequence[str],
    answer: str | None,
    benchmark: Benchmark | None,
    *,
    seed: int = 0,
    video_id: str = "",
    question_id: str | None = None,
) -> Verdict:
    """Grade a multiple-choice reply under `benchmark`'s policy (None: unparsable counts wrong)."""
    from mlbcli.eval.prompting import grade

    choice = parse_choice(response, options)
    if choice is not None:
        return Verdict(choice, grade(response, choice, answer, options), False)
    policy: ParseFailure = benchmark.policy(response or "") if benchmark else "wrong"
    if policy == "excluded":
        return Verdict(None, None, True)
    if policy == "random":
        choice = guess(options, seed=seed, video_id=video_id, question_id=question_id)
        return Verdict(choice, grade(response, choice, answer, options), True)
    truth = answer_letter(str(answer), options) if answer is not None and str(answer).strip() else None
    return Verdict(None, False if truth is not None else grade(response, None, answer, options), True)
