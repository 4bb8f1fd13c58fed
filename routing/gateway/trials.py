"""The gateway's own trials of its open circuits, off the request path.

While a deployment's circuit is open no client request goes to it. Each time
its cooldown ends (1 s, doubling while trials fail, at most 4 s by default),
the gateway process sends it one cheap trial: a streamed one-token chat
completion with one of its usable keys, judged by its opening within the
deployment's first-token timeout (`proxy.open_stream`, as a client's request
would be). An answer that opens closes the circuit, so a recovered primary has
its traffic back within seconds whether or not clients send anything; a
failure of the deployment keeps it open; an answer that says nothing about the
deployment (a 429, another 4xx, no usable key) makes it half-open, and the
next client request is the trial.

Breaker state is per gateway process (persisted and adopted through the
database), so each process sends its own trials: at most one token per
cooldown per open deployment per process, never on a client's time. A
circuit another process closed is adopted with the next snapshot.
"""

import asyncio
import itertools
import logging
import time

import orjson

from routing.gateway.proxy import open_stream
from routing.outcomes import DEPLOYMENT_FAILURES, UpstreamError

log = logging.getLogger(__name__)

TICK_S = 0.25  # how often the open circuits are looked at (only open ones: usually none)
PROMPT = "Reply with one word."


def trial_body(target):
    """Return the body of a trial: one streamed token, the cheapest request that shows a deployment answers."""
    return orjson.dumps({"model": target.upstream_model, "messages": [{"role": "user", "content": PROMPT}],
                         "max_tokens": 1, "stream": True})


class Trials:
    """Sends the trials of one gateway process's open circuits (started on its event loop)."""

    def __init__(self, breakers, keys, store, metrics, tick_s=TICK_S):
        self.breakers = breakers
        self.keys = keys
        self.store = store
        self.metrics = metrics
        self.tick_s = tick_s
        self.session = None
        self.in_flight = set()  # deployment ids with a trial under way
        self.sent = 0
        self._tasks = set()
        self._loop_task = None
        self._ids = itertools.count(1)

    def start(self, session):
        """Start looking at the open circuits; from now on no client request is the trial of an open one."""
        self.session = session
        self.breakers.trials = True
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="circuit-trials")

    def cancel(self):
        self.breakers.trials = False
        for task in (self._loop_task, *self._tasks):
            if task is not None:
                task.cancel()
        self._loop_task = None

    async def _run(self):
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.launch_due()
            except Exception:  # never let one bad tick end the trials
                log.exception("circuit trials: a tick failed")

    def launch_due(self):
        """Start a trial for every open circuit that has cooled down and has none under way."""
        targets = self.store.current.trial_targets
        for deployment_id in self.breakers.due_trials():
            target = targets.get(deployment_id)
            if target is None or deployment_id in self.in_flight:  # in no route: no traffic to give back
                continue
            self.in_flight.add(deployment_id)
            task = asyncio.get_running_loop().create_task(self.trial(target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def trial(self, target):
        """Send one trial to `target` and tell its breaker how it went."""
        deployment_id = target.deployment_id
        try:
            key = self._key(target)
            if key is None:
                self._inconclusive(target, "no usable key")
                return
            self.sent += 1
            request_id = f"trial-{deployment_id}-{next(self._ids)}"
            try:
                response, _, _ = await open_stream(self.session, target, key, trial_body(target), request_id)
            except UpstreamError as err:
                self._failed(target, err)
                return
            response.close()  # one token was all it had to show
            self.metrics.trial(target.deployment, "closed")
            self.breakers.success(deployment_id)
        finally:
            self.in_flight.discard(deployment_id)

    def _key(self, target):
        now = time.time()
        return next((key for key in target.keys if self.keys.usable(key, now)), None)

    def _failed(self, target, err):
        if err.outcome not in DEPLOYMENT_FAILURES:
            self._inconclusive(target, err.outcome)
            return
        self.metrics.trial(target.deployment, "failed")
        self.breakers.trial_failed(target.deployment_id, err.message)

    def _inconclusive(self, target, why):
        self.metrics.trial(target.deployment, "inconclusive")
        self.breakers.trial_inconclusive(target.deployment_id, why)
