"""Noticing a client that hung up, for the whole of a proxied request.

Once the request body is in, `receive()` only ever reports `http.disconnect`
(under Daphne when the client's connection is lost; under uvicorn also once
the response is complete). Nothing else reads it, so without a watcher a
client that leaves a slow answer is noticed by nobody: Daphne cancels the
request about 10 s later and that cancellation looked like the deployment's
timeout. `ClientWatch` reads `receive()` from WATCH_AFTER_S on and cancels
the request's task when the client has gone; the gateway books that as the
client's (`Outcome.CLIENT_CLOSED`), never against the deployment.
"""

import asyncio

# Watching costs a task per request (about 15 µs of CPU on this kind of machine, measured) but a timer only
# ~1 µs: most answers of a busy gateway come sooner, and a disconnect that came meanwhile is still reported
# (Daphne queues it, uvicorn keeps the flag), so it is noticed at most this late.
WATCH_AFTER_S = 0.25


class ClientWatch:
    """Cancels the current task when the client disconnects; `stop()` it before the response's last byte is
    followed by any await (then receive() reports a disconnect that is none)."""

    __slots__ = ("receive", "call", "task", "timer", "watcher")

    def __init__(self, receive, call, after_s=WATCH_AFTER_S):
        self.receive, self.call = receive, call
        self.task = asyncio.current_task()
        self.watcher = None
        self.timer = asyncio.get_running_loop().call_later(after_s, self._start)

    def _start(self):
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self):
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.call.client_gone = True
        self.task.cancel()

    def stop(self):
        """Stop watching (idempotent)."""
        self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()

    def cancelled_the_task(self):
        """Return True when this watch cancelled the task (then the cancellation is consumed, see uncancel)."""
        return self.call.client_gone and self.task.uncancel() == 0
