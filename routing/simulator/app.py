"""The simulator as a raw ASGI application.

No framework on purpose: it is the upstream in throughput benchmarks, so it
must stay cheaper per request than the gateway it stands behind.
"""

import dataclasses
import itertools
import math
import random
import time
from collections import deque

import orjson

from . import control
from .bodies import Completion, answer_pieces, embedding_inputs, embeddings_body, estimate_prompt_tokens, token_pieces
from .exchange import JSON_HEADERS, SSE_HEADERS, Attempt, Exchange, bearer_key, mask_key, read_json
from .faults import body_script, stream_script
from .personalities import PERSONALITIES, Fault, Personality, Reply, personality_from

SILENCE_LIMIT_S = 300.0


class Simulator:
    """An OpenAI-compatible upstream; each model behaves as its Personality says.

    models maps extra model names to anything personality_from() takes;
    built-in PERSONALITIES are served under their own names. keys=None accepts
    any non-empty bearer key, a set accepts only those; `keys` may be replaced
    (a frozenset) while serving, to rehearse a key revoked and then restored.
    clock (time.monotonic by default) times each model's schedule from when the
    model was set.
    """

    def __init__(self, models=None, keys=None, seed=None, log_size=100_000, clock=time.monotonic):
        self.clock = clock
        self._set_at = {}
        self._served = {}  # model -> chat requests since it was set (fail_first)
        self.models = {}
        for name, value in (models or {}).items():
            self.set_model(name, personality_from(value))
        self.keys = None if keys is None else frozenset(keys)
        self.random = random.Random(seed)
        self.held = set()
        self._log = deque(maxlen=log_size)
        self._next_5xx = {}
        self._ids = itertools.count(1)
        self._paths = {
            "/v1/chat/completions": self._chat_completions,
            "/v1/embeddings": self._embeddings,
            "/v1/models": self._list_models,
        }

    def personality(self, model):
        """Return the Personality serving model now (its schedule applied), or None when it is unknown."""
        personality = self.models.get(model) or PERSONALITIES.get(model)
        if personality is None or not personality.schedule:
            return personality
        return personality.at(self.clock() - self._set_at.get(model, 0.0))

    def set_model(self, model, personality):
        """Serve model as personality from now on; its schedule starts now."""
        self.models[model] = personality
        self._set_at[model] = self.clock()
        self._served.pop(model, None)

    def model_names(self):
        return list(dict.fromkeys([*self.models, *PERSONALITIES]))

    def configure(self, model, **fields):
        """Change (or create) model's personality from now on and return it.

        Raises TypeError for an unknown field and ValueError for a bad value.
        """
        current = self.models.get(model) or PERSONALITIES.get(model) or Personality()
        personality = dataclasses.replace(current, **fields)
        self.set_model(model, personality)
        return personality

    def attempts(self, model=None):
        """Return the logged attempts, oldest first, optionally only those for model."""
        return [attempt for attempt in list(self._log) if model is None or attempt.model == model]

    def reset(self):
        self._log.clear()

    def release(self):
        """Wake every request held by silence, stall, pacing or latency; call it on the server's loop."""
        for waiter in list(self.held):
            if not waiter.done():
                waiter.set_result(None)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            handler = self._paths.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
            else:
                await control.dispatch(self, scope, receive, send)
        elif scope["type"] == "lifespan":
            await control.lifespan(receive, send)

    def _open(self, scope, receive, send):
        key = bearer_key(scope["headers"])
        attempt = Attempt(time.monotonic(), time.time(), scope["path"], mask_key(key))
        self._log.append(attempt)
        return Exchange(self.held, receive, send, attempt), key

    def _key_ok(self, key):
        return key is not None and (self.keys is None or key in self.keys)

    async def _admit(self, scope, receive, send):
        """Log the attempt and answer method, auth, JSON and model problems.

        Returns (exchange, request, personality), or None when an error was already sent.
        """
        exchange, key = self._open(scope, receive, send)
        if scope["method"] != "POST":
            await exchange.error(405, Reply.BAD_REQUEST, "Use POST.", "method_not_allowed")
            return None
        request = await read_json(receive)
        if isinstance(request, dict):
            exchange.attempt.model = request.get("model") if isinstance(request.get("model"), str) else None
            exchange.attempt.stream = request.get("stream") is True
        if not self._key_ok(key):
            await _unauthorized(exchange, key)
            return None
        if exchange.attempt.model is None:
            message = "The body must be a JSON object naming a model."
            await exchange.error(400, Reply.BAD_REQUEST, message, "invalid_json")
            return None
        personality = self.personality(exchange.attempt.model)
        if personality is None:
            message = f"The model `{exchange.attempt.model}` does not exist."
            await exchange.error(404, Reply.NOT_FOUND, message, "model_not_found")
            return None
        return exchange, request, personality

    async def _serve_model(self, exchange, personality):
        """Wait out the sampled latency, then maybe answer 429 or 5xx.

        Returns True when the caller should go on and answer the request.
        """
        latency = personality.sample_latency_s(self.random)
        if latency and not await exchange.pause(latency):
            await exchange.drop()
            return False
        model = exchange.attempt.model
        served = self._served[model] = self._served.get(model, 0) + 1
        if served <= personality.fail_first:
            await exchange.error(500, Reply.ERROR_500, "Simulated server error.", "internal_error", "server_error")
            return False
        roll = self.random.random()
        if roll < personality.rate_429:
            await self._rate_limited(exchange, personality.retry_after_s)
            return False
        if roll < personality.rate_429 + personality.error_rate:
            if personality.overload_retry_after_s is not None:
                await self._overloaded(exchange, personality.overload_retry_after_s)
            else:
                await self._server_error(exchange, personality.error_status)
            return False
        return True

    async def _rate_limited(self, exchange, retry_after_s):
        # Retry-After only takes whole seconds; the SDKs also read the precise -ms header.
        headers = () if retry_after_s is None else (
            (b"retry-after", str(math.ceil(retry_after_s)).encode()),
            (b"retry-after-ms", str(int(retry_after_s * 1000)).encode()),
        )
        message = "Simulated rate limit."
        await exchange.error(429, Reply.RATE_LIMITED, message, "rate_limit_exceeded", "requests", headers)

    async def _overloaded(self, exchange, retry_after_s):
        headers = ((b"retry-after", str(math.ceil(retry_after_s)).encode()),)
        await exchange.error(503, Reply.ERROR_503, "Simulated overload.", "overloaded", "server_error", headers)

    async def _server_error(self, exchange, status=None):
        # Alternate per model so a client sees both flavours of 5xx (unless the personality fixes one).
        model = exchange.attempt.model
        if status is None:
            status = self._next_5xx.get(model, 500)
            self._next_5xx[model] = 503 if status == 500 else 500
        if status != 503:
            await exchange.error(status, Reply.ERROR_500, "Simulated server error.", "internal_error", "server_error")
        else:
            await exchange.error(503, Reply.ERROR_503, "Simulated overload.", "overloaded", "server_error")

    def _draw_fault(self, personality):
        fault = personality.fault
        if fault is None or personality.fault_rate <= 0:
            return None
        if personality.fault_rate >= 1 or self.random.random() < personality.fault_rate:
            return fault
        return None

    def _completion(self, request, personality, prefill=None):
        """Return the Completion to send (continuing `prefill`), or None when messages or max_tokens are malformed."""
        messages = request.get("messages")
        max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
        if not isinstance(messages, list) or not _positive_int_or_none(max_tokens):
            return None
        if personality.answer is not None:
            pieces = answer_pieces(personality.answer)
            pieces = pieces[_pieces_covered(pieces, prefill):]
        else:
            done = _tokens_prefilled(prefill)
            pieces = token_pieces(done + personality.output_length(max_tokens, done))[done:]
        options = request.get("stream_options")
        return Completion(
            id=f"chatcmpl-sim{next(self._ids)}",
            created=int(time.time()),
            model=personality.report_model or request["model"],
            pieces=pieces,
            prompt_tokens=estimate_prompt_tokens(messages),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    async def _chat_completions(self, scope, receive, send):
        admitted = await self._admit(scope, receive, send)
        if admitted is None:
            return
        exchange, request, personality = admitted
        try:
            prefill = exchange.attempt.prefill = _prefill(request.get("messages"))
            max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
            exchange.attempt.max_tokens = max_tokens if type(max_tokens) is int else None
            completion = self._completion(request, personality, prefill)
            if completion is None:
                message = "messages must be a list and max_tokens a positive integer."
                await exchange.error(400, Reply.BAD_REQUEST, message, "invalid_value")
            elif (refusal := _refusal(request, personality, prefill, completion)) is not None:
                reply, message = refusal
                await exchange.error(400, reply, message, _REFUSAL_CODES[reply])
            elif await self._serve_model(exchange, personality):
                await self._answer(exchange, completion, personality, request)
        finally:
            exchange.close()

    async def _answer(self, exchange, completion, personality, request):
        fault = self._draw_fault(personality)
        stream = exchange.attempt.stream
        if fault is None and not stream:
            await exchange.reply(200, completion.body())
            return
        exchange.attempt.outcome = str(fault or Reply.OK)
        if fault == Fault.CONTEXT_LENGTH:
            await _context_length_exceeded(exchange, completion, request, personality)
        elif fault == Fault.RESET_BEFORE_HEADERS:
            await exchange.drop(reset=True)
        elif fault == Fault.SILENCE:
            await exchange.pause(SILENCE_LIMIT_S)
            await exchange.drop()
        elif stream:
            pace = 1 / personality.tokens_per_s if personality.tokens_per_s else 0.0
            script = stream_script(completion, fault, personality.delay_s(), pace, personality.fault_after_tokens)
            await exchange.play(SSE_HEADERS, script)
        else:
            await exchange.play(JSON_HEADERS, body_script(completion, fault, personality.delay_s()))

    async def _embeddings(self, scope, receive, send):
        admitted = await self._admit(scope, receive, send)
        if admitted is None:
            return
        exchange, request, personality = admitted
        try:
            inputs = embedding_inputs(request.get("input"))
            if inputs is None:
                message = "input must be a string or a non-empty list."
                await exchange.error(400, Reply.BAD_REQUEST, message, "invalid_value")
            elif await self._serve_model(exchange, personality):
                model = personality.report_model or exchange.attempt.model
                await exchange.reply(200, embeddings_body(model, inputs, request.get("encoding_format")))
        finally:
            exchange.close()

    async def _list_models(self, scope, receive, send):
        exchange, key = self._open(scope, receive, send)
        if not self._key_ok(key):
            await _unauthorized(exchange, key)
            return
        data = [self._model_entry(name) for name in self.model_names()]
        await exchange.reply(200, orjson.dumps({"object": "list", "data": data}))

    def _model_entry(self, name):
        """Return one model as GET /v1/models lists it; one with a context window reports it as vLLM does."""
        entry = {"id": name, "object": "model", "created": 0, "owned_by": "simulator"}
        window = self.personality(name).context_window
        if window is not None:
            entry["max_model_len"] = window
        return entry


async def _unauthorized(exchange, key):
    if key is None:
        await exchange.error(401, Reply.UNAUTHORIZED, "Missing bearer API key.", "missing_api_key")
    else:
        message = f"Incorrect API key provided: {mask_key(key)}."
        await exchange.error(401, Reply.UNAUTHORIZED, message, "invalid_api_key")


_REFUSAL_CODES = {
    Reply.PREFILL_REFUSED: "prefill_unsupported",
    Reply.CONTEXT_LENGTH: "context_length_exceeded",
    Reply.CONTENT_FILTER: "content_filter",
}


def _refusal(request, personality, prefill, completion):
    """Return (Reply, message) when the personality refuses this request with a 400, else None."""
    if prefill is not None and not personality.accepts_prefill:
        return Reply.PREFILL_REFUSED, "This model does not support a final assistant message (prefill)."
    if personality.content_filter:
        return Reply.CONTENT_FILTER, "The response was filtered due to the prompt triggering the content policy."
    window = personality.context_window
    if window is not None:
        wanted = completion.prompt_tokens + (request.get("max_completion_tokens") or request.get("max_tokens")
                                             or personality.output_tokens)
        if wanted > window:
            return Reply.CONTEXT_LENGTH, (f"This model's maximum context length is {window} tokens. However, you "
                                          f"requested {wanted} tokens. Please reduce the length of the messages.")
    return None


def _prefill(messages):
    """Return the content of a trailing assistant message (the answer's start to continue from), else None."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str):
        return None
    return last["content"]


def _tokens_prefilled(prefill):
    """Return k when prefill is exactly "tok0 … tok{k-1} ", else 0 (a prefill not of ours starts afresh)."""
    if not prefill:
        return 0
    count = len(answer_pieces(prefill))
    return count if "".join(token_pieces(count)) == prefill else 0


def _pieces_covered(pieces, prefill):
    """Return how many leading pieces of a fixed answer the prefill spells out exactly, else 0."""
    joined = ""
    for count, piece in enumerate(pieces, 1):
        joined += piece
        if joined == prefill:
            return count
        if not prefill or not prefill.startswith(joined):
            return 0
    return 0


def _max_tokens(request):
    return request.get("max_completion_tokens", request.get("max_tokens"))


async def _context_length_exceeded(exchange, completion, request, personality):
    """Answer OpenAI's 400 for a prompt plus completion that do not fit the model's context window."""
    wanted = _max_tokens(request) or 0
    window = personality.context_window or max(1, completion.prompt_tokens + wanted - 1)
    message = (f"This model's maximum context length is {window} tokens. However, you requested "
               f"{completion.prompt_tokens + wanted} tokens ({completion.prompt_tokens} in the messages, {wanted} in "
               "the completion). Please reduce the length of the messages or completion.")
    await exchange.error(400, Reply.CONTEXT_LENGTH, message, "context_length_exceeded")


def _positive_int_or_none(value):
    return value is None or (type(value) is int and value > 0)
