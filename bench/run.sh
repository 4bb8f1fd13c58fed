#!/usr/bin/env bash
# make bench: every benchmark, one after another, each writing its numbers
# into bench/RESULTS.md (raw outputs under bench/results/).
#   1. gateway overhead vs the shared harness (bench/gateway.sh)
#   2. probe scheduling: Celery worker with 200 targets, embedded with 100 (bench/probes.py; needs Redis)
#   3. dashboard live path: probe recorded -> WebSocket client, 100 clients on one Daphne (bench/dashboard_ws.py)
#   4. memory soak: RSS growth per million requests through one gateway worker (bench/soak.sh; SOAK=long for 5 min)
#   5. rollout verdicts: the analysis and the controller's decisions vs a Flagger-style rule on realistic
#      simulated streams (bench/rollout_verdicts.py; 400 rollouts per case, about an hour of one core;
#      ROLLOUTS_FAST=1 runs 60)
#   6. the 16-fault scorecard of issue 9 on the default settings (bench/faults.py, about two minutes)
#   7. alert delivery: enqueue -> signed webhook on loopback, 200 notifications paced and in a burst
#      (bench/alert_delivery.py, embedded mode, ~30 s)
#   8. alert rules: 1,000 mixed rules over 200 deployments' rollups, one tick on one worker (bench/alert_rules.py)
#   9. alert latency end to end: a deployment down in the simulator -> the webhook, 20 trials on the embedded
#      scheduler, once with 1 s alert ticks and once with the default 5 s (bench/alert_latency.py, ~3 min)
# SKIP="gateway probes dashboard soak rollouts faults alerts" skips parts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
SKIP=${SKIP:-}
mkdir -p "$ROOT/bench/results"
stamp=$(date +%Y%m%d-%H%M%S)

if [[ $SKIP != *gateway* ]]; then
  bash "$ROOT/bench/gateway.sh"
fi
if [[ $SKIP != *probes* ]]; then
  "$PY" "$ROOT/bench/probes.py"
  "$PY" "$ROOT/bench/write_sections.py" probes "$(ls -t "$ROOT"/bench/results/probes-*.json | head -1)" "$ROOT/bench/RESULTS.md"
fi
if [[ $SKIP != *dashboard* ]]; then
  "$PY" "$ROOT/bench/dashboard_ws.py" --clients 100 --duration 60 --out "$ROOT/bench/results/dashboard-$stamp.json"
  "$PY" "$ROOT/bench/write_sections.py" dashboard "$ROOT/bench/results/dashboard-$stamp.json" "$ROOT/bench/RESULTS.md"
fi
if [[ $SKIP != *soak* ]]; then
  bash "$ROOT/bench/soak.sh" ${SOAK:+--$SOAK}
fi
if [[ $SKIP != *rollouts* ]]; then
  size=(--rollouts 400); [[ ${ROLLOUTS_FAST:-0} == 1 ]] && size=(--rollouts 60)
  "$PY" "$ROOT/bench/rollout_verdicts.py" "${size[@]}" --out "$ROOT/bench/results/rollouts-$stamp.json"
  "$PY" "$ROOT/bench/write_sections.py" rollouts "$ROOT/bench/results/rollouts-$stamp.json" "$ROOT/bench/RESULTS.md"
fi
if [[ $SKIP != *faults* ]]; then
  "$PY" "$ROOT/bench/faults.py" --results "$ROOT/bench/RESULTS.md"
fi
if [[ $SKIP != *alerts* ]]; then
  "$PY" "$ROOT/bench/alert_delivery.py" --out "$ROOT/bench/results/alerts-$stamp.json" > /dev/null
  "$PY" "$ROOT/bench/alert_rules.py" --write-results
  "$PY" "$ROOT/bench/alert_latency.py" --tick 1 --out "$ROOT/bench/results/alert-latency-1s-$stamp.json" > /dev/null
  "$PY" "$ROOT/bench/alert_latency.py" --tick 5 --write-results \
    --out "$ROOT/bench/results/alert-latency-5s-$stamp.json" > /dev/null
fi
echo "bench/RESULTS.md updated"
