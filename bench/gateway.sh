#!/usr/bin/env bash
# Gateway overhead benchmark (make bench): the shared mock upstream (or the
# built-in simulator), the standalone gateway with 1 worker in front of it
# (auth, routing, limits and recording all on), the shared harness
# ../shared/bench/gateway_overhead.py, then bench/RESULTS.md.
#
# Knobs (env): UPSTREAM (mock | sim; default mock, the upstream of the LiteLLM
# baseline), DURATION (10), STREAM_DURATION (10), WARMUP (3), CONC ("1,10,50"),
# STREAM_CONC ("1,10"), MOCK_PORT (18100), GATEWAY_PORT (18180), OUT
# (bench/results/<time>), RESULTS (bench/RESULTS.md), NOTE, FLOOR (1 by default: also measure the shared
# bare pass-through proxy in the same run, into $OUT/pair-N/floor, because this
# 2-core machine's speed varies with what else runs on it; FLOOR=0 skips it),
# PAIRS (3: gateway, floor, gateway, floor, ... alternate; the report gives the
# median gateway/floor ratio with its spread).
# Everything started here is stopped by PID on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
PY=$ROOT/.venv/bin/python
BENCH_PY=${BENCH_VENV:-/tmp/peers/bench-venv}/bin/python
UPSTREAM=${UPSTREAM:-mock}
MOCK_PORT=${MOCK_PORT:-18100}
GATEWAY_PORT=${GATEWAY_PORT:-18180}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/$STAMP}
# shellcheck source=/dev/null
. "$SHARED/lib.sh"
trap stop_all EXIT INT TERM

[[ -x $BENCH_PY ]] && command -v wrk >/dev/null || bash "$SHARED/setup.sh"
for port in "$MOCK_PORT" "$GATEWAY_PORT"; do
  port_free "$port" || { log "port $port is busy; set MOCK_PORT / GATEWAY_PORT"; exit 1; }
done

DATA_DIR=$(mktemp -d /tmp/weathervane-bench.XXXXXX)
export WEATHERVANE_DATA_DIR=$DATA_DIR WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS=true WEATHERVANE_LOG_LEVEL=WARNING
unset DATABASE_URL REDIS_URL CELERY_BROKER_URL

if [[ $UPSTREAM == sim ]]; then
  echo '{"bench-model": {"base": "fast"}}' >"$DATA_DIR/sim.json"
  UP=$(start_bg bench-sim "$PY" "$ROOT/manage.py" simulate --port "$MOCK_PORT" --config "$DATA_DIR/sim.json")
else
  UP=$(start_bg bench-mock "$BENCH_PY" "$SHARED/mock_upstream.py" --port "$MOCK_PORT" --name mock)
fi
wait_http "http://127.0.0.1:$MOCK_PORT/health" 30 "$UP"

KEY=$("$PY" "$ROOT/bench/seed_gateway.py" --upstream "http://127.0.0.1:$MOCK_PORT/v1" | tail -1)

measure() {  # measure LABEL PID AUTH OUTDIR NOTE [MODEL]
  "$BENCH_PY" "$SHARED/gateway_overhead.py" \
    --direct-url "http://127.0.0.1:$MOCK_PORT" --direct-auth "Bearer sk-mock" \
    --gateway-url "http://127.0.0.1:$GATEWAY_PORT" ${6:+--gateway-model "$6"} --gateway-auth "$3" \
    --gateway-pid "$2" --direct-pid "$UP" --label "$1" --out-dir "$4" \
    --concurrency "${CONC:-1,10,50}" --stream-concurrency "${STREAM_CONC:-1,10}" \
    --duration "${DURATION:-10}" --stream-duration "${STREAM_DURATION:-10}" --warmup "${WARMUP:-3}" \
    --python "$BENCH_PY" --note "$5"
}

# Gateway and floor alternate (PAIRS times, at least 3 by default), so a slow
# spell of this shared machine hits both sides of a ratio rather than one.
for pair in $(seq 1 "${PAIRS:-3}"); do
  GW=$(start_bg bench-gateway "$PY" "$ROOT/manage.py" gateway --port "$GATEWAY_PORT" --workers 1 --log-level warning)
  wait_http "http://127.0.0.1:$GATEWAY_PORT/v1/models" 30 "$GW" "Bearer $KEY"
  measure weathervane "$GW" "Bearer $KEY" "$OUT/pair-$pair" \
    "${NOTE:-upstream=$UPSTREAM, 1 worker, auth+routing+limits+recording on}, pair $pair" bench-model
  stop_named bench-gateway
  if [[ ${FLOOR:-1} == 1 ]]; then
    FL=$(start_bg bench-floor "$BENCH_PY" "$ROOT/bench/run_floor.py" "$SHARED/floor" "$GATEWAY_PORT" "$MOCK_PORT")
    sleep 2
    measure floor "$FL" "" "$OUT/pair-$pair/floor" "bare aiohttp pass-through, pair $pair"
    stop_named bench-floor
  fi
done
stop_all
rm -rf "$DATA_DIR"
"$PY" "$ROOT/bench/write_results.py" "$OUT" "${RESULTS:-$ROOT/bench/RESULTS.md}"
log "results: $OUT; table: ${RESULTS:-bench/RESULTS.md}"
