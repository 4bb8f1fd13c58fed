"""Rate limits with the `limits` library: per gateway key requests per minute,
per provider key requests and tokens per minute.

Fixed one-minute windows (the library's fixed-window strategy: a counter
that expires a minute after its first hit). Embedded mode keeps the counters
in this process, in the library's synchronous memory storage (a dict, safe
and fast on the event loop); with REDIS_URL every gateway process shares
them in Redis. Tokens are estimated before the call (prompt + max_tokens)
and corrected from the usage the upstream reports (settled with the key's
next call; see `Limits.correct_tokens`).
"""

import asyncio
import logging
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage

from dashboard.redis_guard import FIRST_RECHECK_S, MAX_RECHECK_S, client_options

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 0.25  # the least patience of a health ping (off the request path)
DEFAULT_OUTPUT_ESTIMATE = 256  # tokens assumed when a request names no max_tokens


def estimate_tokens(request):
    """Return the tokens a request may use: about 1 per 4 prompt characters plus max_tokens for each of its `n`
    choices."""
    prompt, wanted = context_tokens(request)
    output = wanted if wanted else (0 if "input" in request else DEFAULT_OUTPUT_ESTIMATE)
    choices = request.get("n")
    if type(choices) is int and choices > 1:
        output *= min(choices, 128)
    return prompt + output


