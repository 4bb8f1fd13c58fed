"""The dashboard's WebSocket: relays live events to signed-in staff and viewers.

Messages are coalesced and flushed at most every FLUSH_INTERVAL_S as one
`{"type": "batch", "messages": [...], "dropped": n}` frame, so a busy target
cannot flood a browser; a weights change is flushed at once.
"""

import asyncio
import itertools
from collections import OrderedDict

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard import live
from routing.api.permissions import is_viewer

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class LiveConsumer(AsyncJsonWebsocketConsumer):
    FLUSH_INTERVAL_S = 0.25
    MAX_PENDING = 500  # beyond this the oldest messages are dropped and the browser told to backfill

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(is_viewer)(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.pending = OrderedDict()
        self.dropped = 0
        self.flush_task = None
        self.sequence = itertools.count()
        # Channels discards self.groups on disconnect.
        self.groups = [live.GROUP_ALL, live.user_group(user.pk)]
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        live.bind_loop(asyncio.get_running_loop())
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "flush_task", None) is not None:
            self.flush_task.cancel()

    async def receive_json(self, content, **kwargs):
        pass  # the browser only listens

    # --- Relayed message types -------------------------------------------------

    async def probe_result(self, event):
        self._queue(event)

    async def traffic_point(self, event):
        payload = event.get("payload") or {}
        # A newer figure for the same deployment, route and minute replaces the older one.
        self._queue(event, key=("traffic", payload.get("deployment"), payload.get("route"), payload.get("minute")))

    async def health_changed(self, event):
        self._queue(event)

    async def timeline_event(self, event):
        self._queue(event)

    async def weights_changed(self, event):
        self._queue(event)
        await self._flush()  # every browser must show a new split within a second

    async def rollout_changed(self, event):
        self._queue(event)

    async def session_logout(self, event):
        await self.close(code=CLOSE_UNAUTHENTICATED)

    # --- Batching --------------------------------------------------------------

    def _queue(self, event, key=None):
        key = key if key is not None else next(self.sequence)
        self.pending.pop(key, None)
        self.pending[key] = {"type": event["type"], "payload": event.get("payload")}
        if len(self.pending) > self.MAX_PENDING:
            self.pending.popitem(last=False)
            self.dropped += 1
        if self.flush_task is None:
            self.flush_task = asyncio.create_task(self._flush_later())

    async def _flush_later(self):
        await asyncio.sleep(self.FLUSH_INTERVAL_S)
        self.flush_task = None
        await self._flush()

    async def _flush(self):
        if self.flush_task is not None and self.flush_task is not asyncio.current_task():
            self.flush_task.cancel()
            self.flush_task = None
        if not self.pending:
            return
        messages, dropped = list(self.pending.values()), self.dropped
        self.pending.clear()
        self.dropped = 0
        await self.send_json({"type": "batch", "messages": messages, "dropped": dropped})
