"""lmms-eval's grading of the video multiple-choice benchmarks, reproduced rule for rule.

Papers report Video-MME, MVBench, MLVU, EgoSchema, NExT-QA and LongVideoBench accuracy as lmms-eval
computes it: each task's ``utils.py`` reads a letter out of the model's reply with its own extractor and
aggregates with its own function. mlb's grader (`mlbcli.eval.prompting` / `benchmarks`) reads replies
better, so its accuracy is not that number. This module is the second grader: what lmms-eval extracts and
counts correct, reply by reply, so a run can report both.

Reference: lmms-eval **0.7.3**, the PyPI wheel ``lmms_eval-0.7.3-py3-none-any.whl`` (sha256
``5709f9f9f56a8f5f22bf379571bd1c5e7702af5ae2bbb9637001c5dd91168895``). The repository has no 0.7.3 tag;
the task files named below are identical, up to lint-only edits, at commit ``75571cfe`` (2026-08-06).
Paths are relative to ``lmms_eval/tasks/``. Written from reading that code; none of it is copied.

==================  =========================  ======================  ==============  ====================
benchmark (task)    reply -> letter            unreadable reply        ground truth    aggregation (scale)
==================  =========================  ======================  ==============  ====================
videomme            ``extract_mcq_answer``     counted wrong           letter          micro (percent)
                    (choices A-D)
mvbench (20         ``mcq_acc.process``        counted wrong; an       option text     per subtask, empty
subtasks)                                      empty reply is left                     replies left out; mean
                                               out of the aggregate                    of subtasks (percent)
mlvu_dev/mlvu_test  ``extract_mcq_answer``     counted wrong           letter          mean over the FIXED
                    (choices A-D)                                                      task types (percent)
egoschema (subset)  MMMU-style parser          random option           index           micro (fraction)
nextqa (mc_test)    MMMU-style, tiered         random option           index           micro (fraction)
longvideobench      first A-E anywhere         random option           index           micro, 5 d.p.
                                                                                       (fraction)
==================  =========================  ======================  ==============  ====================

Where lmms-eval draws a random option (Python's global `random`, seeded once per run, so the draw depends
on the order of the whole run) the grade says ``unreadable`` and ``guessed`` and draws the option from
a generator seeded by a SHA-256 of ``rng_seed_key``: the same key always gives the same guess.

lmms-eval's filters hand the reply to ``process_results`` unchanged for these tasks (``take_first``; no
``auto_strip_thinking``), so the reply is graded as the model wrote it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LMMS_EVAL_BENCHMARKS",
    "LMMS_EVAL_SCALE",
    "LMMS_EVAL_VERSION",
    "LmmsEvalGrade",
    "MLVU_DEV_TASK_TYPES",
    "MLVU_TEST_TASK_TYPES",
    "aggregate_lmms_eval",
    "canonical_benchmark",
    "egoschema_parse",
    "extract_mcq_answer",
    "grade_lmms_eval",
    "longvideobench_parse",
    "mvbench_read",
    "nextqa_parse",
    "seeded_guess",
    "truth_letter",
]

LMMS_EVAL_VERSION = "0.7.3"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

GroundTruthStyle = Literal["letter", "index", "text"]


@dataclass(frozen=True)
class LmmsEvalGrade:
    """How lmms-eval grades one reply.

    choice: the letter lmms-eval read from the reply; None when it read none (`unreadable`). It can be a
        letter beyond the options (lmms-eval reads "E" on a 4-option question, and counts it wrong).
    correct: whether lmms-eval counts the row correct (for a guessed row: whether the seeded guess is).
    unreadable: lmms-eval read no letter.
    guessed: lmms-eval would have drawn a random option; `guess` is the seeded stand-in.
    counted: whether lmms-eval's aggregation counts the row (False only for MVBench's empty replies).
    truth: the ground truth as a letter.
    """

    choice: str | None
    correct: bool
    unreadable: bool
    guessed: bool
    guess: str | None = None
    counted: bool = True
    truth: str = ""


# --- Video-MME, MLVU: _task_utils/mcq_extract.py `extract_mcq_answer` ---------------------------------------

# Answer phrases in the order lmms-eval tries them (English, Korean, Chinese, Japanese).
_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)  # fmt: skip
# (prefix, suffix, rank) of a letter's formats, in lmms-eval's order; a higher rank wins.
_MCQ_AFFIXES = (("(", ")", 6), ("", ".", 5), ("", ":", 4), ("", ")", 3), ("", " ", 2))
_RANK_PHRASE, _RANK_START, _RANK_END, _RANK_ANYWHERE = 7, 10, 9, 0


def _strip_each(text: str, chars: Iterable[str]) -> str:
    """`str.strip` with each character in turn (not all at once): '"B."' loses the quote, keeps "B."."""
    for char in chars:
        text = text.strip(char)
    return text


def extract_mcq_answer(reply: str, choices: Sequence[str] = "ABCD") -> str:
    """The letter `_task_utils/mcq_extract.py::extract_mcq_answer` reads, "" when none.

    Every letter is looked for in every format: ``(B)``, ``B.``, ``B:``, ``B)``, ``B `` (last occurrence),
    after an answer phrase (first capital letter after the first occurrence of the phrase, even inside a
    word: "the answer is Blue" is B), as the first or last character when not followed/preceded by a
    letter. The highest-ranked format wins (start > end > phrase > parentheses > period > colon > right
    parenthesis > space), then the later position. Only when none matched does any occurrence of a capital
    letter count (the last one). Case-sensitive: "b" is not B.
    """
    if not reply or not reply.strip():
        return ""
    text = " " + _strip_each(reply.strip(), ",.!?;:'\"") + " "
    found: list[tuple[int, int, str]] = []  # (rank, position, letter); the first maximum wins
    for prefix, suffix, rank in _MCQ_AFFIXES:
        for letter in choices:
            pos = text.rfind(prefix + letter + suffix)
            if pos != -1:
                found.append((rank, pos, letter))
    lowered = text.lower()
    for phrase in _ANSWER_PHRASES:
        at = lowered.find(phrase)
        if at != -1:
            for letter in choices:
                pos = text.find(letter, at + len(phrase))
                if pos != -1:
                    found.append((_RANK_PHRASE, pos, letter))
    core = text.strip()
    for letter in choices:
        if core.startswith(letter) and (len(core) == 1 or not core[1].isalpha()):
            found.append((_RANK_START, 0, letter))
    for letter in choices:
        if core.endswith(letter) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((_RANK_END, len(text) - 1, letter))
    if not found:
        found = [(_RANK_ANYWHERE, text.rfind(letter), letter) for letter in choices if letter in text]
    if not found:
        return ""
    best = max(found, key=lambda cand: (cand[0], cand[1]))
    return best[2]


# --- MVBench: mvbench/utils.py `mcq_acc` (its inner `process` and `processPunctuation`) ---------------------

_MV_LABELLED = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_MV_LONE_LETTER = re.compile(r"\b([A-E])\b", re.IGNORECASE)
_MV_NUMBER_COMMA = re.compile(r"(\d)(,)(\d)")
# lmms-eval writes "(?!<=\d)(\.)(?!\d)" (a look-ahead that can never fail before a "."), and passes
# re.UNICODE (32) as `count`: so at most 32 periods not followed by a digit are removed.
_MV_PERIOD = re.compile(r"\.(?!\d)")
_MV_PERIOD_COUNT = 32
_MV_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
             "?", "!")  # fmt: skip


def _mvbench_punctuation(text: str) -> str:
    """`processPunctuation`: each mark is deleted if it touches a space somewhere in the ORIGINAL text (or
    the text holds a digit-comma-digit), else replaced by a space; then periods go (see `_MV_PERIOD`)."""
    out = text
    has_number_comma = _MV_NUMBER_COMMA.search(text) is not None
    for mark in _MV_PUNCT:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if touches_space or has_number_comma else " ")
    return _MV_PERIOD.sub("", out, count=_MV_PERIOD_COUNT)


def mvbench_read(reply: str) -> str:
    """What `mvbench/utils.py::mcq_acc.process` turns a reply into: a letter A-E, or the cleaned text.

    ``B. text`` (any case, at the start) is B; otherwise, after newline/tab to space, punctuation handling,
    quote/parenthesis stripping and lower-casing, the FIRST standalone letter a-e anywhere (so the article
    in "a man is running" is A, and "I'd say" is D). Anything else comes back as text, which never equals a
    letter, so it is counted wrong.
    """
    labelled = _MV_LABELLED.match(reply.strip())
    if labelled:
        return labelled.group(1).upper()
    text = reply.replace("\n", " ").replace("\t", " ").strip()
    text = _strip_each(_mvbench_punctuation(text), ("'", '"', ")", "("))
    text = text.strip().lower()
    lone = _MV_LONE_LETTER.search(text)
    return lone.group(1).upper() if lone else text


# --- EgoSchema and NExT-QA: the MMMU-derived `parse_multi_choice_response` of each task ----------------------

_MMMU_STRIP = (",", ".", "!", "?", ";", ":", "'")


def _content_matches(padded: str, letters: Sequence[str], texts: Sequence[str]) -> list[str]:
    """Letters whose option text occurs in a reply of more than 5 words (case-insensitive substring)."""
    if len(padded.split()) <= 5:
        return []
    lowered = padded.lower()
    return [letter for letter, text in zip(letters, texts, strict=True) if text.lower() in lowered]


def _last_position(padded: str, needle: str, *, lower: bool = False) -> int:
    return (padded.lower() if lower else padded).rfind(needle.lower() if lower else needle)


def egoschema_parse(reply: str, letters: Sequence[str], texts: Sequence[str]) -> str | None:
    """The letter `egoschema/utils.py::parse_multi_choice_response` reads; None where it draws at random.

    Candidates, all collected: ``(X)``, ``X `` and ``X.`` (capital letters, anywhere; so "A man" gives A);
    only when there are none, option texts (as stored, ``"A. text"``) contained in a reply of more than five
    words. Of several candidates the one whose LAST occurrence comes FIRST wins (`np.argmin` of `rfind`).
    """
    padded = " " + _strip_each(reply, _MMMU_STRIP) + " "
    forms = [f"({x})" for x in letters if f"({x})" in padded]
    forms += [f"{x} " for x in letters if f"{x} " in padded]
    forms += [f"{x}." for x in letters if f"{x}." in padded]
    if forms:
        positions = [_last_position(padded, form) for form in forms]
        first = forms[positions.index(min(positions))]
        return first.replace("(", "").replace(")", "").replace(".", "").strip()
    by_text = _content_matches(padded, letters, texts)
    if not by_text:
        return None
    text_of = dict(zip(letters, texts, strict=True))
    positions = [_last_position(padded, text_of[x], lower=True) for x in by_text]
    return by_text[positions.index(min(positions))]


def nextqa_parse(reply: str, letters: Sequence[str], texts: Sequence[str]) -> str | None:
    """The letter `nextqa/utils.py::parse_multi_choice_response` reads; None where it draws at random.

    Tiered, unlike EgoSchema's: ``(X)`` letters if any; else letters followed by a space; else letters
    followed by a period; else (more than five words) option texts contained in the reply. Of several, the
    one with the LATEST last occurrence wins (`np.argmax`), measured as ``(X)`` in the first tier, ``" X "``
    in the next two (-1 when absent, so "B." tiers fall back to the first letter), the text for texts.
    """
    padded = " " + _strip_each(reply, _MMMU_STRIP) + " "
    bracketed = [x for x in letters if f"({x})" in padded]
    spaced = [x for x in letters if f"{x} " in padded]
    dotted = [x for x in letters if f"{x}." in padded]
    candidates = bracketed or spaced or dotted
    if candidates:
        form = "({})" if bracketed else " {} "
        positions = [_last_position(padded, form.format(x)) for x in candidates]
    else:
        candidates = _content_matches(padded, letters, texts)
        if not candidates:
            return None
        text_of = dict(zip(letters, texts, strict=True))
        positions = [_last_position(padded, text_of[x], lower=True) for x in candidates]
    return candidates[positions.index(max(positions))]


# --- LongVideoBench: longvideobench/utils.py `parse_multi_choice_response` ---------------------------------

_LVB_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                 "The best option is", "The correct option is", "Best answer:", "Best option:")  # fmt: skip
_LVB_LETTER = re.compile(r"[ABCDE]")


def longvideobench_parse(reply: str) -> str | None:
    """The letter `longvideobench/utils.py::parse_multi_choice_response` reads; None where it is random.

    After deleting its answer prefixes (case-sensitive, anywhere), the FIRST capital A-E anywhere, even
    inside a word: "Answer: B" is A, "Based on the video, C" is B. (Its "more than 10 words and no letter"
    rule and its "no letter" rule both draw at random: together, no capital A-E means a random option.)
    """
    text = reply.strip()
    for prefix in _LVB_PREFIXES:
        text = text.replace(prefix, "")
    found = _LVB_LETTER.search(text)
    return found.group(0) if found else None


# --- ground truth, seeded guesses, the benchmark table ------------------------------------------------------


def seeded_guess(letters: Sequence[str], rng_seed_key: str) -> str:
    """A stand-in for lmms-eval's `random.choice(all_choices)`: the same key always gives the same letter."""
    digest = hashlib.sha256(f"lmms-eval-guess\x00{rng_seed_key}".encode()).digest()
    return letters[int.from_bytes(digest[:8], "big") % len(letters)]


