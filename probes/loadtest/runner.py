"""The load-test loop: phases one after the other, always within a request cap
and a time cap, stoppable at any moment, watching whether it is itself the bottleneck.

`LoadTest(plan, send).execute()` returns a result dict (see `_result`). `send`
is a coroutine function prompt -> metrics.Sample (client.Sender.send, or a fake in
tests); `clock` gives the time and the sleeps, so schedules can run on a fake one.
"""

import asyncio
import time
from dataclasses import dataclass, field

from django.db import models

from probes.loadtest import profiles, thresholds
from probes.loadtest.metrics import distribution, summarise

PROGRESS_EVERY_S = 0.5
MONITOR_EVERY_S = 0.05
LATE_DISPATCH_MS = 10.0  # an open-loop request sent later than this behind its schedule is late
LOOP_STALL_MS = 25.0  # the generator's event loop woke this late: it had too much to do
BUSY_SHARE = 0.5  # above this share of a core, a late-waking loop is the generator's own doing
ABORT_MIN_SAMPLES = 20  # thresholds judged mid-run only once there is something to judge


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    STOPPED = "stopped", "Stopped"
    ABORTED = "aborted", "Aborted by a threshold"
    FAILED = "failed", "Could not run"


class Clock:
    """Real time: perf_counter seconds and asyncio sleeps."""

    real = True

    def now(self):
        return time.perf_counter()

    async def sleep_until(self, at):
        delay = at - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class Plan:
    """What to run. Caps are for the whole run; each phase gets an equal share of both."""

    phases: list
    prompts: list
    max_requests: int
    max_duration_s: float
    sweep_steps: int = 0
    max_in_flight: int = 512
    thresholds: list = field(default_factory=list)
    abort_on_fail: bool = False
    slos: dict = field(default_factory=dict)

    @property
    def phase_count(self):
        return len(self.phases) + self.sweep_steps


