"""The defaults a new installation starts with: the inhibit rule (a migration seeds it), and the rules and the
catch-all policy the demo seeds (`seed_demo`). Plain data, so the migration does not import models."""

PROVIDER_DOWN_INHIBITS = {
    "name": "provider down mutes its deployments and keys",
    "source_matchers": [{"name": "kind", "op": "=", "value": "provider_down"}],
    "target_matchers": [{"name": "kind", "op": "!=", "value": "provider_down"}],
    "equal": ["provider"],
}

RULES = [
    {"name": "provider down", "kind": "provider_down", "params": {}, "for_s": 60, "severity": "critical"},
    {"name": "deployment down", "kind": "deployment_health", "params": {"states": ["down"]}, "for_s": 60,
     "severity": "critical"},
    {"name": "deployment degraded", "kind": "deployment_health", "params": {"states": ["degraded"]}, "for_s": 300,
     "severity": "warning"},
    {"name": "circuit open", "kind": "circuit_open", "params": {}, "for_s": 0, "severity": "warning"},
    {"name": "key invalid", "kind": "key_state", "params": {"states": ["invalid"]}, "for_s": 0,
     "severity": "critical"},
    {"name": "key rate-limited", "kind": "key_state", "params": {"states": ["rate_limited"]}, "for_s": 120,
     "severity": "info"},
    {"name": "rollout needs attention", "kind": "rollout",
     "params": {"states": ["preflight_failed", "awaiting_approval", "rolled_back", "canary_incident"], "hold_s": 3600},
     "for_s": 0,
     "severity": "warning"},
    {"name": "rollout paused or stuck", "kind": "rollout", "params": {"states": ["paused", "stuck"]}, "for_s": 0,
     "severity": "warning"},
    {"name": "rollout promoted", "kind": "rollout", "params": {"states": ["promoted"], "hold_s": 600}, "for_s": 0,
     "severity": "info"},
    {"name": "probe budget spent", "kind": "probe_budget", "params": {}, "for_s": 0, "severity": "info"},
    {"name": "probes silent", "kind": "no_data", "params": {"intervals": 3}, "for_s": 0, "severity": "warning"},
    {"name": "slow first token", "kind": "ttft_p95", "params": {"threshold_ms": 2000, "window_s": 300},
     "for_s": 300, "severity": "warning"},
    {"name": "route deployment error rate", "kind": "error_rate",
     "params": {"threshold": 0.05, "window_s": 600, "min_count": 20, "scope": "route"}, "for_s": 0,
     "severity": "critical"},
]

POLICY = {"name": "everything", "order": 1000, "matchers": [], "severities": [],
          "group_by": ["alertname", "provider", "route"], "group_wait_s": 30, "group_interval_s": 300,
          "repeat_interval_s": 4 * 3600}