def _truth_letter(benchmark: str, style: GroundTruthStyle, truth: object, options: Sequence[str]) -> str:
    """The ground truth as a letter, read the way the benchmark stores it; ValueError when it cannot be.

    letter (Video-MME, MLVU): "B" (any case). index (EgoSchema, NExT-QA, LongVideoBench): 2 or "2" is C
    (0-based, as `OPTIONS[doc["answer"]]` / `chr(ord("A") + doc["correct_choice"])` read it); a letter is
    accepted too. text (MVBench): the first option equal to it, as `mvbench_process_results` matches
    `doc["answer"]` against `doc["candidates"]`; a letter is accepted too.
    """
    if style == "text" and isinstance(truth, str) and truth in options:
        return LETTERS[list(options).index(truth)]
    raw = str(truth).strip() if isinstance(truth, (str, int)) and not isinstance(truth, bool) else ""
    count = len(options) or len(LETTERS)
    if len(raw) == 1 and raw.isascii() and raw.isalpha():
        letter = raw.upper()
        if LETTERS.index(letter) < count:
            return letter
        raise ValueError(f"{benchmark}: ground truth {truth!r} names no option (there are {count})")
    if style == "index" and raw.isascii() and raw.isdigit():
        if int(raw) < count:
            return LETTERS[int(raw)]
        raise ValueError(f"{benchmark}: ground-truth index {truth!r} is out of range for {count} options")
    stores = {"letter": "a letter (A, B, ...)", "index": "a 0-based option index (2 means C) or a letter",
              "text": "one option's exact text or a letter"}[style]  # fmt: skip
    raise ValueError(f"{benchmark}: ground truth {truth!r} is not {stores}, as {benchmark} stores it")


