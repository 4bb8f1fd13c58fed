"""What one gateway process knows about provider keys beyond its config snapshot.

The snapshot says which keys exist and what the database last said of them.
Between snapshots, this process may learn more on its own: an upstream
refused a key once (suspect) or twice (invalid), or asked it to wait (cooling
after a 429). `KeyRing` keeps those marks, rotates round-robin over a
provider's keys, and reports every change to the recorder, which saves it
through `ApiKey.change_state` / `ApiKey.suspect` off the hot path. A mark is
forgotten once the database has caught up with it; a suspicion saved there
(`KeyInfo.suspect`) is confirmed by a 401 in any process, and cleared by the
probe that re-checks the key at once.
"""

import math
import time

from routing.gateway import selection
from routing.models import KeyState


class KeyRing:
    """Key marks and round-robin cursors of one gateway process (used on its event loop)."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.cursor = {}  # provider id -> index of the next key to offer
        self.blocked = {}  # key id -> (blocked until epoch, marked at epoch); inf = invalid
        self.recovered = set()  # keys reported answering again since the last snapshot
        self.trusted = set()  # suspect keys reported answering since the last snapshot
        self.suspects = {}  # key id -> (request id of the first 401, epoch): suspect until another request confirms

    def usable(self, key, now):
        """Return True when neither the snapshot nor this process holds the key back at `now`."""
        if key.blocked_until > now:
            return False
        mark = self.blocked.get(key.id)
        return mark is None or mark[0] <= now

    def cooling_left(self, key, now):
        """Return the seconds the key still cools (a 429's wait), or None when it is not cooling."""
        until = max(key.blocked_until, self.blocked.get(key.id, (0.0,))[0])
        return until - now if now < until < math.inf else None

    def rotation(self, target):
        """Yield (position, key) over the target's keys, round-robin from where the last request left off."""
        start = self.cursor.get(target.provider_id, 0)
        for step, key in enumerate(selection.rotation(target.keys, start)):
            yield start + step, key

    def take(self, target, position):
        """Note that the key at `position` of the rotation was chosen: the next request starts after it."""
        self.cursor[target.provider_id] = position + 1

    def refused(self, key, request_id, reason, may_confirm=True):
        """Note a 401 for `key` on request `request_id`; return True when this confirmed the key invalid.

        One 401 makes a key suspect (the request moves on to another key); a
        401 on another request confirms it, whether this process saw the
        first one or the database says so. `may_confirm` is False once the
        request has confirmed a key already: one request never disables two.
        """
        first = self.suspects.get(key.id)
        earlier = first[0] != request_id if first is not None else key.suspect
        if not earlier or not may_confirm:
            if first is None and not key.suspect:
                self.suspects[key.id] = (request_id, time.time())
                self.recorder.key_suspect(key, reason)
            return False
        self.suspects.pop(key.id, None)
        self.mark_invalid(key, f"{reason} (refused on two requests)")
        return True

    def mark_invalid(self, key, reason):
        if self.blocked.get(key.id, (0,))[0] != math.inf:
            self.blocked[key.id] = (math.inf, time.time())
            self.recorder.key_invalid(key, reason)

    def cool(self, key, seconds, reason):
        now = time.time()
        until = now + seconds
        current = self.blocked.get(key.id)
        if current is None or current[0] < until - 1:
            self.blocked[key.id] = (until, now)
            self.recorder.key_cooling(key, until, reason)

    def answered(self, key):
        """Note a success with the key: one the snapshot has as rate-limited is active again, a suspect one trusted."""
        if self.suspects:
            self.suspects.pop(key.id, None)
        if key.suspect and key.id not in self.trusted:
            self.trusted.add(key.id)
            self.recorder.key_trusted(key)
        if key.state == KeyState.RATE_LIMITED and key.id not in self.recovered:
            self.recovered.add(key.id)
            self.recorder.key_recovered(key)

    def adopt(self, snapshot):
        """Forget the marks the database has caught up with (or that expired); runs in the refresher thread."""
        now = time.time()
        for key_id, (until, marked) in list(self.blocked.items()):
            info = snapshot.keys.get(key_id)
            if info is None or info.updated > marked or until <= now:
                self.blocked.pop(key_id, None)
        for key_id, (_, marked) in list(self.suspects.items()):  # saved as suspect, or cleared by a probe since
            info = snapshot.keys.get(key_id)
            if info is None or info.updated > marked:
                self.suspects.pop(key_id, None)
        self.recovered.clear()
        self.trusted.clear()
