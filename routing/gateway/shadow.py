"""Shadow requests of a rollout's shadow step: a share of a route's answered requests is sent again to the
canary, off the client's path, and its answer thrown away.

`Shadows.maybe_mirror(call)` runs after the client's answer was sent; on a route without a shadow step it
is one attribute check. A mirror is a task of its own (never awaited by the request), at most
`max_in_flight` at a time (a full house drops the mirror, counted in /metrics), within the gateway's
deadline. Mirrors are sent without streaming, so their latency is the whole answer's. The canary's outcome
and the primary's for the same request are folded into the `shadow` rollups together, so a shadow step
compares the two arms on exactly the mirrored requests, with the canary's cost apart from real traffic's.
"""

import asyncio
import logging
from time import perf_counter

import orjson

from routing import sse
from routing.gateway import upstream
from routing.outcomes import Outcome, UpstreamError

log = logging.getLogger(__name__)

# The primary's answer says nothing about the deployment (no key, the client left): nothing to compare.
NOT_COMPARABLE = frozenset({Outcome.NO_CAPACITY, Outcome.CLIENT_CLOSED, Outcome.CLIENT_DEADLINE,
                            Outcome.CLIENT_ERROR})


class Mirror:
    """The canary's answer to one mirrored request, as recorded."""

    __slots__ = ("target", "outcome", "ms", "tokens_in", "tokens_out", "cost")

    def __init__(self, target, outcome, ms, usage=None):
        self.target, self.outcome, self.ms = target, outcome, ms
        self.tokens_in, self.tokens_out = usage or (0, 0)
        self.cost = target.cost(self.tokens_in, self.tokens_out) if usage else 0.0


class Shadows:
    def __init__(self, proxy, recorder, rng, max_in_flight, deadline_s):
        self.proxy, self.recorder, self.rng = proxy, recorder, rng
        self.max_in_flight = max_in_flight
        self.deadline_s = deadline_s
        self.tasks = set()

    def maybe_mirror(self, call):
        """Mirror `call` to its route's shadow target when it draws the shadow share; never blocks."""
        shadow = call.route.shadow
        if shadow is None or self.rng.random() >= shadow.share:
            return
        primary = call.tried[-1] if call.tried else None
        if primary is None or primary.outcome in NOT_COMPARABLE or primary.target == shadow.target:
            return
        if len(self.tasks) >= self.max_in_flight:
            self.recorder.metrics.shadowed("dropped")
            return
        self.recorder.metrics.shadowed("sent")
        task = asyncio.get_running_loop().create_task(self._mirror(call, primary, shadow.target))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _mirror(self, call, primary, target):
        try:
            mirror = await self._send(call, target)
        except Exception:  # a mirror must never disturb the gateway; it is only not recorded
            log.warning("shadow request to %s failed unexpectedly", target.deployment, exc_info=True)
            return
        if mirror is not None:
            self.recorder.shadow(call.record.route_id, primary, mirror)

    async def _send(self, call, target):
        """Return the Mirror of the canary's answer, or None when it has no usable key."""
        key = await self.proxy.pick_key(call, target)
        if key is None:
            return None
        body = orjson.dumps({**{k: v for k, v in call.request.items() if k != "stream_options"},
                             "model": target.upstream_model, "stream": False})
        started = perf_counter()
        try:
            async with asyncio.timeout(self.deadline_s):
                return await self._answer(call, target, key, body, started)
        except UpstreamError as err:
            return Mirror(target, err.outcome, (perf_counter() - started) * 1000)
        except TimeoutError:
            return Mirror(target, Outcome.TIMEOUT, (perf_counter() - started) * 1000)

    async def _answer(self, call, target, key, body, started):
        response = await upstream.post(self.proxy.session, getattr(target, call.url_of), body, key.auth,
                                       target.timeout, call.request_id)
        try:
            if response.status >= 300:
                raise await upstream.failure(response, key.secret)
            payload = await upstream.read_all(response)
        finally:
            response.release()
        ms = (perf_counter() - started) * 1000
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return Mirror(target, Outcome.MALFORMED, ms)
        if sse.error_of(answer) is not None:
            return Mirror(target, Outcome.SERVER_ERROR, ms)
        try:
            return Mirror(target, Outcome.OK, ms, sse.usage_of(answer))
        except sse.Malformed:
            return Mirror(target, Outcome.MALFORMED, ms)

    def cancel(self):
        for task in list(self.tasks):
            task.cancel()
