"""Multiple-choice prompts, answer-letter extraction and grading.

The generic layout lists options as ``A. text`` and appends lmms-eval's default post-prompt. It is
lmms-eval's layout for EgoSchema only: other benchmarks differ (Video-MME, MVBench, NExT-QA, MLVU,
LongVideoBench), and `mlb answer --benchmark NAME` uses their exact layouts (`mlbcli.eval.benchmarks`).
Extraction tries formats in priority order; it reads more replies than lmms-eval's extractors (lower-case
letters, option text, answer phrases), so on verbose models accuracies are higher than lmms-eval's on the
same replies; on clean one-letter replies they agree.

Extraction priority in `parse_choice` (the first level that yields a valid letter wins):

1. the whole response is a letter: ``B``, ``(b)``, ``B.``, ``b)``;
2. the whole response is one option's text (case- and punctuation-insensitive);
3. a letter label at the start: ``(B) ...``, ``B. ...``, ``B) ...``, ``B: ...``, ``B ...``;
4. an answer phrase: ``Answer: B``, ``the answer is (b)``, ``Best option: (B``, ``option C``
   (the LAST such phrase counts, as in lmms-eval: models restate and correct themselves);
5. a parenthesised letter anywhere, ``... (C) ...`` (the last one counts);
6. option text contained in the response as whole words; the longest match wins and must be unique;
7. a lone capital letter anywhere (``I think it is C because...``), only if exactly one distinct
   valid letter appears; several different ones are ambiguous and give None.

Lists of several options (``A and B``, ``A, B``, ``(A) or (B)``, ``A/B``, ``option A or option B``)
are ambiguous: their letters count at no level, so ``A and B`` gives None rather than one of them,
while a letter named elsewhere still counts (``Both A and C are plausible, but C is better.`` is C).

Articles: "A" and "I" (either case) followed by a space and a lowercase word are read as English
words, not option letters: ``A dog is running`` is not option A (level 6 may still match the text
of an option), while ``A. a dog``, ``(A) dog``, ``A, because...`` and ``The answer is A because``
are option A. After an answer phrase only the lowercase forms are treated as articles
(``the answer is a dog`` is not A). Letters outside the number of options are never returned.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence

__all__ = ["LETTERS", "MC_POST_PROMPT", "answer_letter", "format_question", "grade", "parse_choice"]

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MC_POST_PROMPT = "Answer with the option's letter from the given choices directly."

# Option labels a dataset may already carry ("A. dog", "(A) dog", "A) dog", "A: dog").
_LABEL = re.compile(r"^\s*(?:\(\s*([A-Za-z])\s*\)|([A-Za-z])\s*[.):])\s*")
# A whole response that is just a letter, possibly wrapped: "B", "(b)", "B.", "b)", "[C]".
_WHOLE_LETTER = re.compile(r"^[\s(\[]*([A-Za-z])[\s)\].:]*$")
# Letter at the very start, followed by a label delimiter, a separator, or the end.
_START_LABEL = re.compile(r"^\(\s*([A-Za-z])\s*\)|^([A-Za-z])\s*[.):](?![A-Za-z])")
_START_BARE = re.compile(r"^([A-Za-z])(?=[\s,;!?\-]|$)")
_ANSWER_PHRASE = re.compile(
    r"(?:\b(?:answer|option|choice)\b|答案)"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be|is\s+option|is\s+choice))?"
    r"\s*[:：\-]?\s*"
    r"(\()?\s*([A-Za-z])(?![A-Za-z0-9'’])",
    re.IGNORECASE,
)
_PAREN_LETTER = re.compile(r"\(\s*([A-Za-z])\s*\)")
# A letter standing alone as an option mention: "B" or "(B)", not part of a word ("Bob", "it's").
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z0-9'’])(?:\(\s*([A-Za-z])\s*\)|([A-Za-z]))(?![A-Za-z0-9'’])")
# What joins two letters into a list of options: "A and B", "A, B", "A / B", "A or maybe B",
# "option A or option B". Plain whitespace ("A B") or other words ("B, not C") do not.
_LIST_JOINER = re.compile(
    r"\s*\)?\s*(?:[,/&+;]\s*)?(?:(?:and|or|nor|vs\.?|versus)\s+)?(?:(?:maybe|perhaps|possibly|also)\s+)?"
    r"(?:(?:option|choice)\s+)?",
    re.IGNORECASE,
)
_JOINING = re.compile(r"[,/&+;]|\b(?:and|or|nor|vs|versus)\b", re.IGNORECASE)
_LONE_CAPITAL = re.compile(r"(?<![A-Za-z0-9'’])([A-Z])(?![A-Za-z0-9'’])")
# "a dog", "I think": a letter used as an English word (followed by a space and a lowercase word).
_WORD_FOLLOWS = re.compile(r"^[ \t]+[a-z]")
_ARTICLES = {"a", "an", "the"}
_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation + "“”‘’«»。，、：；？！"})


def _strip_label(option: str, letter: str) -> str:
    """Drop a leading label equal to `letter` ("A. dog" at position A -> "dog"); keep anything else.

    Only the option's own letter is stripped: "A dog" (no delimiter) or "C. dog" at position A are
    content, not labels we put there.
    """
    match = _LABEL.match(option)
    if match and (match.group(1) or match.group(2)).upper() == letter:
        rest = option[match.end() :]
        if rest.strip():
            return rest
    return option


def format_question(question: str, options: Sequence[str] | None, post_prompt: str = MC_POST_PROMPT) -> str:
    """The prompt text: the question alone, or the question, ``A. option`` lines and the post-prompt.

    `post_prompt` is the model family's evaluation convention (`ModelAdapter.mc_post_prompt`).
    """
    if not options:
        return question
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options are supported, got {len(options)}")
    lines = [
        f"{letter}. {_strip_label(str(opt), letter).strip()}"
        for letter, opt in zip(LETTERS[: len(options)], options, strict=True)
    ]
    return question.rstrip("\n") + "\n" + "\n".join(lines) + "\n" + post_prompt


def _clean(response: str) -> str:
    # Markdown emphasis and code ticks wrap answers ("**B**", "`B`") without changing them.
    text = response.replace("**", "").replace("__", "").replace("`", "")
    return text.strip().strip("\"'“”‘’").strip()


def _norm_text(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form used for option-text matching."""
    return " ".join(text.casefold().translate(_PUNCT_TABLE).split())


