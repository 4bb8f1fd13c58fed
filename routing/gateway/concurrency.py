"""Bounded concurrency per provider (`Provider.max_concurrency`), per gateway process.

A request to a provider at its limit waits for a slot, first come first
served, at most `wait_s` (and never past its deadline); then the caller fails
over to another target. A slot is held for the whole upstream attempt, the
relayed stream included, and always given back (success, failure, client
disconnect, cancellation). The limit is read from each request's target, so
a config change takes effect with the next request. Providers without a
limit never reach this module.

Hand-written rather than an asyncio.Semaphore per provider: the limit
changes with the config snapshot, and /metrics wants the counts.
"""

import asyncio
from collections import deque


class ProviderSlots:
    """In-flight requests of the providers that have a max_concurrency, with waits and overflows for /metrics."""

    def __init__(self, wait_s=0.5):
        self.wait_s = wait_s
        self.in_flight = {}  # provider name -> requests holding a slot
        self.waits = {}  # (provider,) -> requests that had to wait
        self.overflows = {}  # (provider,) -> requests that found no slot in time
        self._queues = {}  # provider name -> deque of futures, one per waiting request

    async def take(self, target, deadline):
        """Return True once the request holds a slot of `target`'s provider, False when none freed in time.

        `deadline` is the request's deadline in loop time. True obliges the caller to `give_back(target)`.
        """
        provider = target.provider
        held = self.in_flight.get(provider, 0)
        queue = self._queues.get(provider)
        if held < target.max_concurrency and not queue:
            self.in_flight[provider] = held + 1
            return True
        return await self._wait(target, deadline)

    async def _wait(self, target, deadline):
        provider = target.provider
        self.waits[(provider,)] = self.waits.get((provider,), 0) + 1
        loop = asyncio.get_running_loop()
        slot = loop.create_future()
        queue = self._queues.setdefault(provider, deque())
        queue.append(slot)
        try:
            async with asyncio.timeout_at(min(loop.time() + self.wait_s, deadline)):
                await slot
            return True
        except TimeoutError:
            if slot.done() and not slot.cancelled():  # handed over just as the wait ran out: keep it
                return True
            self.overflows[(provider,)] = self.overflows.get((provider,), 0) + 1
            return False
        except BaseException:  # cancelled while waiting (deadline, disconnect): pass on a slot handed over meanwhile
            if slot.done() and not slot.cancelled():
                self.give_back(target)
            raise
        finally:
            if not slot.done():
                slot.cancel()
            if slot in queue:
                queue.remove(slot)

    def give_back(self, target):
        """Free a slot: hand it to the longest-waiting request, or count it free."""
        provider = target.provider
        queue = self._queues.get(provider)
        while queue:
            slot = queue.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self.in_flight[provider] = max(self.in_flight.get(provider, 0) - 1, 0)
