"""Circuit breakers, one per deployment, per gateway process.

Closed: traffic flows; the breaker opens after `consecutive` failures in a
row, or when at least `min_requests` requests in the current window failed
at `failure_rate` or more. Open: no client traffic. Each time its cooldown
ends, the gateway sends the deployment a trial of its own (trials.py: one
token, nothing a client waits for): success closes the circuit and resets
the cooldown, failure keeps it open with the cooldown doubled (up to
`max_cooldown_s`, 4 s by default), so a recovered deployment has its traffic
back within seconds whether or not clients send anything. A trial that says
nothing about the deployment (a 429, a 4xx, no usable key) makes the circuit
half-open: the next client request is the trial, one at a time. Without
the gateway's trials (`Breakers.trials` False: a Proxy used on its own), an
open circuit turns half-open when its cooldown ends, as well. A successful
probe of an open deployment ends its cooldown at once (the probes report it
half-open; `adopt` takes that over).

When every target of a route is open the gateway ignores the breakers for
that request (see app.py, "panic mode"): trying a possibly-recovered target
beats answering 503 for a whole cooldown.

State changes are reported through `on_change(deployment_id, state, reason,
at)` so they can be persisted and shown off the hot path. Each process keeps
its own breakers; the states they persist (DeploymentCircuit) come back to
every process with its config snapshot, and `adopt()` takes over the newer
ones, so a circuit one process opened is open everywhere within a second or so.
"""

import time
from dataclasses import dataclass

from routing.models import CircuitState


@dataclass(frozen=True)
class BreakerPolicy:
    consecutive: int = 5
    failure_rate: float = 0.5
    min_requests: int = 20
    window_s: float = 30.0
    cooldown_s: float = 1.0
    max_cooldown_s: float = 4.0
    trial_timeout_s: float = 30.0


class CircuitBreaker:
    """The state machine for one deployment. Times are monotonic seconds."""

    __slots__ = ("policy", "state", "reason", "open_until", "cooldown", "consecutive",
                 "window_start", "window_total", "window_failures", "trial_at", "changed_at")

    def __init__(self, policy, now):
        self.policy = policy
        self.state = CircuitState.CLOSED
        self.reason = ""
        self.open_until = 0.0
        self.cooldown = policy.cooldown_s
        self.consecutive = 0
        self.trial_at = None
        self.changed_at = 0.0  # wall-clock time of the last state change (compared across processes)
        self._new_window(now)

    def _new_window(self, now):
        self.window_start, self.window_total, self.window_failures = now, 0, 0

    def allow(self, now):
        """Return (allowed, changed): may a request go to this deployment now?

        An open circuit whose cooldown has ended turns half-open and lets
        this one request through as its trial (changed=True).
        """
        if self.state == CircuitState.CLOSED:
            return True, False
        if self.state == CircuitState.OPEN:
            if now < self.open_until:
                return False, False
            self.state, self.reason, self.trial_at = CircuitState.HALF_OPEN, "cooldown over; trying one request", now
            self.changed_at = time.time()
            return True, True
        if self.trial_at is None or now - self.trial_at > self.policy.trial_timeout_s:
            self.trial_at = now
            return True, False
        return False, False

    def available(self, now):
        """Return True when allow() would let a request through now, without changing anything."""
        if self.state == CircuitState.CLOSED:
            return True
        if self.state == CircuitState.OPEN:
            return now >= self.open_until
        return self.trial_at is None or now - self.trial_at > self.policy.trial_timeout_s

    def success(self, now):
        """Record a success; return True when this closed the circuit."""
        self.consecutive = 0
        self._count(now, failed=False)
        if self.state == CircuitState.CLOSED:
            return False
        self.state, self.reason = CircuitState.CLOSED, "trial request succeeded"
        self.cooldown, self.trial_at = self.policy.cooldown_s, None
        self.changed_at = time.time()
        return True

    def failure(self, now, why):
        """Record a failure; return True when this opened the circuit."""
        self.consecutive += 1
        self._count(now, failed=True)
        if self.state == CircuitState.HALF_OPEN:
            self.cooldown = min(self.cooldown * 2, self.policy.max_cooldown_s)
            return self._open(now, f"trial request failed ({why}); cooling down {self.cooldown:g} s")
        if self.state == CircuitState.OPEN:
            return False
        reason = self._trip_reason(why)
        return self._open(now, reason) if reason else False

    def trial_due(self, now):
        """Return True when the cooldown of an open circuit is over: time for the gateway's own trial."""
        return self.state == CircuitState.OPEN and now >= self.open_until

    def trial_failed(self, now, why):
        """The gateway's own trial failed: stay open, the cooldown doubled (capped). Nothing changes state, so
        nothing is reported: a deployment that stays down is not a new event every few seconds."""
        if self.state != CircuitState.OPEN:  # closed or half-open meanwhile: a failure like any other
            return self.failure(now, why)
        self.consecutive += 1
        self._count(now, failed=True)
        self.cooldown = min(self.cooldown * 2, self.policy.max_cooldown_s)
        self.open_until = now + self.cooldown
        return False

    def trial_inconclusive(self, now, why):
        """The gateway's trial said nothing about the deployment: half-open, the next request is the trial.

        Returns True when that changed the state.
        """
        if self.state != CircuitState.OPEN:
            return False
        self.state, self.trial_at = CircuitState.HALF_OPEN, None
        self.reason = f"the gateway's trial was inconclusive ({why}); the next request is the trial"[:300]
        self.changed_at = time.time()
        return True

    def _trip_reason(self, why):
        policy = self.policy
        if self.consecutive >= policy.consecutive:
            return f"{self.consecutive} consecutive failures (last: {why})"
        total, failed = self.window_total, self.window_failures
        if total >= policy.min_requests and failed / total >= policy.failure_rate:
            return f"{failed} of the last {total} requests failed (last: {why})"
        return None

    def _open(self, now, reason):
        self.state, self.reason, self.open_until, self.trial_at = CircuitState.OPEN, reason, now + self.cooldown, None
        self.changed_at = time.time()
        return True

    def adopt(self, state, since, reason, now, wall_now):
        """Take over a state another gateway process reported at wall time `since`, if newer than ours."""
        if since <= self.changed_at + 0.001:
            return
        if state == CircuitState.OPEN:
            remaining = max(self.cooldown - (wall_now - since), 0.0)
            self.state, self.open_until, self.trial_at = CircuitState.OPEN, now + remaining, None
        elif state == CircuitState.CLOSED:
            self.state, self.trial_at, self.consecutive = CircuitState.CLOSED, None, 0
        elif self.state == CircuitState.OPEN:  # a probe succeeded: end the cooldown, the next request is the trial
            self.open_until = now
        else:
            return  # half-open here too: one trial is enough
        self.reason, self.changed_at = f"{reason} (reported by another gateway process)"[:300], since

    def _count(self, now, failed):
        if now - self.window_start > self.policy.window_s:
            self._new_window(now)
        self.window_total += 1
        self.window_failures += failed