def _grade_mcq_extract(reply: str, options: Sequence[str], truth: str, key: str) -> LmmsEvalGrade:
    """videomme_process_results / mlvu_process_results: `extract_mcq_answer(pred, ["A","B","C","D"])`, and
    ``pred_answer == answer``; an empty extraction is simply wrong."""
    letter = extract_mcq_answer(reply, "ABCD")
    if not letter:
        return LmmsEvalGrade(None, False, True, False, truth=truth)
    return LmmsEvalGrade(letter, letter == truth, False, False, truth=truth)


def _grade_mvbench(reply: str, options: Sequence[str], truth: str, key: str) -> LmmsEvalGrade:
    """mvbench_process_results -> `mcq_acc(gt_letter, pred)`: 1 when both `process` to the same letter.
    mvbench_aggregate_results counts only rows whose raw reply is not "" (`counted`)."""
    read = mvbench_read(reply)
    letter = read if len(read) == 1 and read in "ABCDE" else None
    return LmmsEvalGrade(letter, letter == truth, letter is None, False, counted=reply != "", truth=truth)


def _with_guess(letter: str | None, letters: Sequence[str], truth: str, key: str) -> LmmsEvalGrade:
    """A parsed letter, or (parse failed: lmms-eval's `random.choice(all_choices)`) a seeded guess."""
    if letter is not None:
        return LmmsEvalGrade(letter, letter == truth, False, False, truth=truth)
    guess = seeded_guess(letters, key)
    return LmmsEvalGrade(None, guess == truth, True, True, guess=guess, truth=truth)


