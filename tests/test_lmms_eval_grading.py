"""The `lmms-eval` grader (`mlbcli.eval.lmms_eval_grading`) against lmms-eval 0.7.3's own task functions.

Two parts:

- hand-written tests of what a grade means (index "2" is C, macro is not micro, bad ground truths are
  errors, guesses are seeded); they need nothing but mlbcli;
- reply-by-reply comparisons with lmms-eval's `process_results`, parsers and aggregation functions on a
  generated mix of a few hundred replies per benchmark (`reply_mix`). Where lmms-eval draws a random
  option, its task module's `random` is replaced by one that records the draw and returns our seeded
  guess, so `unreadable` and `correct` are compared on every row.

lmms-eval is a test-only dependency (`lmms-eval-test`: installed with --no-deps into its own folder, put on
PYTHONPATH). Until CI installs it, the comparisons skip (`pytest.importorskip`) and only the first part runs.
"""

from __future__ import annotations

import importlib
import os
import random
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mlbcli.eval.lmms_eval_grading import (
    LMMS_EVAL_SCALE,
    MLVU_DEV_TASK_TYPES,
    MLVU_TEST_TASK_TYPES,
    aggregate_lmms_eval,
    extract_mcq_answer,
    grade_lmms_eval,
    seeded_guess,
)

LETTERS = "ABCDE"
N_REPLIES = 400

# --- the reply mix ---------------------------------------------------------------------------------------

OPTION_POOL = [
    "a man running", "A dog jumping over a fence", "The car turns left", "Nothing moves", "Two people cook",
    "She opens the door", "Blue", "Three", "I don't know", "He is playing basketball", "Eight",
    "The woman waves at the camera", "Because it is raining", "To clean the kitchen", "In the garden",
    "Red and white", "A bird flies away", "They dance together", "Before the man sits down", "Vitamin C",
]  # fmt: skip
# EgoSchema's options describe "C", the camera wearer: a capital letter inside the option text.
EGO_POOL = [
    "C cleans the kitchen", "C is cooking a meal for the family", "C repairs a bicycle in the garage",
    "C reads a book", "C paints a wall", "C washes dishes and then dries them", "C plays with a dog",
    "C sorts laundry", "C assembles furniture", "C waters the plants in the garden",
]  # fmt: skip
TEMPLATES = [
    "{L}", "({L})", "{L}.", "{L})", "{L}:", " {L} ", "{l}", "({l})", "{l}.", "Answer: {L}", "Answer: {l}",
    "answer: ({l}) {t}", "The answer is {L}", "The answer is {L}.", "The answer is ({L}).",
    "The best answer is {L}", "Best option: ({L})", "{L}) {T}", "{L}. {T}", "({L}) {T}", "{L}: {T}", "{l}) {t}",
    "{T}", "{T}.", "{t}", "I think the answer is {L} because the video shows that {t}.",
    "Based on the video, {t}.", "In the video, {t}.", "The correct option is {L}, {T}.", "Option {L}",
    "option {l}", "{L} and {M}", "{L} or {M}", "{L}, {M}", "Both {L} and {M} are plausible, but {M} is better.",
    "The answer is {L}, not {M}.", "Not {M}, the answer is {L}", "Answer: {L}. Wait, no. Answer: {M}",
    "I'd say {L}.", "I think it's {L}, not {M}", "", " ", "I cannot tell from the video.",
    "Sorry, I can't answer that.", "None of the above.", "答案是{L}", "选{L}", "（{L}）", "{L}。", "答案：{L}。{T}",
    "**{L}**", "`{L}`", "[{L}]", "<{L}>", "{L}\n", "{L}\nExplanation: {t}.", "{L}\n\nThe video shows {t}.",
    "{L}!", "{L}?", '"{L}"', "'{L}'", "{L}...", "It is {L}!", "E) a woman cooking",
    "The video shows a person; {t}. Therefore, option {L} is correct.",
    "Looking at the frames, option {M} can be ruled out since {tm}. The answer is {L}.",
    "{L}. {T}\n{M}. {TM}", "<think>The options are {M} and {L}.</think> {L}", "My answer is {L}",
    "I choose {L}.", "The correct choice is ({L})", "{L}, because {t}", "Hmm, {t}? I would go with {l}.",
]  # fmt: skip

