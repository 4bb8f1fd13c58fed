"""Gentle, steady demo traffic through the gateway, so a fresh `make run` has live
figures on the routes page and a rehearsed rollout has real traffic to judge.

Poisson arrivals at `rps` (a couple a second), every other request streamed, sent
with the load-test client; the gateway records them like any other traffic. Unlike
a load test it has no caps: it runs until `stop()`, never more than MAX_IN_FLIGHT
requests at once, and waits quietly while the gateway is not up yet.
"""

import asyncio
import logging
import threading

from probes.loadtest import jobs, plans, profiles, prompts
from probes.loadtest.client import Sender
from routing import audit
from routing.models import AuditAction, GatewayKey, Route

log = logging.getLogger(__name__)

KEY_NAME = "demo traffic (serve)"
MAX_IN_FLIGHT = 20
MAX_TOKENS = 48


def demo_key(route_name):
    """Return a fresh plaintext for the demo-traffic gateway key (limited to the route), made or renewed, audited."""
    route = Route.objects.get(name=route_name)
    key = GatewayKey.objects.filter(name=KEY_NAME).first() or GatewayKey(name=KEY_NAME, all_routes=False)
    before = audit.snapshot(key) if key.pk else None
    secret = key.generate()
    key.enabled = True
    key.save()
    key.routes.set([route])
    audit.record(action=AuditAction.UPDATE if before else AuditAction.CREATE, obj=key, actor="command:serve",
                 before=before, after=audit.snapshot(key), reason="demo traffic key for this run of serve")
    return secret


class DemoTraffic:
    def __init__(self, gateway_url, route_name, secret, rps=2.0, seed=None):
        self.settings = {"route": route_name}
        self.gateway_url = gateway_url
        self.secret = secret
        self.rps = rps
        self.seed = seed
        self.sent = 0
        self._loop = asyncio.new_event_loop()
        self._stopped = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        name="demo-traffic", daemon=True)

    def start(self):
        target = plans.route_target(self.settings, self.gateway_url, self.secret)  # reads prices: before the loop
        self._target = target
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        if self._stopped is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout)

    async def _main(self):
        self._stopped = asyncio.Event()
        try:
            await jobs.wait_for_key(self.gateway_url, self.secret, timeout_s=120)
        except jobs.KeyNotReady:
            log.warning("demo traffic: the gateway never accepted its key; no demo traffic")
            return
        async with Sender(self._target, MAX_TOKENS, stream=True, timeout_s=30) as streamed, \
                Sender(self._target, MAX_TOKENS, stream=False, timeout_s=30) as plain:
            await self._send_forever((streamed, plain))

    async def _send_forever(self, senders):
        asked = prompts.builtin()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for at in profiles.poisson_arrivals(self.rps, self.seed, start):
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout=max(at - loop.time(), 0))
                return
            except TimeoutError:
                pass
            if slots.locked():
                continue  # the gateway is slow: skip rather than pile up
            await slots.acquire()
            sender = senders[self.sent % 2]
            task = asyncio.create_task(sender.send(asked[self.sent % len(asked)]))
            task.add_done_callback(lambda _: slots.release())
            self.sent += 1