def _labelled(options: Sequence[str]) -> list[str]:
    """EgoSchema's stored options carry their label ("A. text"): add it where a caller dropped it."""
    return [opt.strip() if opt.strip().startswith(f"{x}.") else f"{x}. {opt.strip()}"
            for x, opt in zip(LETTERS, options, strict=False)]  # fmt: skip


def _grade_egoschema(reply: str, options: Sequence[str], truth: str, key: str) -> LmmsEvalGrade:
    """egoschema_process_results_generation: parse, letter -> index, ``str(ground_truth) == str(pred)``.
    lmms-eval reads exactly five options (it fails on fewer); other counts are graded over those given."""
    letters = LETTERS[: len(options)]
    return _with_guess(egoschema_parse(reply, letters, _labelled(options)), letters, truth, key)


def _grade_nextqa(reply: str, options: Sequence[str], truth: str, key: str) -> LmmsEvalGrade:
    """nextqa_mc_process_results: ``parse_multi_choice_response(...) == OPTIONS[doc["answer"]]``.
    lmms-eval reads exactly five options (a0-a4); other counts are graded over those given."""
    letters = LETTERS[: len(options)]
    return _with_guess(nextqa_parse(reply, letters, [o.strip() for o in options]), letters, truth, key)


def _lvb_letters(options: Sequence[str]) -> str:
    """longvideobench_process_results: options up to the first "N/A" are the choices."""
    count = next((i for i, opt in enumerate(options) if opt == "N/A"), len(options))
    return LETTERS[:count]


