"""Staged rollouts: a canary moved step by step onto a route, judged by sequential statistics.

`analysis` and `sequential` are pure functions over per-arm figures; `models`
holds a rollout, its transitions and verdicts; `controller` ticks it (claim,
read the route's rollups, judge, move weights through routing.weights).
"""
