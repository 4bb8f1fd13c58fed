"""Pure helpers for server-sent events as OpenAI streams them.

An event is the bytes up to a blank line; its payload is the `data:` lines
joined. The gateway only ever forwards whole events, so a stream that breaks
never leaves half an event at the client.
"""

import math

import orjson

from routing.outcomes import error_message

DONE = b"[DONE]"


class Malformed(ValueError):
    """An event's data is neither JSON nor [DONE]."""


def split_events(buffer):
    """Return (complete events, remaining bytes) from `buffer`.

    Events are returned with their blank-line terminator, ready to forward.
    CRLF framing is accepted.
    """
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
    end = buffer.rfind(b"\n\n")
    if end < 0:
        return [], buffer
    end += 2
    if buffer.find(b"\n\n") + 2 == end:  # the usual case: one event per read
        head = buffer[:end] if end < len(buffer) else buffer
        return ([head] if head.strip(b"\n") else []), buffer[end:]
    return [e + b"\n\n" for e in buffer[: end - 2].split(b"\n\n") if e.strip(b"\n")], buffer[end:]


def event(payload):
    """Return one event carrying `payload` as JSON, ready to forward."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def event_data(event):
    """Return the data payload of one event (b"" for comments and data-less events)."""
    if event.startswith(b"data: ") and event.count(b"\n") == 2:
        return event[6:-2]  # the common one-line event, without a split
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines)


def parse(data):
    """Return the event's JSON object, DONE for [DONE], or None for an empty payload.

    Raises Malformed when the payload is not JSON.
    """
    if not data:
        return None
    if data == DONE:
        return DONE
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Malformed(f"upstream sent an event that is not JSON: {data[:80]!r}") from None


def error_of(payload):
    """Return the upstream's error message when the event is an error, else None."""
    if type(payload) is dict and "error" in payload:
        return error_message(payload)
    return None


def has_content(payload):
    """Return True when a chunk carries generated content (text, tool calls or refusal)."""
    if type(payload) is not dict:
        return False
    for choice in payload.get("choices") or ():
        delta = choice.get("delta") if type(choice) is dict else None
        if delta and (delta.get("content") or delta.get("tool_calls") or delta.get("refusal")):
            return True
    return False


def has_finish(payload):
    """Return True when a chunk ends a choice (it carries a finish_reason)."""
    if type(payload) is not dict:
        return False
    return any(type(choice) is dict and choice.get("finish_reason") for choice in payload.get("choices") or ())


def usage_of(payload):
    """Return (prompt_tokens, completion_tokens) from a chunk or body with usage, else None.

    A missing or null count is 0. Raises Malformed when usage is not an object or a count in it is not a
    non-negative number: tokens and cost would be made up, so the answer counts as malformed.
    """
    usage = payload.get("usage") if type(payload) is dict else None
    if usage is None:
        return None
    if type(usage) is not dict:
        raise Malformed(f"the upstream's usage is not an object but a {type(usage).__name__}")
    return _token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens")


def _token_count(usage, name):
    value = usage.get(name)
    if value is None:
        return 0
    # bool is an int to Python, and NaN or infinity would poison every sum they join.
    if type(value) not in (int, float) or not 0 <= value < math.inf:
        # Its type, not its text: an upstream's text may echo the key it was sent.
        raise Malformed(f"the upstream's usage.{name} is not a token count but a {_kind(value)}")
    return int(value)


def _kind(value):
    return "negative number" if type(value) in (int, float) and value < 0 else type(value).__name__


def is_role_only(payload):
    """Return True for a chunk that only opens the assistant's turn (no content, finish or usage)."""
    return (type(payload) is dict and bool(payload.get("choices")) and payload.get("usage") is None
            and not has_content(payload) and not has_finish(payload))


def is_usage_only(payload):
    """Return True for the trailing usage chunk (no choices), sent when include_usage was asked."""
    return type(payload) is dict and not payload.get("choices") and payload.get("usage") is not None