def _grade_longvideobench(reply: str, options: Sequence[str], truth: str, key: str) -> LmmsEvalGrade:
    """longvideobench_process_results: ``parsed_pred == chr(ord("A") + correct_choice)``."""
    return _with_guess(longvideobench_parse(reply), _lvb_letters(options), truth, key)


# --- aggregation ------------------------------------------------------------------------------------------

#: MLVU's task types as `mlvu/utils.py` lists them in `mlvu_aggregate_results_dev` / `_test`.
MLVU_DEV_TASK_TYPES = ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning")
MLVU_TEST_TASK_TYPES = ("anomaly_reco", "count", "ego", "needleQA", "order", "plotQA", "sportsQA",
                        "topic_reasoning", "tutorialQA")  # fmt: skip


def _micro(rows: list[Mapping[str, Any]]) -> float:
    """Correct rows over all rows: `videomme_aggregate_results` (every row counts, whatever its category),
    `egoschema_aggregate_score` (``yes_count / len(results)``), NExT-QA's ``exact_match`` with ``mean``."""
    return sum(bool(row["correct"]) for row in rows) / len(rows)


def _longvideobench(rows: list[Mapping[str, Any]]) -> float:
    """`longvideobench_aggregate_results`: every row is put in its duration group AND its question
    category, and the overall score weights each subset by its size: each row counts twice, which is the
    micro accuracy. lmms-eval rounds it to 5 decimals."""
    return round(_micro(rows), 5)


