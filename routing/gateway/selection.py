"""Pure target and key choice.

Targets are anything with `.weight` and `.deployment` (a unique name).
Without a session the choice is weighted random; with a session id it is
weighted rendezvous hashing: the session keeps its target while the weights
stay the same, and when they change only the sessions that must move do.
"""

import hashlib
import math
from bisect import bisect_right
from itertools import accumulate

HASH_SCALE = float(1 << 64)


def cumulative(weights):
    """Return the running totals of `weights` (for `pick_weighted`)."""
    return tuple(accumulate(weights))


def pick_weighted(targets, totals, rng):
    """Return one of `targets` with probability weight / sum, or None when all weights are 0.

    `totals` is `cumulative` of their weights; a weight of 0 is never chosen.
    """
    if not targets or totals[-1] <= 0:
        return None
    return targets[bisect_right(totals, rng.random() * totals[-1])]


def choose(targets, rng):
    """Return one of `targets` by weight (weights > 0 only), or None."""
    live = [t for t in targets if t.weight > 0]
    if not live:
        return None
    return pick_weighted(live, cumulative(t.weight for t in live), rng)


def _unit_hash(session, name):
    digest = hashlib.blake2b(f"{session}\x00{name}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / HASH_SCALE  # strictly inside (0, 1)


def rendezvous_score(session, target):
    """Return the weighted rendezvous score of `target` for `session` (highest wins).

    -w / ln(u) with u uniform in (0, 1) picks each target with probability
    proportional to its weight over many sessions.
    """
    return -target.weight / math.log(_unit_hash(session, target.deployment))


def sticky_choice(targets, session):
    """Return the target `session` sticks to among `targets` (weights > 0 only), or None."""
    best, best_score = None, 0.0
    for target in targets:
        if target.weight > 0:
            score = rendezvous_score(session, target)
            if score > best_score:
                best, best_score = target, score
    return best


def rotation(keys, cursor):
    """Return `keys` in round-robin order starting at position `cursor` (any integer)."""
    count = len(keys)
    if count <= 1:
        return keys
    start = cursor % count
    return keys[start:] + keys[:start]
