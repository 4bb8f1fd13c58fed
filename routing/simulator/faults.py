"""What each fault does to a response, as a script the app plays out.

A script is a list whose items are bytes (send them), floats (pause that many
seconds) or CUT (drop the connection). Faults that strike before any header
(reset_before_headers, silence) never get this far.
"""

import orjson

from .bodies import DONE_EVENT, error_payload, sse
from .personalities import Fault

CUT = object()
MALFORMED_EVENT = b'data: {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "tok\n\n'


def _upstream_error():
    return error_payload("The simulated model failed after accepting the request.", "server_error", "upstream_error")


def _paced(events, pace):
    """Put a pause before each event when the personality streams at a set pace."""
    if not pace:
        return list(events)
    return [item for event in events for item in (pace, event)]


def stream_script(completion, fault=None, delay=0.0, pace=0.0, after=None):
    """Return the SSE script for completion under fault (None for a healthy stream).

    Mid-stream faults strike after `after` tokens (None: half of them).
    """
    if fault == Fault.ERROR_FIRST_EVENT:
        return [sse(_upstream_error())]
    tokens = completion.token_events()
    half = len(tokens) // 2 if after is None else min(after, len(tokens))
    head = [completion.role_event(), *_paced(tokens[:half], pace)]
    tail = _paced(tokens[half:], pace)
    closing = completion.closing_events()
    if fault == Fault.CUT_MIDWAY:
        return coalesce([*head, CUT])
    if fault == Fault.ERROR_MIDWAY:
        return coalesce([*head, sse(_upstream_error())])
    if fault == Fault.NO_DONE:
        return coalesce([*head, *tail, *closing])
    first = [delay] if fault == Fault.SLOW_FIRST_TOKEN else []
    middle = []
    if fault == Fault.STALL:
        middle = [delay]
    elif fault == Fault.MALFORMED_CHUNK:
        middle = [MALFORMED_EVENT]
    return coalesce([*first, *head, *middle, *tail, *closing, DONE_EVENT])


def body_script(completion, fault, delay=0.0):
    """Return the script for a non-streaming response under fault.

    Without SSE there is no [DONE] to leave out, so no_done answers normally.
    """
    body = completion.body()
    half = len(body) // 2
    scripts = {
        Fault.CUT_MIDWAY: [body[:half], CUT],
        Fault.STALL: [body[:half], delay, body[half:]],
        Fault.MALFORMED_CHUNK: [body[:half]],
        Fault.SLOW_FIRST_TOKEN: [delay, body],
        Fault.ERROR_FIRST_EVENT: [orjson.dumps(_upstream_error())],
        Fault.ERROR_MIDWAY: [orjson.dumps(_upstream_error())],
    }
    return scripts.get(fault, [body])


def coalesce(script):
    """Join runs of adjacent bytes so an unpaced stream goes out in one write."""
    joined, run = [], []
    for item in script:
        if type(item) is bytes:
            run.append(item)
            continue
        if run:
            joined.append(b"".join(run))
            run = []
        joined.append(item)
    if run:
        joined.append(b"".join(run))
    return joined