FUZZ_TOKENS = [
    "A", "B", "C", "D", "E", "a", "b", "c", "d", "e", " ", " ", " ", "(", ")", ".", ",", ":", ";", "!", "?", "'",
    '"', "\n", "\t", "-", "/", "1,000", "3.5", "e.g.", "the answer is ", "The answer", "Best option:", "选",
    "答案是", "answer", "Option ", "I", "I'd", "man", "cooks", "C cleans the kitchen", "Blue", "word ", "（", "）",
]  # fmt: skip


@dataclass
class Case:
    reply: str
    options: list[str]  # option texts, without labels
    truth_index: int
    category: str
    key: str


def reply_mix(benchmark: str, n: int = N_REPLIES, seed: int = 0) -> list[Case]:
    """`n` questions with realistic replies: the intended letter is the right one 60% of the time."""
    rng = random.Random(f"{benchmark}:{seed}")
    categories = {
        "mvbench": ["action_count", "object_shuffle", "moving_direction", "scene_transition"],
        "mlvu_dev": list(MLVU_DEV_TASK_TYPES[:5]),  # two task types absent: they count 0 in lmms-eval
        "mlvu_test": list(MLVU_TEST_TASK_TYPES),
    }.get(benchmark, ["short", "medium", "long"])
    cases = []
    for i in range(n):
        count = {"videomme": 4, "mlvu_dev": 4, "mlvu_test": 4, "egoschema": 5, "nextqa": 5}.get(
            benchmark, rng.choice([4, 5])
        )
        options = rng.sample(EGO_POOL if benchmark == "egoschema" else OPTION_POOL, count)
        truth = rng.randrange(count)
        meant = truth if rng.random() < 0.6 else rng.choice([j for j in range(count) if j != truth])
        other = rng.choice([j for j in range(count) if j != meant])
        text, other_text = options[meant], options[other]
        reply = rng.choice(TEMPLATES).format(
            L=LETTERS[meant], l=LETTERS[meant].lower(), M=LETTERS[other], T=text, t=text[0].lower() + text[1:],
            TM=other_text, tm=other_text.lower(),
        )  # fmt: skip
        if i % 4 == 3:  # a quarter: token soup, for the corners of each extractor
            reply = "".join(rng.choice(FUZZ_TOKENS) for _ in range(rng.randrange(1, 12)))
        cases.append(Case(reply, options, truth, rng.choice(categories), f"{benchmark}:{i}"))
    return cases


# --- meaning: no lmms-eval needed -------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark", ["egoschema", "nextqa", "longvideobench"])
def test_an_index_ground_truth_counts_from_zero(benchmark: str) -> None:
    options = ["cooks", "reads", "paints", "sleeps", "runs"]
    for truth in ("2", 2, "C", "c"):
        grade = grade_lmms_eval(benchmark, "C", options, truth, rng_seed_key="k")
        assert (grade.truth, grade.choice, grade.correct) == ("C", "C", True)
    assert not grade_lmms_eval(benchmark, "B", options, "2", rng_seed_key="k").correct