class Breakers:
    """The breakers of one gateway process, created on first use."""

    def __init__(self, policy=None, on_change=None, clock=time.monotonic):
        self.policy = policy or BreakerPolicy()
        self.on_change = on_change
        self.clock = clock
        self.by_deployment = {}
        self.trials = False  # True while trials.Trials tests open circuits: then no client request is a trial

    def _get(self, deployment_id):
        breaker = self.by_deployment.get(deployment_id)
        if breaker is None:
            breaker = self.by_deployment[deployment_id] = CircuitBreaker(self.policy, self.clock())
        return breaker

    def available(self, deployment_id):
        """Return True when the deployment may get a request now (no state is changed)."""
        breaker = self.by_deployment.get(deployment_id)
        if breaker is None or breaker.state == CircuitState.CLOSED:
            return True
        if self.trials and breaker.state == CircuitState.OPEN:  # the gateway's own trial will test it
            return False
        return breaker.available(self.clock())

    def begin(self, deployment_id):
        """Note that a request goes to the deployment now (it becomes the trial of a half-open circuit)."""
        breaker = self.by_deployment.get(deployment_id)
        if breaker is not None and breaker.state != CircuitState.CLOSED:
            if self.trials and breaker.state == CircuitState.OPEN:  # panic mode: a try, not a trial
                return
            allowed, changed = breaker.allow(self.clock())
            if changed:
                self._report(deployment_id, breaker)

    def due_trials(self):
        """Return the ids of the deployments whose open circuit has cooled down: each is due a trial."""
        now = self.clock()
        return [deployment_id for deployment_id, breaker in self.by_deployment.items() if breaker.trial_due(now)]

    def trial_failed(self, deployment_id, why):
        breaker = self._get(deployment_id)
        if breaker.trial_failed(self.clock(), why):
            self._report(deployment_id, breaker)

    def trial_inconclusive(self, deployment_id, why):
        breaker = self.by_deployment.get(deployment_id)
        if breaker is not None and breaker.trial_inconclusive(self.clock(), why):
            self._report(deployment_id, breaker)

    def state(self, deployment_id):
        breaker = self.by_deployment.get(deployment_id)
        return breaker.state if breaker else CircuitState.CLOSED

    def success(self, deployment_id):
        breaker = self.by_deployment.get(deployment_id)
        if breaker is not None and breaker.success(self.clock()):
            self._report(deployment_id, breaker)

    def failure(self, deployment_id, why):
        breaker = self._get(deployment_id)
        if breaker.failure(self.clock(), why):
            self._report(deployment_id, breaker)

    def adopt(self, reported):
        """Take over newer states from other processes: {deployment_id: (state, since epoch, reason)}.

        Call it on the event loop; it reports nothing back (the change was recorded where it happened).
        """
        now, wall_now = self.clock(), time.time()
        for deployment_id, (state, since, reason) in reported.items():
            breaker = self.by_deployment.get(deployment_id)
            if breaker is None:
                if state != CircuitState.OPEN:
                    continue
                breaker = self._get(deployment_id)
            breaker.adopt(state, since, reason, now, wall_now)

    def _report(self, deployment_id, breaker):
        if self.on_change is not None:
            self.on_change(deployment_id, breaker.state, breaker.reason, breaker.changed_at)
