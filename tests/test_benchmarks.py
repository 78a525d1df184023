"""`--benchmark`: lmms-eval's prompts byte for byte, its parse-failure policies, seeded guesses.

The reference strings below are what lmms-eval (commit 75571cfe) renders for the named task, written out
by hand from the task's `doc_to_text` and YAML `lmms_eval_specific_kwargs.default` (source file given at
each test), for a document with the question "What happens?" and the options below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlbcli.errors import UsageError
from mlbcli.eval.benchmarks import BENCHMARKS, get_benchmark, guess, inline_options, judge, options_for

Q = "What happens?"
OPTS = ["a man running", "a dog jumping", "a car driving", "nothing moves"]
LABELLED = ["A. a man running", "B. a dog jumping", "C. a car driving", "D. nothing moves"]


def test_videomme_prompt_is_lmms_evals():
    # lmms_eval/tasks/videomme/utils.py videomme_doc_to_text (option_prompt + "\n" + question + "\n" +
    # options + "\n" + post_prompt) with videomme.yaml's default post_prompt
    # "\nAnswer with the option's letter from the given choices directly."; the dataset's options carry
    # their "A. " labels.
    reference = (
        "Select the best answer to the following multiple-choice question based on the video and the "
        "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "What happens?\n"
        "A. a man running\nB. a dog jumping\nC. a car driving\nD. nothing moves\n"
        "\nAnswer with the option's letter from the given choices directly."
    )
    bench = BENCHMARKS["videomme"]
    assert bench.prompt(Q, LABELLED) == reference
    assert bench.prompt(Q, OPTS) == reference  # plain options get the same labels


def test_videomme_qwen3_vl_profile():
    # videomme.yaml's qwen3_vl profile (pre_prompt "Question: ", post_prompt "Answer with the option
    # letter only.") -> utils.py videomme_doc_to_text_qwen3vl.
    reference = (
        "Question: What happens?\nOptions:\n"
        "A. a man running\nB. a dog jumping\nC. a car driving\nD. nothing moves\n"
        "Answer with the option letter only."
    )
    assert BENCHMARKS["videomme"].prompt(Q, LABELLED, "qwen3_vl") == reference


def test_adapter_picks_the_profile_of_its_family():
    # The Qwen3-VL families (dense and MoE) get lmms-eval's qwen3_vl profile; every other family the
    # tasks' default. An answer run asks the adapter through `benchmark_profile` only.
    from types import SimpleNamespace

    from mlbcli.models.llava_onevision import LlavaOnevisionAdapter
    from mlbcli.models.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
    from mlbcli.models.qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter
    from mlbcli.runners.tasks import AnswerTask, benchmark_profile

    assert benchmark_profile(Qwen3VLAdapter) == benchmark_profile(Qwen3VLMoeAdapter) == "qwen3_vl"
    for other in (Qwen2VLAdapter, Qwen2_5_VLAdapter, LlavaOnevisionAdapter):
        assert benchmark_profile(other) is None
    item = SimpleNamespace(question=Q, options=LABELLED)
    task = AnswerTask(benchmark=BENCHMARKS["videomme"])
    qwen3 = task.prompt(SimpleNamespace(adapter=Qwen3VLMoeAdapter), item)
    assert qwen3 == BENCHMARKS["videomme"].prompt(Q, LABELLED, "qwen3_vl")
    assert task.prompt(SimpleNamespace(adapter=Qwen2VLAdapter), item) == BENCHMARKS["videomme"].prompt(
        Q, LABELLED
    )
    assert qwen3 != BENCHMARKS["videomme"].prompt(Q, LABELLED)


def test_mvbench_prompt_is_lmms_evals():
    # lmms_eval/tasks/mvbench/utils.py mvbench_doc_to_text ("Question:" + question + "\nOption:\n" +
    # "(A) candidate\n"... + post_prompt), mvbench_<subtask>.yaml post_prompt "Only give the best option.\n".
    reference = (
        "Question:What happens?\nOption:\n"
        "(A) a man running\n(B) a dog jumping\n(C) a car driving\n(D) nothing moves\n"
        "Only give the best option.\n"
    )
    assert BENCHMARKS["mvbench"].prompt(Q, OPTS) == reference
    assert BENCHMARKS["mvbench"].prompt(Q, LABELLED) == reference  # our labels are not doubled


def test_egoschema_prompt_is_lmms_evals():
    # lmms_eval/tasks/egoschema/utils.py egoschema_doc_to_text: question + "\n" + option (labelled
    # "A. ..." in the dataset) for each option, then the forced post_prompt
    # "\nAnswer with the option's letter from the given choices directly."
    options = [*LABELLED, "E. a bird flying"]
    reference = (
        "What happens?\n"
        "A. a man running\nB. a dog jumping\nC. a car driving\nD. nothing moves\nE. a bird flying\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert BENCHMARKS["egoschema"].prompt(Q, options) == reference


def test_nextqa_prompt_is_lmms_evals():
    # lmms_eval/tasks/nextqa/utils.py nextqa_doc_to_text_mc: [question.strip(), "A. " + a0.strip(), ...]
    # joined by "\n"; nextqa_mc_test.yaml sets no post_prompt.
    options = [*OPTS, "a bird flying"]
    reference = "What happens?\nA. a man running\nB. a dog jumping\nC. a car driving\nD. nothing moves\nE. a bird flying"
    assert BENCHMARKS["nextqa"].prompt(" What happens? ", options) == reference


def test_longvideobench_prompt_is_lmms_evals():
    # lmms_eval/tasks/longvideobench/utils.py longvideobench_doc_to_text: question + "\n" + "A. c0\nB. c1..."
    # + "\n" + post_prompt; longvideobench_val_v.yaml post_prompt
    # "Answer with the option's letter from the given choices directly.\n" (trailing newline).
    reference = (
        "What happens?\n"
        "A. a man running\nB. a dog jumping\nC. a car driving\nD. nothing moves\n"
        "Answer with the option's letter from the given choices directly.\n"
    )
    assert BENCHMARKS["longvideobench"].prompt(Q, OPTS) == reference


def test_mlvu_prompt_is_lmms_evals():
    # lmms_eval/tasks/mlvu/utils.py mlvu_doc_to_text: pre_prompt + question + post_prompt, mlvu_dev.yaml
    # post_prompt "\nOnly give the best option.\nBest option: ("; the dataset's question lists the options.
    inline = "What happens?\n(A) a man running\n(B) a dog jumping\n(C) a car driving\n(D) nothing moves"
    reference = inline + "\nOnly give the best option.\nBest option: ("
    bench = BENCHMARKS["mlvu"]
    assert bench.prompt(inline, None) == reference  # the question as the dataset has it
    assert bench.prompt(Q, OPTS) == reference  # separate options are written the same way
    assert bench.prompt(inline, OPTS) == reference  # ... and never twice
    # Graded against the options its question lists.
    assert inline_options(inline) == OPTS
    assert options_for(bench, inline, None) == tuple(OPTS)
    assert options_for(None, inline, None) is None


@pytest.mark.parametrize("name", ["videomme", "mvbench", "egoschema", "nextqa", "longvideobench"])
def test_benchmarks_need_options(name):
    with pytest.raises(UsageError, match="multiple-choice"):
        BENCHMARKS[name].prompt(Q, None)


def test_benchmark_names():
    assert get_benchmark("Video-MME").name == "videomme"
    assert get_benchmark("next_qa").name == "nextqa"
    assert get_benchmark(None) is None
    with pytest.raises(UsageError, match="choose from videomme, mvbench"):
        get_benchmark("mmbench")


# -- parse-failure policies (lmms-eval's *_process_results / *_aggregate_results) ----------------------------
def test_videomme_and_mlvu_count_unparsable_wrong():
    for name in ("videomme", "mlvu"):
        verdict = judge("I cannot tell.", OPTS, "B", BENCHMARKS[name])
        assert (verdict.choice, verdict.correct, verdict.parse_failed) == (None, False, True)
        assert judge("", OPTS, "B", BENCHMARKS[name]).correct is False


def test_mvbench_excludes_empty_replies_only():
    # mvbench_aggregate_results counts a sample only when its raw reply is not ""; any other reply is
    # scored by mcq_acc (wrong when no letter matches).
    bench = BENCHMARKS["mvbench"]
    empty = judge("", OPTS, "B", bench)
    assert (empty.choice, empty.correct, empty.parse_failed) == (None, None, True)
    unparsable = judge("no idea", OPTS, "B", bench)
    assert (unparsable.correct, unparsable.parse_failed) == (False, True)


@pytest.mark.parametrize("name", ["egoschema", "nextqa", "longvideobench"])
def test_random_policy_guesses_with_a_seeded_rng(name):
    bench = BENCHMARKS[name]
    verdicts = [judge("None of the above.", OPTS, "B", bench, seed=0, video_id=f"v{i}") for i in range(60)]
    assert all(v.parse_failed for v in verdicts)
    # The guess is the row's choice, graded like a parsed letter.
    assert all(v.correct == (v.choice == "B") for v in verdicts)
    assert {v.choice for v in verdicts} == set("ABCD")  # a real draw over the options
    # Reproducible: the same (seed, video, question) gives the same guess in any run or order.
    again = [
        judge("None of the above.", OPTS, "B", bench, seed=0, video_id=f"v{i}") for i in reversed(range(60))
    ]
    assert [v.choice for v in verdicts] == [v.choice for v in reversed(again)]
    assert guess(OPTS, seed=0, video_id="v1", question_id="q") == guess(
        OPTS, seed=0, video_id="v1", question_id="q"
    )
    assert [guess(OPTS, seed=s, video_id="v1", question_id="q") for s in range(40)] != [
        guess(OPTS, seed=0, video_id="v1", question_id="q")
    ] * 40


def test_parsed_replies_are_graded_the_same_under_every_benchmark():
    for bench in [None, *BENCHMARKS.values()]:
        verdict = judge("answer: (b)", OPTS, "B", bench)
        assert (verdict.choice, verdict.correct, verdict.parse_failed) == ("B", True, False)


def test_without_benchmark_unparsable_counts_wrong():
    verdict = judge("A and B", OPTS, "A", None)
    assert (verdict.choice, verdict.correct, verdict.parse_failed) == (None, False, True)


# -- end to end ------------------------------------------------------------------------------------------------
def test_answer_benchmark_records_prompt_policy_and_category(tiny_model_dir, clips_dir, tmp_path):
    from mlbcli import api
    from mlbcli.io.writers import read_results

    manifest = tmp_path / "mv.jsonl"
    lines = [
        {
            "video": str(clips_dir / "a.mp4"),
            "question": Q,
            "options": OPTS,
            "answer": "B",
            "category": "action_count",
        },
        {"video": str(clips_dir / "b.mp4"), "question": Q, "options": OPTS, "answer": "a car driving"},
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "mv.parquet"
    summary = api.answer(
        [str(manifest)],
        model=str(tiny_model_dir),
        benchmark="mvbench",
        frames=4,
        max_new_tokens=3,
        run=api.RunOptions(out=str(out), workers=0),
    )
    assert summary.failed == 0
    rows = read_results(out).to_pylist()
    assert [r["prompt"] for r in rows] == [BENCHMARKS["mvbench"].prompt(Q, OPTS)] * 2
    assert [r["benchmark"] for r in rows] == ["mvbench", "mvbench"]
    assert [r["category"] for r in rows] == ["action_count", None]
    for row in rows:
        assert isinstance(row["parse_failed"], bool)
        assert row["parse_failed"] == (judge(row["answer"], OPTS, "B", None).choice is None)
    options = json.loads(rows[0]["options_json"])
    assert options["benchmark"] == "mvbench" and options["max_new_tokens"] == 3
    # Resuming the file with another benchmark would mix conventions: refused.
    with pytest.raises(UsageError, match="benchmark"):
        api.answer(
            [str(manifest)],
            model=str(tiny_model_dir),
            benchmark="videomme",
            frames=4,
            max_new_tokens=3,
            run=api.RunOptions(out=str(out), workers=0),
        )


def test_max_new_tokens_defaults_to_the_benchmarks(tiny_model_dir, clips_dir, tmp_path):
    from mlbcli import api
    from mlbcli.io.writers import read_results

    out = tmp_path / "lvb.jsonl"
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"video": str(clips_dir / "a.mp4"), "question": Q, "options": OPTS}) + "\n"
    )
    api.answer(
        [str(manifest)],
        model=str(tiny_model_dir),
        benchmark="longvideobench",
        frames=2,
        run=api.RunOptions(out=str(out), workers=0),
    )
    (row,) = read_results(Path(out)).to_pylist()
    assert json.loads(row["options_json"])["max_new_tokens"] == 32  # longvideobench_val_v.yaml
    assert row["generated_tokens"] <= 32


def test_videomme_llava_vid_profile_and_the_llava_video_family():
    # videomme.yaml's llava_vid profile (pre_prompt "", post_prompt "The best answer is:") through
    # utils.py videomme_doc_to_text: option_prompt + "\n" + question + "\n" + options + "\n" + post_prompt.
    from mlbcli.models.llava_video import LlavaVideoAdapter
    from mlbcli.runners.tasks import benchmark_profile

    reference = (
        "Select the best answer to the following multiple-choice question based on the video and the "
        "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "What happens?\n"
        "A. a man running\nB. a dog jumping\nC. a car driving\nD. nothing moves\n"
        "The best answer is:"
    )
    assert BENCHMARKS["videomme"].prompt(Q, LABELLED, "llava_vid") == reference
    assert benchmark_profile(LlavaVideoAdapter) == "llava_vid"
    # Tasks without a llava_vid profile render their default for it.
    assert BENCHMARKS["mvbench"].prompt(Q, OPTS, "llava_vid") == BENCHMARKS["mvbench"].prompt(Q, OPTS)


def test_longvideobench_drops_na_options():
    # longvideobench_doc_to_text keeps the candidates that are not "N/A" (4-option questions are padded).
    padded = [*OPTS, "N/A"]
    assert BENCHMARKS["longvideobench"].prompt(Q, padded) == BENCHMARKS["longvideobench"].prompt(Q, OPTS)
    assert "E. N/A" not in BENCHMARKS["longvideobench"].prompt(Q, padded)
