"""The dashboard's WebSocket: relays live events to signed-in staff and viewers.

Messages are coalesced and flushed at most every FLUSH_INTERVAL_S as one
`{"type": "batch", "messages": [...], "dropped": n}` frame, so a busy target
cannot flood a browser; a weights change is flushed at once.

A socket follows its user's rights and its session: both are checked again at
most every RIGHTS_RECHECK_S (and at once when live.rights_changed says so, as
on every save of the user), and the socket is closed when the user is
deactivated or loses the viewer role, or when its session no longer signs them
in (deleted, expired, or ended by a password change), as the next page load
would find. Group
memberships expire in the channel layer (`group_expiry`), so a long-open socket
rejoins its groups well before that; if a rejoin came too late (or failed),
the next frame reports `dropped` so the page backfills as on a reconnect.
"""

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user

from dashboard import live
from dashboard.roles import is_viewer

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
DEFAULT_GROUP_EXPIRY_S = 86400  # channels' default for both layers


def session_user(session_key):
    """Return the user the session `session_key` signs in now, as an HTTP request with it would see them:
    AnonymousUser once the session is deleted or expired, the user inactive, or their password changed."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return get_user(SimpleNamespace(session=store))


def rights_close_code(user_id, session_key):
    """Return None if the user may still watch the dashboard through this session, else the close code to end
    their socket with."""
    user = session_user(session_key)
    if user.pk != user_id:
        return CLOSE_UNAUTHENTICATED
    return None if is_viewer(user) else CLOSE_FORBIDDEN


class LiveConsumer(AsyncJsonWebsocketConsumer):
    FLUSH_INTERVAL_S = 0.25
    MAX_PENDING = 500  # beyond this the oldest messages are dropped and the browser told to backfill
    RIGHTS_RECHECK_S = 30.0
    REJOIN_SHARE = 0.25  # rejoin the groups after this share of the layer's group_expiry

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
        await self._join_groups()
        live.bind_loop(asyncio.get_running_loop())
        await self.accept()
        self.watch_task = asyncio.create_task(self._watch())

    async def disconnect(self, code):
        for name in ("flush_task", "watch_task"):
            task = getattr(self, name, None)
            if task is not None:
                task.cancel()

    # --- Rights and group membership -------------------------------------------

    def group_expiry_s(self):
        return getattr(self.channel_layer, "group_expiry", None) or DEFAULT_GROUP_EXPIRY_S

    async def _join_groups(self):
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.joined_at = time.monotonic()

    async def _watch(self):
        """Re-check the user's rights and refresh group membership until the socket closes."""
        rights_checked_at = time.monotonic()
        while True:
            rejoin_at = self.joined_at + self.group_expiry_s() * self.REJOIN_SHARE
            await asyncio.sleep(max(0.05, min(rights_checked_at + self.RIGHTS_RECHECK_S, rejoin_at) - time.monotonic()))
            if time.monotonic() >= rights_checked_at + self.RIGHTS_RECHECK_S:
                rights_checked_at = time.monotonic()
                if not await self._still_allowed():
                    return
            if time.monotonic() >= rejoin_at:
                await self._rejoin()

    async def _still_allowed(self):
        """Close the socket and return False when its user may no longer watch."""
        session = self.scope.get("session")
        session_key = session.session_key if session is not None else None
        code = await database_sync_to_async(rights_close_code)(self.scope["user"].pk, session_key)
        if code is None:
            return True
        self.closing = True
        self.pending.clear()
        await self.close(code=code)
        return False

    async def _rejoin(self):
        lapsed = time.monotonic() - self.joined_at >= self.group_expiry_s()
        try:
            await self._join_groups()
        except Exception:  # e.g. Redis briefly away: try again soon, and have the page backfill then
            log.warning("live socket could not rejoin its groups", exc_info=True)
            self.joined_at = time.monotonic() - self.group_expiry_s()
            return
        if lapsed:  # messages may have been missed while the membership had expired
            self.dropped += 1
            await self._flush()

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

    async def loadtest_progress(self, event):
        # Only a run's latest progress matters.
        self._queue(event, key=("loadtest", (event.get("payload") or {}).get("run")))

    async def weights_changed(self, event):
        self._queue(event)
        await self._flush()  # every browser must show a new split within a second

    async def rollout_changed(self, event):
        self._queue(event)

    async def alerts_changed(self, event):
        self._queue(event, key=("alerts",))  # only the latest counts matter

    async def session_logout(self, event):
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def rights_changed(self, event):
        await self._still_allowed()

    # --- Batching --------------------------------------------------------------

    def _queue(self, event, key=None):
        if getattr(self, "closing", False):
            return
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
        if not self.pending and not self.dropped:
            return
        messages, dropped = list(self.pending.values()), self.dropped
        self.pending.clear()
        self.dropped = 0
        await self.send_json({"type": "batch", "messages": messages, "dropped": dropped})
