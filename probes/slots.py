"""Slot arithmetic: when each target is due, as pure functions.

A slot is the due time of one probe in epoch milliseconds. Each target gets a
fixed offset inside its interval (from its id), so 200 targets with a 10 s
interval start 50 ms apart instead of all at once, and every dispatcher, beat
or embedded scheduler computes the same slots without talking to the others.
"""

import math

SPREAD_PRIME = 2_654_435_761  # Knuth's multiplicative hash: neighbouring ids land far apart


def offset_ms(target_id, interval_ms):
    """Return the target's fixed offset inside its interval, in ms."""
    return (target_id * SPREAD_PRIME) % interval_ms


def slot_at_or_after(target_id, interval_s, when_ms):
    """Return the first slot of the target due at or after `when_ms`."""
    interval_ms = int(interval_s * 1000)
    offset = offset_ms(target_id, interval_ms)
    cycles = math.ceil((when_ms - offset) / interval_ms)
    return cycles * interval_ms + offset


def slots_between(target_id, interval_s, start_ms, end_ms):
    """Return the target's slots due in [start_ms, end_ms), oldest first."""
    slots = []
    slot = slot_at_or_after(target_id, interval_s, start_ms)
    while slot < end_ms:
        slots.append(slot)
        slot += int(interval_s * 1000)
    return slots
