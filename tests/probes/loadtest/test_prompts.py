"""What a load test asks: the built-in set, synthetic prompts of a given length, and JSONL files."""

import pytest

from probes.loadtest.prompts import builtin, from_jsonl, synthetic


def test_the_builtin_set_has_distinct_user_prompts():
    prompts = builtin()
    assert len({p.messages[0]["content"] for p in prompts}) == len(prompts) >= 5
    assert all(p.messages[0]["role"] == "user" for p in prompts)


def test_synthetic_prompts_have_about_the_asked_input_length():
    prompts = synthetic(500, count=4)
    assert len(prompts) == 4
    assert len({p.messages[0]["content"] for p in prompts}) == 4
    assert all(495 <= p.estimated_tokens() <= 500 for p in prompts)


def test_a_jsonl_file_gives_prompts_or_message_lists_with_their_own_max_tokens():
    lines = ['{"prompt": "hello"}', "", '{"messages": [{"role": "system", "content": "be brief"}, '
             '{"role": "user", "content": "hi"}], "max_tokens": 7}']
    first, second = from_jsonl(lines)
    assert first.messages == ({"role": "user", "content": "hello"},)
    assert [m["role"] for m in second.messages] == ["system", "user"] and second.max_tokens == 7


@pytest.mark.parametrize("lines, says", [
    (["{not json"], "line 1"),
    (['{"prompt": "ok"}', '{"text": "no"}'], "line 2"),
    (['{"prompt": "ok", "max_tokens": 0}'], "max_tokens"),
    ([""], "no prompts"),
])
def test_a_bad_jsonl_file_is_refused_naming_the_line(lines, says):
    with pytest.raises(ValueError, match=says):
        from_jsonl(lines)