def _is_word_use(letter: str, rest: str, *, lowercase_only: bool = False) -> bool:
    """True when `letter` is the article "a" / pronoun "I" rather than an option letter."""
    candidates = {"a", "i"} if lowercase_only else {"a", "i", "A", "I"}
    return letter in candidates and bool(_WORD_FOLLOWS.match(rest))


def _option_texts(options: Sequence[str]) -> list[str]:
    # Options beyond Z have no letter, so they can never be picked: zip truncates on purpose.
    return [_norm_text(_strip_label(str(opt), letter)) for letter, opt in zip(LETTERS, options, strict=False)]


def _match_option_text(response: str, options: Sequence[str], *, exact: bool) -> str | None:
    texts = _option_texts(options)
    target = _norm_text(response)
    if not target:
        return None
    if exact:
        hits = [i for i, text in enumerate(texts) if text and text == target]
        return LETTERS[hits[0]] if len(hits) == 1 else None
    padded = f" {target} "
    hits = [i for i, text in enumerate(texts) if text and f" {text} " in padded]
    if not hits:
        return None
    longest = max(len(texts[i]) for i in hits)
    best = {texts[i] for i in hits if len(texts[i]) == longest}
    winners = [i for i in hits if texts[i] in best]
    # Two options with the same text (or two equally long matches) cannot be told apart.
    return LETTERS[winners[0]] if len(winners) == 1 else None


def _listed_letters(text: str, valid: set[str]) -> set[int]:
    """Positions of the letters that belong to a list of several options ("A and B", "(A), (B)").

    Two consecutive letter mentions form a list when only a joiner (`_LIST_JOINER`) separates them,
    both are option letters and they differ. The second must not be the article/pronoun ("B, a dog").
    """
    tokens = [
        (m.start(1) if m.group(1) else m.start(2), (m.group(1) or m.group(2)), m.start(), m.end())
        for m in _LETTER_TOKEN.finditer(text)
    ]
    listed: set[int] = set()
    for (pos_a, a, _, end_a), (pos_b, b, start_b, end_b) in zip(tokens, tokens[1:], strict=False):
        between = text[end_a:start_b]
        if (
            a.upper() in valid
            and b.upper() in valid
            and a.upper() != b.upper()
            and _JOINING.search(between)
            and _LIST_JOINER.fullmatch(between)
            and not (text[start_b] != "(" and _is_word_use(b, text[end_b:]))
        ):
            listed.update((pos_a, pos_b))
    return listed


