"""A fake clock for schedules (virtual time, no sleeping) and a fake target that answers after a set time."""

import asyncio
import heapq
import itertools

from probes.loadtest.metrics import Sample

SETTLE_STEPS = 50  # loop turns that let every runnable task reach its next sleep


class FakeClock:
    """Virtual seconds. `drive(coro)` runs coro, jumping time to the earliest sleeper whenever all tasks wait."""

    real = False

    def __init__(self):
        self.t = 0.0
        self._sleepers = []
        self._order = itertools.count()

    def now(self):
        return self.t

    async def sleep_until(self, at):
        if at <= self.t:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (at, next(self._order), future))
        await future

    async def sleep(self, seconds):
        await self.sleep_until(self.t + seconds)

    async def drive(self, coro):
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(SETTLE_STEPS):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if self._sleepers and not task.done():
                at, _, future = heapq.heappop(self._sleepers)
                self.t = max(self.t, at)
                future.set_result(None)
        return task.result()


class FakeTarget:
    """A send() that takes `seconds` of fake time per request and records when each started."""

    def __init__(self, clock, seconds=1.0, outcome="ok", tokens_out=10):
        self.clock = clock
        self.seconds = seconds
        self.outcome = outcome
        self.tokens_out = tokens_out
        self.starts = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, prompt):
        self.starts.append(self.clock.now())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.clock.sleep(self.seconds)
        finally:
            self.in_flight -= 1
        return Sample(outcome=self.outcome, e2e=self.seconds * 1000, ttft=100.0, tokens_out=self.tokens_out,
                      status=200 if self.outcome == "ok" else 500,
                      error="" if self.outcome == "ok" else "HTTP 500: boom")
