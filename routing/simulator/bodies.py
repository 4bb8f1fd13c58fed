"""Pure builders for the OpenAI-shaped bytes the simulator sends."""

import base64
import functools
import re
import struct
import zlib

import orjson

EMBEDDING_DIM = 8
DONE_EVENT = b"data: [DONE]\n\n"
_WORDS = re.compile(r"\S+\s*|\s+")


def error_payload(message, type_, code):
    """Return the OpenAI error shape as a dict."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def error_body(message, type_, code):
    """Return the OpenAI error shape as JSON bytes."""
    return orjson.dumps(error_payload(message, type_, code))


def sse(payload):
    """Return one server-sent event carrying payload as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@functools.lru_cache(maxsize=256)
def token_pieces(count):
    """Return the pieces "tok0 ", "tok1 ", ... so a client can spot gaps and repeats."""
    return tuple(f"tok{i} " for i in range(count))


def answer_pieces(answer):
    """Split a fixed answer into word-sized pieces that join back to it exactly."""
    return tuple(_WORDS.findall(answer))


def estimate_prompt_tokens(messages):
    """Return about one token per four characters of text in messages (at least 1)."""
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return max(1, (chars + 3) // 4)


class Completion:
    """One chat completion, renderable as a JSON body or as SSE events."""

    __slots__ = ("id", "created", "model", "pieces", "prompt_tokens", "include_usage")

    def __init__(self, id, created, model, pieces, prompt_tokens, include_usage=False):
        self.id = id
        self.created = created
        self.model = model
        self.pieces = pieces
        self.prompt_tokens = prompt_tokens
        self.include_usage = include_usage

    def usage(self):
        completion_tokens = len(self.pieces)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }

    def body(self):
        """Return the non-streaming `chat.completion` JSON as bytes."""
        return orjson.dumps({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "".join(self.pieces)},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": self.usage(),
        })

    def chunk(self, choices, usage=None):
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        # OpenAI adds `usage: null` to every chunk once the client asked for usage.
        if self.include_usage:
            payload["usage"] = usage
        return sse(payload)

    def role_event(self):
        return self.chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])

    def token_events(self):
        """Return one event per piece, in order."""
        # Token chunks differ only in their content, so encode one around a
        # marker and splice each piece in: a third of the cost on long streams.
        # rsplit because the content comes after id and model, which the client chose.
        template = self.chunk([{"index": 0, "delta": {"content": "\x01"}, "finish_reason": None}])
        head, tail = template.rsplit(b'"\\u0001"', 1)
        return [head + orjson.dumps(piece) + tail for piece in self.pieces]

    def closing_events(self):
        """Return the finish_reason event, then the usage event if asked for (no [DONE])."""
        events = [self.chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])]
        if self.include_usage:
            events.append(self.chunk([], self.usage()))
        return events


def embedding_inputs(raw):
    """Return the request's `input` as a list of texts, or None when it is not a string or a list.

    Token-id inputs are embedded by their printed form; only their identity matters here.
    """
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(item, int) for item in raw):
        return [str(raw)]
    return [item if isinstance(item, str) else str(item) for item in raw]


def embedding_vector(text):
    """Return a fixed, text-dependent unit-ish vector of EMBEDDING_DIM floats."""
    seed = zlib.crc32(text.encode())
    return [((seed >> (3 * i)) & 0xFF) / 255 - 0.5 for i in range(EMBEDDING_DIM)]


def embeddings_body(model, inputs, encoding_format):
    """Return the embeddings list JSON as bytes; base64 packs little-endian float32 as the SDK expects."""
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text)
        if encoding_format == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = max(1, sum(len(text) for text in inputs) // 4)
    return orjson.dumps({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