@pytest.mark.parametrize(
    ("benchmark", "truth", "message"),
    [
        ("videomme", "2", "is not a letter"),  # Video-MME stores letters: a digit is not read as B (or C)
        ("mlvu", "(B)", "is not a letter"),
        ("egoschema", "7", "out of range"),
        ("nextqa", "answer two", "0-based option index"),
        ("longvideobench", 1.0, "0-based option index"),
        ("mvbench", "a cat", "exact text"),
        ("videomme", "E", "names no option"),
        ("nextqa", True, "0-based option index"),
    ],
)
def test_a_ground_truth_the_benchmark_cannot_store_is_an_error(
    benchmark: str, truth: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        grade_lmms_eval(benchmark, "B", ["w", "x", "y", "z", "v"][:4], truth, rng_seed_key="k")


def test_mvbench_ground_truth_is_the_option_text() -> None:
    options = ["a cat", "a dog", "a cow"]
    assert grade_lmms_eval("mvbench", "(B) a dog", options, "a dog", rng_seed_key="k").correct
    assert grade_lmms_eval("mvbench", "B", options, "B", rng_seed_key="k").correct


def test_unreadable_replies_follow_each_task_policy() -> None:
    opts = ["cooks", "reads", "paints", "sleeps", "runs"]
    wrong = grade_lmms_eval("videomme", "I cannot tell", opts[:4], "A", rng_seed_key="k")
    assert (wrong.choice, wrong.correct, wrong.unreadable, wrong.guessed) == (None, False, True, False)
    empty = grade_lmms_eval("mvbench", "", opts[:4], "A", rng_seed_key="k")
    assert (empty.unreadable, empty.counted) == (True, False)  # left out of MVBench's aggregate
    assert grade_lmms_eval("mvbench", "unsure", opts[:4], "A", rng_seed_key="k").counted
    for benchmark in ("egoschema", "nextqa", "longvideobench"):
        first = grade_lmms_eval(benchmark, "no idea", opts, "0", rng_seed_key="video-1:q-3")
        again = grade_lmms_eval(benchmark, "no idea", opts, "0", rng_seed_key="video-1:q-3")
        assert first.guessed and first.unreadable and first.choice is None
        assert first.guess == again.guess and first.correct == (first.guess == "A")
    guesses = {seeded_guess("ABCDE", f"q{i}") for i in range(200)}
    assert guesses == set("ABCDE")


def test_lmms_eval_quirks_are_kept() -> None:
    # What lmms-eval reads, not what the reply means (mlb's grader reads these correctly).
    opts = ["cooks", "reads", "paints", "sleeps"]
    assert grade_lmms_eval("longvideobench", "Answer: B", opts, "1", rng_seed_key="k").choice == "A"
    assert grade_lmms_eval("mvbench", "a man is running", opts, "A", rng_seed_key="k").choice == "A"
    assert grade_lmms_eval("mvbench", "I'd say B.", opts, "B", rng_seed_key="k").choice == "D"
    assert grade_lmms_eval("videomme", "b", opts, "B", rng_seed_key="k").unreadable
    assert extract_mcq_answer("The answer is (B), not C.") == "C"  # a last letter outranks the phrase
    long_opts = ["C cooks", "C reads", "C paints", "C sleeps", "C runs"]
    assert grade_lmms_eval("egoschema", "A man", long_opts, "0", rng_seed_key="k").choice == "A"


def test_mvbench_macro_over_subtasks_differs_from_micro() -> None:
    rows = [{"correct": True, "category": "action_count"}] * 9 + [
        {"correct": False, "category": "action_count"}
    ]
    rows += [
        {"correct": False, "category": "object_shuffle"},
        {"correct": True, "category": "object_shuffle"},
    ]
    rows += [{"correct": False, "category": "object_shuffle", "counted": False}]  # empty reply: left out
    assert aggregate_lmms_eval("mvbench", rows) == pytest.approx((0.9 + 0.5) / 2)
    micro = sum(r["correct"] for r in rows) / len(rows)
    assert micro == pytest.approx(10 / 13)
    with pytest.raises(ValueError, match="has none"):
        aggregate_lmms_eval("mvbench", [*rows, {"correct": True, "category": None}])


def test_mlvu_averages_over_all_its_task_types() -> None:
    rows = [{"correct": True, "category": "count"}, {"correct": False, "category": "ego"}]
    assert aggregate_lmms_eval("mlvu", rows) == pytest.approx(1 / 7)  # 5 absent types count 0
    assert aggregate_lmms_eval("mlvu_test", rows) == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="not one of"):
        aggregate_lmms_eval("mlvu_dev", [{"correct": True, "category": "needleQA"}])
    micro_rows = [{"correct": c} for c in (True, True, False)]
    assert aggregate_lmms_eval("egoschema", micro_rows) == pytest.approx(2 / 3)
    assert LMMS_EVAL_SCALE["videomme"] == 100 and LMMS_EVAL_SCALE["egoschema"] == 1
    with pytest.raises(ValueError, match="no rows"):
        aggregate_lmms_eval("videomme", [])


# --- reply by reply against lmms-eval 0.7.3 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lmms_tasks(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], types.ModuleType]:
    pytest.importorskip("lmms_eval", reason="lmms-eval is a test-only dependency (see the module docstring)")
    hf_home = str(tmp_path_factory.mktemp("hf_home"))

    def load(task: str) -> types.ModuleType:
        # Some task modules read $HF_HOME at import (nextqa: os.environ["HF_HOME"]); they only build paths.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_HOME", os.environ.get("HF_HOME", hf_home))
            return importlib.import_module(f"lmms_eval.tasks.{task}.utils")

    return load


