#!/usr/bin/env bash
# Memory soak (make bench; `bench/soak.sh --long` for the 5-minute version):
# one gateway worker at c=50 against the shared mock upstream, its resident
# memory and request count sampled every few seconds (bench/soak_sample.py),
# reported as RSS growth per million requests after warm-up. Goal: < 1 MB.
# Knobs (env): DURATION (60, or 300 with --long), CONC (50), MOCK_PORT (18100),
# GATEWAY_PORT (18180), RESULTS (bench/RESULTS.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
PY=$ROOT/.venv/bin/python
BENCH_PY=${BENCH_VENV:-/tmp/peers/bench-venv}/bin/python
MOCK_PORT=${MOCK_PORT:-18100}
GATEWAY_PORT=${GATEWAY_PORT:-18180}
DURATION=${DURATION:-60}
[[ ${1:-} == --long ]] && DURATION=${LONG_DURATION:-300}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench/results/soak-$STAMP.json
mkdir -p "$ROOT/bench/results"
# shellcheck source=/dev/null
. "$SHARED/lib.sh"
trap stop_all EXIT INT TERM
[[ -x $BENCH_PY ]] && command -v wrk >/dev/null || bash "$SHARED/setup.sh"

DATA_DIR=$(mktemp -d /tmp/weathervane-soak.XXXXXX)
export WEATHERVANE_DATA_DIR=$DATA_DIR WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS=true WEATHERVANE_LOG_LEVEL=WARNING
export WEATHERVANE_METRICS_TOKEN=${WEATHERVANE_METRICS_TOKEN:-soak-$STAMP}  # the sampler scrapes /metrics with it
unset DATABASE_URL REDIS_URL CELERY_BROKER_URL
UP=$(start_bg soak-mock "$BENCH_PY" "$SHARED/mock_upstream.py" --port "$MOCK_PORT" --name mock)
wait_http "http://127.0.0.1:$MOCK_PORT/health" 30 "$UP"
KEY=$("$PY" "$ROOT/bench/seed_gateway.py" --upstream "http://127.0.0.1:$MOCK_PORT/v1" | tail -1)
GW=$(start_bg soak-gateway "$PY" "$ROOT/manage.py" gateway --port "$GATEWAY_PORT" --workers 1 --log-level warning)
wait_http "http://127.0.0.1:$GATEWAY_PORT/v1/models" 30 "$GW" "Bearer $KEY"

BENCH_MODEL=bench-model BENCH_AUTH="Bearer $KEY" \
  wrk -t1 -c"${CONC:-50}" -d"${DURATION}s" -s "$SHARED/chat.lua" "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions" \
  >"$DATA_DIR/wrk.txt" 2>&1 &
WRK=$!
"$PY" "$ROOT/bench/soak_sample.py" --pid "$GW" --metrics "http://127.0.0.1:$GATEWAY_PORT/metrics" \
  --metrics-token "$WEATHERVANE_METRICS_TOKEN" \
  --duration "$DURATION" --concurrency "${CONC:-50}" --out "$OUT"
wait "$WRK" || true
stop_all
rm -rf "$DATA_DIR"
"$PY" "$ROOT/bench/write_sections.py" soak "$OUT" "${RESULTS:-$ROOT/bench/RESULTS.md}"
log "soak results: $OUT"