def context_tokens(request):
    """Return (prompt tokens, max_tokens) of a request as a model's context window must hold them: about 1 token
    per 4 prompt characters, and the completion's max_tokens (0 when it names none)."""
    chars = 0
    for message in request.get("messages") or ():
        content = message.get("content") if type(message) is dict else None
        if type(content) is str:
            chars += len(content)
        elif type(content) is list:
            chars += sum(len(p.get("text") or "") for p in content if type(p) is dict)
    if "input" in request:  # embeddings
        chars += len(str(request["input"]))
    wanted = request.get("max_completion_tokens") or request.get("max_tokens")
    return max(1, (chars + 3) // 4), (wanted if type(wanted) is int and wanted > 0 else 0)


class LoopMemoryStorage(MemoryStorage):
    """The library's memory storage without its expiry timer.

    MemoryStorage restarts a threading.Timer every 10 ms while it is being
    hit, and each start blocks the caller until the new thread runs:
    measured 0.3 s of a 7 s gateway run (357 thread starts, ~9% of the CPU
    with latency spikes). Counters still expire when read (`get` drops
    expired keys), and there is one counter per key and limit, so nothing
    needs sweeping.
    """

    def _MemoryStorage__schedule_expiry(self):
        pass


class _MemoryBackend:
    def __init__(self):
        self.storage = LoopMemoryStorage()

    async def incr(self, key, item, amount):
        return self.storage.incr(key, item.get_expiry(), amount)

    async def decr(self, key, amount):
        self.storage.decr(key, amount)

    async def reset_in(self, key):
        return self.storage.get_expiry(key) - time.time()


DECR_SCRIPT = """
local current = tonumber(redis.call('get', KEYS[1]))
if not current then return 0 end
local left = math.max(current - tonumber(ARGV[1]), 0)
redis.call('set', KEYS[1], left, 'KEEPTTL')
return left
"""


class _RedisBackend:
    def __init__(self, url, prefix, timeout):
        from limits.aio.storage import RedisStorage

        self.storage = RedisStorage(f"async+{url}", implementation="redispy", key_prefix=prefix,
                                    **client_options(timeout))
        # The library's async Redis storage has no decr; this one keeps the counter's expiry and never goes below 0.
        bridge = self.storage.bridge
        self._prefixed = bridge.prefixed_key
        self._decr = bridge.get_connection().register_script(DECR_SCRIPT)
        # Health pings run off the request path, with more patience: a busy event loop can make one command
        # miss a 50 ms timeout while Redis is fine, and that alone must not split the limits per process.
        import redis.asyncio

        self._pinger = redis.asyncio.Redis.from_url(url, **client_options(max(timeout * 5, CHECK_TIMEOUT_S)))

    async def incr(self, key, item, amount):
        return await self.storage.incr(key, item.get_expiry(), amount)

    async def decr(self, key, amount):
        await self._decr([self._prefixed(key)], [amount])

    async def reset_in(self, key):
        return await self.storage.get_expiry(key) - time.time()

    async def check(self):
        """Return True when Redis answers a PING."""
        try:
            return await self._pinger.ping()
        except Exception:
            return False


class Limits:
    """The gateway's counters. Checks return None when allowed, else seconds until the window resets.

    With Redis, every command is bounded by `timeout` (connect, then reply).
    A request whose command fails or times out is counted in this process's
    memory instead, and a background ping (with more patience) confirms the
    trouble: then every request is counted in memory until Redis answers
    again (logged once, counted in /metrics). Meanwhile each process enforces
    every limit on its own; a background check pings Redis after `recheck_s`
    (doubling up to MAX_RECHECK_S) and moves the counters back when it answers.
    Any other storage failure lets the request through (logged): the limits
    protect budgets, they must not take the gateway down with them.
    """

    def __init__(self, redis_url=None, prefix="weathervane", timeout=0.05, recheck_s=FIRST_RECHECK_S, metrics=None):
        self.memory = _MemoryBackend()
        self.redis = _RedisBackend(redis_url, prefix, timeout) if redis_url else None
        self.backend = self.redis or self.memory
        self.recheck_s = recheck_s
        self.metrics = metrics
        self._recovery = None  # the task that pings Redis while the counters are in memory
        self._confirming = None  # the task that pings Redis after a failed command
        self._keys = {}
        self._carry = {}  # provider key id -> reported minus estimated tokens, not yet counted

    @property
    def falling_back(self):
        """True while the counters are in this process because Redis failed."""
        return self.redis is not None and self.backend is self.memory

    def _trouble(self, error):
        """Note a failed Redis command; unless a check runs already, confirm it with a ping off the request path."""
        if self.metrics is not None:
            self.metrics.limits_redis_errors += 1
        if self.backend is self.redis and self._confirming is None:
            self._confirming = asyncio.ensure_future(self._confirm(error))

    async def _confirm(self, error):
        try:
            if await self.redis.check():
                log.info("rate-limit storage: one Redis command failed (%s) but Redis answers; staying on it", error)
            else:
                self._fall_back(error)
        finally:
            self._confirming = None

    def _fall_back(self, error):
        """Move the counters to memory (once per outage) and start the recovery check."""
        if self.backend is self.memory:
            return
        self.backend = self.memory
        log.warning("rate-limit storage: Redis failed (%s: %s); limits are per gateway process until it answers",
                    type(error).__name__, error)
        if self.metrics is not None:
            self.metrics.limits_fallbacks += 1
            self.metrics.limits_falling_back = 1
        self._recovery = asyncio.ensure_future(self._recover())

    async def _recover(self):
        wait = self.recheck_s
        while True:
            await asyncio.sleep(wait)
            if await self.redis.check():
                break
            wait = min(wait * 2, MAX_RECHECK_S)
        self.backend = self.redis
        self._recovery = None
        if self.metrics is not None:
            self.metrics.limits_falling_back = 0
        log.warning("rate-limit storage: Redis answers again; limits are shared again")

    async def close(self):
        for task in (self._recovery, self._confirming):
            if task is not None:
                task.cancel()
        self._recovery = self._confirming = None

    def _counter(self, kind, owner_id, amount):
        """Return (storage key, item) of one counter; both are cached (building a key costs microseconds)."""
        cache_key = (kind, owner_id, amount)
        counter = self._keys.get(cache_key)
        if counter is None:
            item = RateLimitItemPerMinute(amount)
            counter = self._keys[cache_key] = (item.key_for(kind, str(owner_id)), item)
        return counter

    async def _hit(self, kind, owner_id, amount, cost=1):
        key, item = self._counter(kind, owner_id, amount)
        backend = self.backend
        try:
            # The fixed-window strategy: count first, then compare (a refused hit is counted too).
            if await backend.incr(key, item, cost) <= amount:
                return None
            return max(await backend.reset_in(key), 0.001)
        except Exception as error:
            if backend is not self.redis:
                log.warning("rate-limit storage failed; letting the request through", exc_info=True)
                return None
            self._trouble(error)
        return await self._hit_memory(key, item, amount, cost)

    async def _hit_memory(self, key, item, amount, cost):
        """Count a hit whose Redis command failed in this process's memory (the limit still holds, per process)."""
        memory = self.memory
        if await memory.incr(key, item, cost) <= amount:
            return None
        return max(await memory.reset_in(key), 0.001)

    async def client_key(self, client_key):
        """Count one request of a gateway key against its rpm."""
        if client_key.rpm_limit is None:
            return None
        return await self._hit("gk", client_key.id, client_key.rpm_limit)

    async def provider_key(self, key, tokens):
        """Count one request and `tokens` estimated tokens against a provider key's rpm and tpm.

        Returns None when both allow it (the tokens are then held), else the wait in seconds.
        The tokens counted also settle this key's earlier estimates (see `correct_tokens`).
        """
        if key.rpm_limit is not None:
            wait = await self._hit("rpm", key.id, key.rpm_limit)
            if wait is not None:
                return wait
        if key.tpm_limit is None:
            return None
        carry = self._carry.pop(key.id, 0)
        cost = max(1, min(tokens, key.tpm_limit)) + carry
        wait = await self._hit("tpm", key.id, key.tpm_limit, cost=cost)
        if wait is not None:  # give back what the refused call would have used; keep the carry for later
            self._carry[key.id] = self._carry.get(key.id, 0) + carry
            await self._give_back(key, cost)
        return wait

    async def _give_back(self, key, tokens):
        await self._decr(self._counter("tpm", key.id, key.tpm_limit)[0], tokens)
        if key.rpm_limit is not None:
            await self._decr(self._counter("rpm", key.id, key.rpm_limit)[0], 1)

    async def release_tokens(self, key, estimated):
        """Give back the tokens a failed attempt held, at once (only failures pay this round trip)."""
        if key.tpm_limit is None:
            return
        await self._decr(self._counter("tpm", key.id, key.tpm_limit)[0], max(1, min(estimated, key.tpm_limit)))

    async def _decr(self, counter, amount):
        backend = self.backend
        try:
            await backend.decr(counter, amount)
        except Exception as error:
            if backend is self.redis:
                self._trouble(error)  # the reservation stays held in Redis until its window ends
            else:
                log.warning("rate-limit storage failed while giving back a call's reservation", exc_info=True)

    def correct_tokens(self, key, estimated, actual):
        """Note the reported usage of a call that held `estimated` tokens.

        The difference is settled with the key's next call (added to the
        tokens it counts), which saves a storage round trip per request and
        still decides every call on the usage reported so far. A difference
        can land in the next one-minute window; that errs by one estimate.
        """
        if key.tpm_limit is None:
            return
        held = max(1, min(estimated, key.tpm_limit))
        if actual != held:
            self._carry[key.id] = self._carry.get(key.id, 0) + actual - held