class _Draws:
    """Stands in for a task module's `random`: records each draw and returns our seeded guess."""

    def __init__(self) -> None:
        self.key = ""
        self.calls = 0

    def choice(self, letters: list[str]) -> str:
        self.calls += 1
        return seeded_guess(letters, self.key)


def _compare(rows: list[tuple[Any, Any]]) -> None:
    """Every (ours, theirs) pair agrees; on failure, show the first few disagreements."""
    bad = [(ours, theirs) for ours, theirs in rows if ours != theirs]
    assert not bad, f"{len(bad)}/{len(rows)} disagree, e.g. {bad[:5]}"


def test_videomme_reply_by_reply(lmms_tasks: Callable[[str], types.ModuleType]) -> None:
    vm = lmms_tasks("videomme")
    pairs, ours, theirs = [], [], []
    for case in reply_mix("videomme"):
        doc = {"question_id": case.key, "duration": case.category, "domain": vm.CATEGORIES[0],
               "sub_category": vm.SUB_CATEGORIES[0], "task_type": vm.TASK_CATEGORIES[0], "videoID": case.key,
               "answer": LETTERS[case.truth_index]}  # fmt: skip
        result = vm.videomme_process_results(doc, [case.reply])["videomme_perception_score"]
        grade = grade_lmms_eval("videomme", case.reply, case.options, doc["answer"], rng_seed_key=case.key)
        pairs.append(((grade.choice, grade.correct), (result["pred_answer"] or None, result["score"] == 1.0)))
        ours.append({"correct": grade.correct, "category": case.category})
        theirs.append(result)
    _compare(pairs)
    assert 100 * aggregate_lmms_eval("videomme", ours) == pytest.approx(vm.videomme_aggregate_results(theirs))


@pytest.mark.parametrize("split", ["mlvu_dev", "mlvu_test"])
def test_mlvu_reply_by_reply(lmms_tasks: Callable[[str], types.ModuleType], split: str) -> None:
    mlvu = lmms_tasks("mlvu")
    pairs, ours, theirs = [], [], []
    for case in reply_mix(split):
        listed = "".join(f"\n({x}) {text}" for x, text in zip(LETTERS, case.options, strict=False))
        doc = {
            "question": "What happens?" + listed,
            "task_type": case.category,
            "answer": LETTERS[case.truth_index],
        }
        result = mlvu.mlvu_process_results(doc, [case.reply])["mlvu_percetion_score"]
        grade = grade_lmms_eval(split, case.reply, case.options, doc["answer"], rng_seed_key=case.key)
        lmms_correct = result["pred_answer"] == result["answer"]
        pairs.append(((grade.choice, grade.correct), (result["pred_answer"] or None, lmms_correct)))
        ours.append({"correct": grade.correct, "category": case.category})
        theirs.append(result)
    _compare(pairs)
    aggregate = mlvu.mlvu_aggregate_results_dev if split == "mlvu_dev" else mlvu.mlvu_aggregate_results_test
    assert 100 * aggregate_lmms_eval(split, ours) == pytest.approx(aggregate(theirs))


def test_mvbench_reply_by_reply(lmms_tasks: Callable[[str], types.ModuleType]) -> None:
    mv = lmms_tasks("mvbench")
    pairs, ours, theirs = [], [], {}
    for case in reply_mix("mvbench"):
        doc = {"candidates": case.options, "answer": case.options[case.truth_index]}
        result = mv.mvbench_process_results(doc, [case.reply])["mvbench_accuracy"]
        read = next((x for x in LETTERS if mv.mcq_acc(x, case.reply) == 1), None)
        grade = grade_lmms_eval("mvbench", case.reply, case.options, doc["answer"], rng_seed_key=case.key)
        pairs.append(
            ((grade.choice, grade.correct, grade.counted), (read, result["score"] == 1, case.reply != ""))
        )
        ours.append({"correct": grade.correct, "category": case.category, "counted": grade.counted})
        theirs.setdefault(case.category, []).append(result)
    _compare(pairs)
    per_subtask = [mv.mvbench_aggregate_results(results) for results in theirs.values()]
    assert 100 * aggregate_lmms_eval("mvbench", ours) == pytest.approx(sum(per_subtask) / len(per_subtask))


