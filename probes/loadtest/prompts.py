"""What a load test asks: a built-in set, a JSONL file, or synthetic prompts of a given length."""

import json
from dataclasses import dataclass

from django.db import models


class PromptSource(models.TextChoices):
    BUILTIN = "builtin", "Built-in set"
    JSONL = "jsonl", "JSONL file"
    SYNTHETIC = "synthetic", "Synthetic (given input length)"


BUILTIN = (
    "Summarise the plot of Hamlet in three sentences.",
    "Write a haiku about a weathervane in a storm.",
    "Explain what a canary deployment is to a new engineer.",
    "List five ways to reduce the latency of an HTTP API.",
    "Translate 'the wind has changed' into French, German and Spanish.",
    "What is the difference between p50 and p99 latency?",
    "Give three tips for writing a good commit message.",
    "Describe a load test in one paragraph.",
)
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
CHARS_PER_TOKEN = 4  # the usual rule of thumb; the simulator counts the same way
MAX_JSONL_PROMPTS = 10_000


@dataclass(frozen=True)
class Prompt:
    messages: tuple
    max_tokens: int | None = None

    def estimated_tokens(self):
        """Return about one token per four characters (at least 1)."""
        chars = sum(len(m.get("content") or "") for m in self.messages)
        return max(1, -(-chars // CHARS_PER_TOKEN))


def _user(text):
    return ({"role": "user", "content": text},)


def builtin():
    return [Prompt(_user(text)) for text in BUILTIN]


def synthetic(input_tokens, count=8):
    """Return `count` distinct prompts of about `input_tokens` tokens each."""
    prompts = []
    for n in range(count):
        words = []
        while sum(len(w) + 1 for w in words) < input_tokens * CHARS_PER_TOKEN:
            words.append(WORDS[(n + len(words)) % len(WORDS)])
        prompts.append(Prompt(_user(" ".join(words)[: input_tokens * CHARS_PER_TOKEN])))
    return prompts


def from_jsonl(lines):
    """Return prompts from JSONL lines: {"prompt": text} or {"messages": [...]}, optional "max_tokens".

    Raises ValueError naming the first bad line.
    """
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            prompts.append(_prompt_of(json.loads(line)))
        except (ValueError, TypeError, KeyError) as problem:
            raise ValueError(f"line {number}: {problem}") from None
        if len(prompts) > MAX_JSONL_PROMPTS:
            raise ValueError(f"more than {MAX_JSONL_PROMPTS} prompts")
    if not prompts:
        raise ValueError("no prompts in the file")
    return prompts


def _prompt_of(row):
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    max_tokens = row.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise ValueError("max_tokens must be a positive integer")
    if isinstance(row.get("prompt"), str) and row["prompt"]:
        return Prompt(_user(row["prompt"]), max_tokens)
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError('expected "prompt" (text) or "messages" (a list)')
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError("each message needs a text content")
    return Prompt(tuple({"role": str(m.get("role") or "user"), "content": m["content"]} for m in messages), max_tokens)
