"""User-written regular expressions run on RE2: linear time, refused at save when RE2 cannot run them."""

import time

import pytest

from probes.measure import answer_problem
from routing.patterns import MAX_PATTERN, PatternInvalid, check_pattern, compile_pattern

CATASTROPHIC = "(a+)+$"  # Python's re takes seconds (and holds the GIL) on 24 a's and a mismatch
LABEL = "a" * 24 + "!"


def test_a_nested_quantifier_on_a_25_character_text_returns_at_once():
    started = time.perf_counter()
    assert compile_pattern(CATASTROPHIC).fullmatch(LABEL) is None
    assert compile_pattern(r"(x+x+)+y").search("x" * 5000) is None
    assert time.perf_counter() - started < 0.1


def test_a_probe_answer_is_checked_against_a_catastrophic_pattern_in_linear_time():
    started = time.perf_counter()
    assert "does not match" in answer_problem(LABEL, "^" + CATASTROPHIC)
    assert answer_problem("OK, fine", "^OK") == ""
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize(("pattern", "words"), [
    ("(unclosed", "missing )"), (r"(a)\1", "invalid escape"), ("(?=a)b", "invalid perl operator"),
    ("x" * (MAX_PATTERN + 1), f"at most {MAX_PATTERN} characters"), ("(a{1000}){1000}", "RE2"),
])
def test_patterns_re2_cannot_run_are_refused_saying_why(pattern, words):
    with pytest.raises(PatternInvalid, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_pattern(pattern)


def test_a_pattern_saved_before_re2_that_it_cannot_run_fails_the_probe_check_with_a_reason():
    assert "cannot be used" in answer_problem("OK", r"(?<=O)K")