def _category(row: Mapping[str, Any], benchmark: str) -> str:
    category = row.get("category")
    if not isinstance(category, str) or not category:
        raise ValueError(
            f"{benchmark}: lmms-eval averages over categories, and a row has none ({category!r}); "
            "leave uncategorised rows out (and say so) rather than let them change the average"
        )
    return category


def _mvbench(rows: list[Mapping[str, Any]]) -> float:
    """MVBench: each subtask is its own lmms-eval task, scored by `mvbench_aggregate_results` (correct over
    the rows whose reply is not empty, `counted`; 0 when none is); the `mvbench` group YAML defines no
    `aggregate_metric_list`, so lmms-eval prints only the subtasks, and the published MVBench number is
    their unweighted mean, over the subtasks present (each row's `category` is its subtask)."""
    per_subtask: dict[str, list[int]] = {}
    for row in rows:
        tally = per_subtask.setdefault(_category(row, "mvbench"), [0, 0])
        if row.get("counted", True):
            tally[0] += bool(row["correct"])
            tally[1] += 1
    scores = [correct / counted if counted else 0.0 for correct, counted in per_subtask.values()]
    return sum(scores) / len(scores)


def _mlvu(task_types: tuple[str, ...], benchmark: str) -> Callable[[list[Mapping[str, Any]]], float]:
    def aggregate(rows: list[Mapping[str, Any]]) -> float:
        """`mlvu_aggregate_results_dev` / `_test`: accuracy per task type, then the mean over ALL of the
        task's fixed task types; a type with no rows contributes 0 (lmms-eval divides by the number of
        types, not by those present). A row of another type is an error (lmms-eval: KeyError)."""
        tallies = {task_type: [0, 0] for task_type in task_types}
        for row in rows:
            category = _category(row, benchmark)
            if category not in tallies:
                raise ValueError(f"{benchmark}: task type {category!r} is not one of {', '.join(task_types)}")
            tallies[category][0] += bool(row["correct"])
            tallies[category][1] += 1
        return sum(c / n if n else 0.0 for c, n in tallies.values()) / len(task_types)

    return aggregate


# --- the table and the entry points -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    name: str  # lmms-eval's task (or group) name
    style: GroundTruthStyle
    grade: Callable[[str, Sequence[str], str, str], LmmsEvalGrade]
    aggregate: Callable[[list[Mapping[str, Any]]], float]
    scale: int  # lmms-eval prints 100 * the fraction (percent) or the fraction itself (1)
    needs_options: bool  # the grader reads the options (random draw, option text)


_TASKS: dict[str, _Task] = {
    task.name: task
    for task in (
        _Task("videomme", "letter", _grade_mcq_extract, _micro, 100, False),
        _Task("mvbench", "text", _grade_mvbench, _mvbench, 100, False),
        _Task("mlvu_dev", "letter", _grade_mcq_extract, _mlvu(MLVU_DEV_TASK_TYPES, "mlvu_dev"), 100, False),
        _Task(
            "mlvu_test", "letter", _grade_mcq_extract, _mlvu(MLVU_TEST_TASK_TYPES, "mlvu_test"), 100, False
        ),
        _Task("egoschema", "index", _grade_egoschema, _micro, 1, True),
        _Task("nextqa", "index", _grade_nextqa, _micro, 1, True),
        _Task("longvideobench", "index", _grade_longvideobench, _longvideobench, 1, True),
    )
}
_ALIASES = {
    "video_mme": "videomme",
    "mlvu": "mlvu_dev",  # mlb's `mlvu` is lmms-eval's mlvu_dev (the split with public answers)
    "egoschema_subset": "egoschema",  # the full set is scored by a server; the 500-question subset locally
    "nextqa_mc_test": "nextqa",
    "next_qa": "nextqa",
    "longvideobench_val_v": "longvideobench",
    "longvideobench_val_i": "longvideobench",
}

