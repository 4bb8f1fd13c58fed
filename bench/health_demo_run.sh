#!/usr/bin/env bash
# A real run of the embedded demo (in-process probes against the built-in simulator) for DURATION
# seconds, then the health Events per deployment: how often each simulated deployment changed state.
#   bash bench/health_demo_run.sh [data dir] [port] [simulator port] [duration s, 0: report on an earlier run]
# Demo traffic is off (it does not feed health, and the machine is shared); probes run at the default cadence.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-var/health-run}
PORT=${2:-8611}
SIMPORT=${3:-8612}
DURATION=${4:-1800}
PY=.venv/bin/python
mkdir -p "$DIR"
export DEBUG=true WEATHERVANE_DATA_DIR="$DIR" WEATHERVANE_SIMULATOR_PORT="$SIMPORT"
unset DATABASE_URL REDIS_URL
if [[ $DURATION != 0 ]]; then  # 0: only the report, of an earlier run in DIR
  $PY manage.py migrate --noinput >/dev/null
  $PY manage.py seed_demo --server-url "http://127.0.0.1:$PORT" >/dev/null
  echo "serving on $PORT for $DURATION s from $(date -u +%H:%M:%S)"
  timeout --signal=INT "$DURATION" $PY manage.py serve --host 127.0.0.1 --port "$PORT" --no-demo-traffic \
    >"$DIR/serve.log" 2>&1 || true
fi
$PY manage.py shell -c '
from collections import Counter
from probes.models import ProbeResult, ProbeTarget
from routing.models import Event, EventKind
events = Event.objects.filter(kind=EventKind.HEALTH).order_by("created_at")
changes = Counter(e.deployment.name for e in events)
for target in ProbeTarget.objects.select_related("deployment"):
    results = ProbeResult.objects.filter(target=target)
    failed = results.exclude(outcome="ok").count()
    name = target.deployment.name
    print(f"{name:12} probes {results.count():4}  failed {failed:3}  health events {changes[name]:3}  now {target.health}")
for e in events:
    src, dst, why = e.data.get("from"), e.data.get("to"), e.data.get("reason")
    print(f"  {e.created_at:%H:%M:%S} {e.deployment.name:12} {src} -> {dst}: {why}")
'