class LoadTest:
    def __init__(self, plan, send, clock=None, on_progress=None):
        self.plan = plan
        self.send = send
        self.clock = clock or Clock()
        self.on_progress = on_progress
        self.samples = []
        self.in_flight = set()
        self.issued = 0
        self.cancelled = 0
        self.saturated = 0
        self.loop_stalls = []
        self.phase_index = 0
        self.phase_label = ""
        self.phase_labels = []
        self.phase_spans = {}
        self.stop_reason = ""
        self.status = RunStatus.RUNNING
        self._stopping = asyncio.Event()

    # --- control ---------------------------------------------------------------

    def stop(self, reason="stopped by the user", status=RunStatus.STOPPED):
        """Stop dispatching and cancel what is in flight; safe to call from the run's loop at any time."""
        if not self._stopping.is_set():
            self.stop_reason = reason
            self.status = status
            self._stopping.set()
            for task in list(self.in_flight):
                task.cancel()

    @property
    def stopping(self):
        return self._stopping.is_set()

    # --- the run -----------------------------------------------------------------

    async def execute(self):
        self.started = self.clock.now()
        self.cpu_started = time.thread_time()  # the loop's own thread: a server hosting it does not count
        self.deadline = self.started + self.plan.max_duration_s
        helpers = [asyncio.create_task(self._report_progress()), asyncio.create_task(self._guard_deadline())]
        if self.clock.real:
            helpers.append(asyncio.create_task(self._watch_loop()))
        try:
            await self._run_phases()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        if self.status == RunStatus.RUNNING:
            self.status = RunStatus.FINISHED
        return self._result()

    async def _run_phases(self):
        phases = list(self.plan.phases)
        index = 0
        while index < len(phases) and not self._over():
            await self._run_phase(index, phases[index])
            index += 1
            if self.plan.sweep_steps and index == 2:
                low, high = (self._phase_rps(0), self._phase_rps(1))
                phases += profiles.sweep_phases(low, high, self.plan.sweep_steps)

    def _over(self):
        return self.stopping or self.issued >= self.plan.max_requests or self.clock.now() >= self.deadline

    def _phase_rps(self, index):
        done = [s for s in self.samples if s.phase == index]
        span = self.phase_spans.get(index, 0)
        return len(done) / span if span > 0 else 0.0

    async def _run_phase(self, index, phase):
        self.phase_index, self.phase_label = index, phase.label
        self.phase_labels.append(phase.label)
        start = self.clock.now()
        share_s = self.plan.max_duration_s / self.plan.phase_count
        budget = max(1, self.plan.max_requests // self.plan.phase_count)
        budget = min(budget, self.plan.max_requests - self.issued)
        limit = _Limit(budget, min(start + share_s, self.deadline))
        if phase.open_loop:
            await self._open_loop(phase, start, limit)
        else:
            await asyncio.gather(*(self._worker(limit) for _ in range(phase.concurrency)))
        await self._drain()
        self.phase_spans[index] = self.clock.now() - start

    async def _worker(self, limit):
        while not self._over() and limit.allows(self.clock.now()):
            limit.take()
            await self._one(scheduled=None)

    async def _open_loop(self, phase, start, limit):
        slots = asyncio.Semaphore(self.plan.max_in_flight)
        for at in profiles.arrivals(phase, start):
            if self._over() or not limit.allows(at):
                break
            await self._sleep_until(at)
            if self._over():
                break
            if slots.locked():
                self.saturated += 1
            await slots.acquire()
            limit.take()
            task = asyncio.create_task(self._one(scheduled=at))
            self.in_flight.add(task)  # now, not when it first runs: the phase's drain must wait for it
            task.add_done_callback(lambda done: self._settle(done, slots))

    def _settle(self, task, slots):
        slots.release()
        self.in_flight.discard(task)
        if task.cancelled():  # cancelled before it ever ran
            self.cancelled += 1

    async def _sleep_until(self, at):
        """Sleep until `at`, or less when the run is stopped meanwhile."""
        if at <= self.clock.now():
            return
        stop = asyncio.ensure_future(self._stopping.wait())
        sleep = asyncio.ensure_future(self.clock.sleep_until(min(at, self.deadline)))
        await asyncio.wait({stop, sleep}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        sleep.cancel()

    async def _one(self, scheduled):
        self.issued += 1
        prompt = self.plan.prompts[(self.issued - 1) % len(self.plan.prompts)]
        now = self.clock.now()
        task = asyncio.current_task()
        self.in_flight.add(task)
        try:
            sample = await self.send(prompt)
        except asyncio.CancelledError:
            self.cancelled += 1
            return
        finally:
            self.in_flight.discard(task)
        sample.phase = self.phase_index
        sample.at = now - self.started
        sample.lag = (now - scheduled) * 1000 if scheduled is not None else 0.0
        self.samples.append(sample)

    async def _drain(self):
        """Wait for the phase's requests in flight (the deadline guard cancels them at the time cap)."""
        while self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def _guard_deadline(self):
        await self.clock.sleep_until(self.deadline)
        self.stop("time cap reached", status=RunStatus.RUNNING)

    # --- watching ------------------------------------------------------------------

    async def _report_progress(self):
        while True:
            await self.clock.sleep_until(self.clock.now() + PROGRESS_EVERY_S)
            self._judge_midway()
            if self.on_progress is not None:
                await self.on_progress(self.progress())

    def _judge_midway(self):
        if not (self.plan.abort_on_fail and self.plan.thresholds) or len(self.samples) < ABORT_MIN_SAMPLES:
            return
        passed, results = thresholds.check_all(self.plan.thresholds, self.summary())
        if not passed:
            failed = ", ".join(r["threshold"] for r in results if not r["ok"])
            self.stop(f"threshold crossed: {failed}", status=RunStatus.ABORTED)

    async def _watch_loop(self):
        """Record how late the event loop wakes: a busy generator wakes late."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(MONITOR_EVERY_S)
            self.loop_stalls.append((time.perf_counter() - before - MONITOR_EVERY_S) * 1000)

    def elapsed(self):
        return max(self.clock.now() - self.started, 1e-9)

    def summary(self):
        return summarise(self.samples, self.elapsed(), self.plan.slos)

    def progress(self):
        """Return the live figures: done, planned, in flight, ok, errors, rps, elapsed, the phase."""
        ok = sum(1 for s in self.samples if s.outcome == "ok")
        return {
            "done": len(self.samples), "planned": self.plan.max_requests, "in_flight": len(self.in_flight),
            "ok": ok, "errors": len(self.samples) - ok, "elapsed_s": round(self.elapsed(), 2),
            "max_duration_s": self.plan.max_duration_s, "rps": round(len(self.samples) / self.elapsed(), 2),
            "phase": self.phase_label, "status": self.status,
        }

    def client_limited(self):
        """Return why the generator (not the target) limited this run, or "" when it did not."""
        reasons = []
        if self.saturated:
            reasons.append(f"{self.saturated} arrivals waited for one of the {self.plan.max_in_flight} request slots")
        lags = distribution(s.lag for s in self.samples if s.lag)
        if lags["p95"] is not None and lags["p95"] > LATE_DISPATCH_MS:
            reasons.append(f"p95 dispatch lag {lags['p95']:.1f} ms behind schedule")
        stalls = distribution(self.loop_stalls)
        if stalls["p99"] is not None and stalls["p99"] > LOOP_STALL_MS:
            reasons.append(stall_reason(stalls["p99"], self.cpu_share()))
        return "; ".join(reasons)

    def cpu_share(self):
        """Return the share of one core the run's event loop used (0 on a fake clock)."""
        if not self.clock.real:
            return 0.0
        return (time.thread_time() - self.cpu_started) / self.elapsed()

    def _result(self):
        summary = self.summary()
        passed, checked = thresholds.check_all(self.plan.thresholds, summary)
        limited = self.client_limited()
        phases = [{"label": label, **summarise([s for s in self.samples if s.phase == i],
                                               self.phase_spans.get(i, 0), self.plan.slos)}
                  for i, label in enumerate(self.phase_labels)]
        return {
            "status": self.status, "stop_reason": self.stop_reason, "passed": passed, "thresholds": checked,
            "client_limited": bool(limited), "client_limited_reason": limited, "cancelled": self.cancelled,
            "generator_cpu_share": round(self.cpu_share(), 3),
            "summary": summary, "phases": phases, "samples": [s.row() for s in self.samples],
        }


def stall_reason(late_ms, cpu_share):
    """Say why the event loop woke `late_ms` late: its own work (above BUSY_SHARE of a core) or a busy machine."""
    why = "it was busy" if cpu_share > BUSY_SHARE else "it waited for a CPU: the machine is busy"
    return (f"the generator's event loop woke {late_ms:.0f} ms late (p99; {why}, using {cpu_share:.0%} of a core), "
            "so timings include time on the client")


class _Limit:
    """A phase's share of the caps: how many requests, until when."""

    def __init__(self, requests, until):
        self.left = requests
        self.until = until

    def allows(self, at):
        return self.left > 0 and at < self.until

    def take(self):
        self.left -= 1