#: The benchmarks graded here (lmms-eval task names; see `canonical_benchmark` for aliases).
LMMS_EVAL_BENCHMARKS: tuple[str, ...] = tuple(_TASKS)
#: How lmms-eval prints each benchmark's score: 100 (percent) or 1 (a fraction). `aggregate_lmms_eval`
#: always returns a fraction; multiply by this to get lmms-eval's printed number.
LMMS_EVAL_SCALE: dict[str, int] = {name: task.scale for name, task in _TASKS.items()}


def canonical_benchmark(benchmark: str) -> str:
    """lmms-eval's task name for `benchmark` ("mlvu" -> "mlvu_dev", "Video-MME" -> "videomme")."""
    key = benchmark.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _TASKS:
        raise ValueError(f"no lmms-eval grader for benchmark {benchmark!r}; choose from {', '.join(_TASKS)}")
    return key


def grade_lmms_eval(
    benchmark: str,
    reply: str,
    options: Sequence[str],
    ground_truth: str | int,
    *,
    rng_seed_key: str,
) -> LmmsEvalGrade:
    """Grade one reply as lmms-eval 0.7.3's task for `benchmark` does (see the module docstring).

    `options` are the option texts as the benchmark stores them (they decide the letters a random draw
    picks from, MVBench's text ground truth and EgoSchema/NExT-QA's option-text matching); `ground_truth`
    as the benchmark stores it (letter, 0-based index or MVBench option text; ValueError otherwise).
    `rng_seed_key` (e.g. "seed:video_id:question_id") seeds the guess that stands in for lmms-eval's
    random choice on EgoSchema, NExT-QA and LongVideoBench.
    """
    task = _TASKS[canonical_benchmark(benchmark)]
    opts = [str(option) for option in options]
    if task.needs_options and not opts:
        raise ValueError(f"{task.name}: lmms-eval's grader needs the options, and none were given")
    truth = _truth_letter(task.name, task.style, ground_truth, opts)
    return task.grade(reply, opts, truth, rng_seed_key)


def truth_letter(benchmark: str, ground_truth: object, options: Sequence[str]) -> str:
    """The ground truth as a letter, read as `benchmark` stores it (letter; 0-based index, '2' is C; MVBench
    option text; a letter is accepted everywhere); ValueError with the reason when it is none of these."""
    task = _TASKS[canonical_benchmark(benchmark)]
    return _truth_letter(task.name, task.style, ground_truth, [str(option) for option in options])


def aggregate_lmms_eval(benchmark: str, rows: Iterable[Mapping[str, Any]]) -> float:
    """The benchmark's score as lmms-eval aggregates it, as a fraction (times `LMMS_EVAL_SCALE` = printed).

    Each row needs ``correct`` (lmms-eval's verdict, e.g. `LmmsEvalGrade.correct`), ``category`` where the
    benchmark averages over categories (MVBench: subtask; MLVU: task type) and optionally ``counted``
    (`LmmsEvalGrade.counted`; default True). Micro for Video-MME, EgoSchema, NExT-QA and LongVideoBench
    (rounded to 5 decimals); MVBench: the mean of per-subtask accuracies over the subtasks present, empty
    replies left out; MLVU: the mean over all of its fixed task types, an absent type counting 0. A row
    without a category on MVBench/MLVU, or with a type MLVU does not have, raises ValueError, and so do no
    rows at all (lmms-eval would divide by zero or print 0).
    """
    task = _TASKS[canonical_benchmark(benchmark)]
    collected = list(rows)
    if not collected:
        raise ValueError(f"{task.name}: no rows to aggregate")
    return task.aggregate(collected)
