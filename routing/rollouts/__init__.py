"""Staged rollouts: a canary moved step by step onto a route, judged by sequential statistics.

For now only the analysis (`analysis`, `sequential`): pure functions over the
per-arm figures of a window of rollups, no models yet.
"""
