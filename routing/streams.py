"""What a streamed answer means: the one reader of the gateway, the probes and the load tests.

`routing.sse` frames and parses events; a `StreamReader` is fed each event's
data in order and tells how the whole answer went: whole (ok), truncated,
malformed, an error event, or whole but stopped by a content filter, with
the timings and usage it saw. Each caller keeps its transport (aiohttp in the
gateway and the load tests, httpx in the probes) and asks the reader the
same questions, so one stream means one thing everywhere.

The rules, decided once:

- The answer is whole once its `finish_reason` arrived (and the usage chunk,
  when the caller asked for usage), or the upstream sent `[DONE]`. How the
  connection ends after that does not matter: `[DONE]` only says "no more
  events", and several OpenAI-compatible servers close after the finish chunk
  without it. The client has the whole answer, so it is ok (the gateway adds
  the `[DONE]` its clients wait for). Calling that a truncation would mark a
  working deployment down for a framing habit.
- A stream that ends (cleanly or not) before either is truncated: the
  answer stops mid-way and nobody can tell how much is missing. A read
  timeout stays a timeout.
- An `error` event is the upstream's own failure (server_error), wherever it
  comes.
- An event that is not a JSON object is malformed. Before the answer started
  (no content, finish or `[DONE]` yet) it fails the stream: nothing worth
  keeping came. After that a few are skipped and counted (`max_malformed`,
  WEATHERVANE_GATEWAY_MAX_MALFORMED_EVENTS); one more fails it.
- A `finish_reason` of `content_filter` is a whole answer the provider chose
  to stop: ok (the deployment worked), flagged `filtered`.

`take` is O(1) per event for the usual one-choice chunk and allocates nothing
unless the caller asked for every content chunk's arrival time (`timed`).
"""

from time import perf_counter

from django.conf import settings

from routing import sse
from routing.outcomes import Outcome

SKIPPED = object()  # take()'s answer for a malformed event that was skipped (not to be relayed)
CONTENT_FILTER = "content_filter"


def default_max_malformed():
    """Return how many malformed events a stream may carry once started (the one setting for every reader)."""
    return settings.GATEWAY_MAX_MALFORMED_EVENTS


class StreamReader:
    """Folds the events of one streamed chat completion; `problem` is (outcome, message) once it failed.

    Times are perf_counter() seconds; `chunk_times` (with `timed=True`) holds
    every content chunk's arrival.
    """

    __slots__ = ("needs_usage", "max_malformed", "malformed", "started", "done", "finish_reason", "usage",
                 "content_chunks", "first_content_at", "chunk_times", "problem")

    def __init__(self, needs_usage=False, max_malformed=None, timed=False):
        self.needs_usage = needs_usage
        self.max_malformed = default_max_malformed() if max_malformed is None else max_malformed
        self.malformed = self.content_chunks = 0
        self.started = self.done = False
        self.finish_reason = ""
        self.usage = self.first_content_at = self.problem = None
        self.chunk_times = [] if timed else None

    def take(self, data):
        """Fold one event's data; return its payload (a dict), sse.DONE, None (no data) or SKIPPED.

        After it set `problem`, the stream is over: read no further.
        """
        try:
            payload = sse.parse(data)
        except sse.Malformed as bad:
            return self._malformed(str(bad))
        if type(payload) is dict:
            if "error" in payload:
                self.problem = (Outcome.SERVER_ERROR, f"the upstream sent an error event: {sse.error_of(payload)}")
            else:
                self._chunk(payload)
        elif payload is sse.DONE:
            self.done = self.started = True
        elif payload is not None:
            return self._malformed(f"upstream sent an event that is not a JSON object: {data[:80]!r}")
        return payload

    def _chunk(self, payload):
        choices = payload.get("choices")
        if type(choices) is list:
            for choice in choices:
                if type(choice) is dict:
                    self._choice(choice)
        if payload.get("usage") is not None:
            try:
                self.usage = sse.usage_of(payload) or self.usage
            except sse.Malformed as bad:  # its tokens and cost cannot be known: the answer is malformed
                self.problem = (Outcome.MALFORMED, str(bad))

    def _choice(self, choice):
        delta = choice.get("delta")
        if type(delta) is dict and (delta.get("content") or delta.get("tool_calls") or delta.get("refusal")):
            self.content_chunks += 1
            self.started = True
            if self.first_content_at is None:
                self.first_content_at = perf_counter()
                if self.chunk_times is not None:
                    self.chunk_times.append(self.first_content_at)
            elif self.chunk_times is not None:  # the gateway reads no clock past the first token
                self.chunk_times.append(perf_counter())
        reason = choice.get("finish_reason")
        if reason:
            self.finish_reason = str(reason)[:30]
            self.started = True

    def _malformed(self, message):
        self.malformed += 1
        if not self.started:
            self.problem = (Outcome.MALFORMED, f"the stream started with a malformed event: {message}")
        elif self.malformed > self.max_malformed:
            self.problem = (Outcome.MALFORMED, f"{self.malformed} malformed events; the last: {message}")
        return SKIPPED

    @property
    def whole(self):
        """True once the answer is complete: [DONE], or its finish_reason (and the usage asked for)."""
        return self.done or (bool(self.finish_reason) and (self.usage is not None or not self.needs_usage))

    @property
    def filtered(self):
        """True when a content filter ended the answer (finish_reason content_filter)."""
        return self.finish_reason == CONTENT_FILTER

    def end(self):
        """Return (outcome, message) of a stream whose body ended cleanly here."""
        if self.problem is not None:
            return self.problem
        if self.whole:
            return Outcome.OK, ""
        missing = "its usage" if self.finish_reason else "a finish_reason or [DONE]"
        return Outcome.TRUNCATED, f"the upstream ended the stream without {missing}"

    def broke(self, outcome, message):
        """Return (outcome, message) of a stream whose connection failed here with (outcome, message).

        A whole answer stays ok; a connection lost after the headers is a truncation; a timeout stays one.
        """
        if self.problem is not None:
            return self.problem
        if self.whole:
            return Outcome.OK, ""
        if outcome == Outcome.CONNECT_ERROR:
            return Outcome.TRUNCATED, f"the stream broke off: {message}"
        return outcome, message

