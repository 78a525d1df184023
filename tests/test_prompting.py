"""Multiple-choice prompt formatting, answer-letter extraction and grading."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mlbcli.eval.prompting import LETTERS, MC_POST_PROMPT, answer_letter, format_question, grade, parse_choice

OPTS = ["a dog running", "a cat sleeping", "a bird flying", "a fish swimming"]


def test_format_question_without_options_is_unchanged():
    assert format_question("What happens?", None) == "What happens?"
    assert format_question("What happens?", []) == "What happens?"


def test_format_question_lists_options_and_post_prompt():
    prompt = format_question("What is shown?", ["dog", "cat"])
    assert prompt == "What is shown?\nA. dog\nB. cat\n" + MC_POST_PROMPT
    assert MC_POST_PROMPT == "Answer with the option's letter from the given choices directly."


def test_format_question_does_not_double_existing_labels():
    prompt = format_question("Q?", ["A. dog", "(B) cat", "C) bird", "D: fish"])
    assert prompt.splitlines()[1:5] == ["A. dog", "B. cat", "C. bird", "D. fish"]
    # Text that merely starts with a capital article, or a label of another position, is content.
    prompt = format_question("Q?", ["A dog", "A. cat"])
    assert prompt.splitlines()[1:3] == ["A. A dog", "B. A. cat"]


def test_format_question_too_many_options():
    with pytest.raises(ValueError):
        format_question("Q?", [str(i) for i in range(27)])


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        (" (B) ", "B"),
        ("(b)", "B"),
        ("B.", "B"),
        ("[C]", "C"),
        ("**D**", "D"),
        ("`A`", "A"),
        ("B. a cat sleeping", "B"),
        ("B) a cat sleeping", "B"),
        ("B: a cat sleeping", "B"),
        ("(B) a cat sleeping", "B"),
        ("b) a cat", "B"),
        ("C, because the bird is in the sky.", "C"),
        ("D - the fish", "D"),
        ("Answer: B", "B"),
        ("answer: (c)", "C"),
        ("The answer is (b).", "B"),
        ("The answer is A because the dog runs.", "A"),
        ("The correct answer is option D.", "D"),
        ("Best option: (B", "B"),
        ("Best option:(C) a bird", "C"),
        ("I think the answer is B. Wait, the answer is C.", "C"),
        ("I think it is C because the bird flies.", "C"),
        ("It looks like option D to me.", "D"),
        ("The video shows (C) a bird flying.", "C"),
        ("a cat sleeping", "B"),
        ("A cat sleeping.", "B"),  # option text wins over the article "A"
        ("The video shows a fish swimming in a tank.", "D"),
        ("A fish swimming", "D"),
        ("答案：C", "C"),
    ],
)
def test_parse_choice_variants(response, expected):
    assert parse_choice(response, OPTS) == expected


@pytest.mark.parametrize(
    "response",
    [
        "",
        "   ",
        "E",  # only 4 options
        "(F)",
        "A man is walking down the street.",  # article, and no option text matches
        "I don't know.",  # pronoun
        "It is either B or C.",  # ambiguous lone letters
        "the answer is a mystery",  # lowercase article after an answer phrase
        "The options are unclear.",
        "i.e. nothing",
    ],
)
def test_parse_choice_unparsable(response):
    assert parse_choice(response, OPTS) is None


def test_parse_choice_needs_options():
    assert parse_choice("B", []) is None


def test_parse_choice_option_text_rules():
    # Longest contained option wins; options whose label is already in the text are matched without it.
    assert parse_choice("I see a hot dog", ["dog", "hot dog"]) == "B"
    assert parse_choice("cat", ["A. dog", "B. cat"]) == "B"
    # The whole response being one option's text beats a letter inside it.
    assert parse_choice("Vitamin C", ["Vitamin A", "Vitamin C"]) == "B"
    assert parse_choice("vitamin c!", ["Vitamin A", "Vitamin C"]) == "B"
    # Two equally long matches are ambiguous.
    assert parse_choice("a dog and a cat", ["dog", "cat"]) is None


def test_parse_choice_article_a_with_letter_label():
    assert parse_choice("A. a cat", ["dog", "cat"]) == "A"
    assert parse_choice("A, definitely", ["dog", "cat"]) == "A"
    assert parse_choice("A dog is running", ["cat", "horse"]) is None


def test_many_options_pronoun_i():
    opts = [f"option number {i}" for i in range(10)]
    assert parse_choice("I", opts) == "I"
    assert parse_choice("I think it is J.", opts) == "J"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("a cat sleeping", "B"),
        ("A Cat Sleeping.", "B"),
        ("B. a cat sleeping", "B"),
        ("cat sleeping", "B"),
        ("zebra", None),
        ("E", None),
    ],
)
def test_answer_letter(answer, expected):
    assert answer_letter(answer, OPTS) == expected


def test_grade_multiple_choice():
    assert grade("B", "B", "B", OPTS) is True
    assert grade("B", "B", "(b)", OPTS) is True
    assert grade("B", "B", "a cat sleeping", OPTS) is True
    assert grade("C", "C", "B", OPTS) is False
    # Unparsable counts as wrong, not as missing.
    assert grade("no idea", None, "B", OPTS) is False
    # choice=None: parsed from the response.
    assert grade("The answer is (b)", None, "B", OPTS) is True
    # No ground truth / unusable ground truth.
    assert grade("B", "B", None, OPTS) is None
    assert grade("B", "B", "  ", OPTS) is None
    assert grade("B", "B", "zebra", OPTS) is None


def test_grade_open_ended():
    assert grade("Red.", None, "red", None) is True
    assert grade("The ball is red", None, "red", []) is True
    assert grade("a red ball", None, "The red ball", None) is True
    assert grade("reddish", None, "red", None) is False  # whole words only
    assert grade("blue", None, "red", None) is False
    assert grade("", None, "red", None) is False
    assert grade("anything", None, None, None) is None


# Option texts for the property: words of >= 2 characters, so that no option is itself a bare letter
# or starts with a letter label (those are letters by design, e.g. an option literally named "(B)").
_word = st.text(alphabet=string.ascii_letters + string.digits, min_size=2, max_size=7)
_option = st.lists(_word, min_size=1, max_size=4).map(" ".join)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


@given(st.lists(_option, min_size=1, max_size=len(LETTERS)), st.data())
def test_property_letter_and_option_text(options, data):
    index = data.draw(st.integers(0, len(options) - 1))
    letter = LETTERS[index]
    assert parse_choice(f"({letter})", options) == letter
    assert parse_choice(f"({letter.lower()})", options) == letter
    normed = [_norm(o) for o in options]
    # Distinct and none contained (as whole words) in another.
    assume(
        all(f" {a} " not in f" {b} " for i, a in enumerate(normed) for j, b in enumerate(normed) if i != j)
    )
    assert parse_choice(options[index], options) == letter
    assume(all(f" {o} " not in " the answer is " for o in normed))
    assert parse_choice(f"The answer is {options[index]}.", options) == letter


@pytest.mark.parametrize(
    "response",
    [
        "A and B",  # was B: the leading "A " was read as the article
        "A, B",  # was A: a bare start letter
        "I think it's C, not B",
        "A or B",
        "(A) and (B)",  # was B: the last parenthesised letter
        "A) and B)",
        "A, B, C",
        "B or maybe C",
        "option A or option B",  # was B: the last answer phrase
        "The answer is A or B.",  # was A
        "A/B",
    ],
)
def test_parse_choice_several_options_named_is_ambiguous(response):
    # A reply naming several options is not silently graded as one of them (findings 4.4).
    assert parse_choice(response, OPTS) is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Both A and C are plausible, but C is better.", "C"),  # a letter named outside the list counts
        ("A and B. The answer is B.", "B"),
        ("The answer is B, not C.", "B"),
        ("Not A, the answer is C", "C"),
        ("B, not C", "B"),
        ("B, a cat sleeping", "B"),  # "a" is the article, not option A
        ("A. And B is wrong.", "A"),
        ("A. a dog running\nB. a cat sleeping", "A"),
        ("Answer: b", "B"),
    ],
)
def test_parse_choice_lists_do_not_swallow_clear_answers(response, expected):
    assert parse_choice(response, OPTS) == expected


def test_parse_choice_last_parenthesised_letter_wins():
    # Mutant M5a (the first "(X)" wins) survived the suite: models restate, then correct themselves.
    assert parse_choice("It shows (B) at first, but the right one is (C).", OPTS) == "C"
    assert parse_choice("At first I thought (A), on reflection (D).", OPTS) == "D"