def test_egoschema_reply_by_reply(lmms_tasks: Callable[[str], types.ModuleType], monkeypatch) -> None:
    ego = lmms_tasks("egoschema")
    draws = _Draws()
    monkeypatch.setattr(ego, "random", draws)
    pairs, ours, theirs = [], [], []
    for number, case in enumerate(reply_mix("egoschema")):
        stored = [f"{x}. {text}" for x, text in zip(LETTERS, case.options, strict=True)]  # as the dataset
        truth: int | str = case.truth_index if number % 2 else str(case.truth_index)
        doc = {"video_idx": case.key, "option": stored, "answer": truth}
        draws.key, draws.calls = case.key, 0
        index2ans, choices = ego.get_multi_choice_info(doc)
        parsed, matched = ego.parse_multi_choice_response(case.reply, choices, index2ans)
        result = ego.egoschema_process_results_generation(doc, [case.reply])["score"]
        grade = grade_lmms_eval("egoschema", case.reply, stored, truth, rng_seed_key=case.key)
        unlabelled = grade_lmms_eval("egoschema", case.reply, case.options, truth, rng_seed_key=case.key)
        lmms_correct = str(result["ground_truth"]) == str(result["pred"])
        pairs.append(
            (
                (grade.choice, grade.unreadable, grade.correct),
                (parsed if matched else None, not matched, lmms_correct),
            )
        )
        pairs.append((unlabelled, grade))
        ours.append({"correct": grade.correct})
        theirs.append(result)
    _compare(pairs)
    assert aggregate_lmms_eval("egoschema", ours) == pytest.approx(
        ego.egoschema_aggregate_score(theirs, None)
    )


def test_nextqa_reply_by_reply(lmms_tasks: Callable[[str], types.ModuleType], monkeypatch) -> None:
    nq = lmms_tasks("nextqa")
    draws = _Draws()
    monkeypatch.setattr(nq, "random", draws)
    pairs, ours, matches = [], [], []
    for case in reply_mix("nextqa"):
        doc: dict[str, Any] = {f"a{i}": text for i, text in enumerate(case.options)}
        doc["answer"] = case.truth_index
        draws.key, draws.calls = case.key, 0
        index2ans, choices = nq.get_multi_choice_info(doc)
        parsed = nq.parse_multi_choice_response(case.reply, choices, index2ans)
        random_draw = draws.calls > 0
        match = nq.nextqa_mc_process_results(doc, [case.reply])["exact_match"]
        grade = grade_lmms_eval("nextqa", case.reply, case.options, case.truth_index, rng_seed_key=case.key)
        theirs = (None if random_draw else parsed, random_draw, bool(match))
        pairs.append(((grade.choice, grade.unreadable, grade.correct), theirs))
        ours.append({"correct": grade.correct})
        matches.append(match)
    _compare(pairs)
    assert aggregate_lmms_eval("nextqa", ours) == pytest.approx(sum(matches) / len(matches))


def test_longvideobench_reply_by_reply(lmms_tasks: Callable[[str], types.ModuleType], monkeypatch) -> None:
    lvb = lmms_tasks("longvideobench")
    draws = _Draws()
    monkeypatch.setattr(lvb, "random", draws)
    pairs, ours, theirs = [], [], []
    for case in reply_mix("longvideobench"):
        padded = case.options + ["N/A"] * (5 - len(case.options))  # 4-option questions pad with "N/A"
        doc: dict[str, Any] = {f"option{i}": text for i, text in enumerate(padded)}
        doc |= {"id": case.key, "duration_group": 600, "question_category": case.category,
                "correct_choice": case.truth_index}  # fmt: skip
        draws.key, draws.calls = case.key, 0
        result = lvb.longvideobench_process_results(doc, [case.reply])["lvb_acc"]
        grade = grade_lmms_eval("longvideobench", case.reply, padded, case.truth_index, rng_seed_key=case.key)
        random_draw = draws.calls > 0
        lmms = (
            None if random_draw else result["parsed_pred"],
            random_draw,
            result["parsed_pred"] == result["answer"],
        )
        pairs.append(((grade.choice, grade.unreadable, grade.correct), lmms))
        ours.append({"correct": grade.correct})
        theirs.append(result)
    _compare(pairs)
    assert aggregate_lmms_eval("longvideobench", ours) == lvb.longvideobench_aggregate_results(theirs)