def parse_choice(response: str, options: Sequence[str]) -> str | None:
    """The option letter a free-form response picks, or None if it cannot be told (see module doc)."""
    if not options or not response:
        return None
    valid = set(LETTERS[: min(len(options), len(LETTERS))])
    text = _clean(response)
    if not text:
        return None

    def ok(letter: str | None) -> str | None:
        return letter.upper() if letter and letter.upper() in valid else None

    # Letters inside a list of several options ("A and B") pick none of them, at every level.
    listed = _listed_letters(text, valid)

    # 1. the whole response is a letter.
    if (m := _WHOLE_LETTER.match(text)) and (letter := ok(m.group(1))):
        return letter
    # 2. the whole response is an option's text ("Vitamin C" must not become letter C).
    if letter := _match_option_text(text, options, exact=True):
        return letter
    # 3. a label at the start.
    if (
        (m := _START_LABEL.match(text))
        and (letter := ok(m.group(1) or m.group(2)))
        and (m.start(1) if m.group(1) else m.start(2)) not in listed
    ):
        return letter
    if (
        (m := _START_BARE.match(text))
        and not _is_word_use(m.group(1), text[m.end() :])
        and (letter := ok(m.group(1)))
        and m.start(1) not in listed
    ):
        return letter
    # 4. answer phrases; the last one counts.
    found = None
    for m in _ANSWER_PHRASE.finditer(text):
        raw = m.group(2)
        if not m.group(1) and _is_word_use(raw, text[m.end() :], lowercase_only=True):
            continue
        if m.start(2) in listed:  # "the answer is A or B": no single answer
            continue
        found = ok(raw) or found
    if found:
        return found
    # 5. a parenthesised letter anywhere; the last one counts.
    for m in _PAREN_LETTER.finditer(text):
        if m.start(1) not in listed:
            found = ok(m.group(1)) or found
    if found:
        return found
    # 6. option text inside the response.
    if letter := _match_option_text(text, options, exact=False):
        return letter
    # 7. a unique lone capital letter.
    lone = {
        m.group(1)
        for m in _LONE_CAPITAL.finditer(text)
        if ok(m.group(1)) and m.start(1) not in listed and not _is_word_use(m.group(1), text[m.end() :])
    }
    if len(lone) == 1:
        return lone.pop()
    if len(lone) > 1 or listed:
        logger.debug("ambiguous multiple-choice response %r", response)
    return None


def answer_letter(answer: str, options: Sequence[str]) -> str | None:
    """The letter a ground-truth answer designates: a letter ("B", "b", "(B)") or an option's text."""
    text = str(answer).strip()
    valid = LETTERS[: len(options)]
    if (m := _WHOLE_LETTER.match(text)) and m.group(1).upper() in valid:
        return m.group(1).upper()
    # "B. running": a labelled ground truth names its letter.
    if (m := _LABEL.match(text)) and (label := (m.group(1) or m.group(2)).upper()) in valid:
        return label
    texts = _option_texts(options)
    for normalize in (_norm_text, _norm_open):
        target = normalize(text)
        hits = [i for i, opt in enumerate(texts) if target and normalize(opt) == target]
        if len(hits) == 1:
            return LETTERS[hits[0]]
    return None


def _norm_open(text: str) -> str:
    """SQuAD-style normalisation for open-ended answers: lowercase, no punctuation, no articles."""
    return " ".join(w for w in _norm_text(text).split() if w not in _ARTICLES)


def grade(
    response: str, choice: str | None, answer: str | None, options: Sequence[str] | None
) -> bool | None:
    """Whether `response` is correct; None when there is no ground truth (or it cannot be interpreted).

    Multiple choice compares letters: `choice` is the already-parsed letter (parsed from `response`
    when None is passed), the ground truth may be a letter or an option's text. Open-ended questions
    are right when the normalised response equals the normalised answer or contains it as whole words.
    """
    if answer is None or not str(answer).strip():
        return None
    if options:
        truth = answer_letter(str(answer), options)
        if truth is None:
            logger.warning("ground truth %r matches no option letter or option text; not graded", answer)
            return None
        picked = choice.strip().strip("()").upper() if choice else parse_choice(response or "", options)
        return picked == truth
    got = _norm_open(response or "")
    want = _norm_open(str(answer))
    if not want:
        # The answer was only punctuation/articles: nothing but an exact match is meaningful.
        return _norm_text(response or "") == _norm_text(str(answer))
    return got == want or f" {want} " in f" {got} "
