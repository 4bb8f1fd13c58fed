#!/usr/bin/env bash
# A/B of the gateway's hot path: the gateway at BASE (a git revision) and at this checkout, alternating in one
# sitting in front of the same mock upstream, so the machine's mood hits both alike. Each round runs
# bench/gateway.sh once per side (no floor, c=50 and streams at c=10) and prints req/s, streams/s and CPU per
# request of each side.
#
#   bash bench/gateway_ab.sh <BASE> [ROUNDS]      e.g. bash bench/gateway_ab.sh d6065c2 3
#
# BASE is checked out in a throwaway git worktree (it shares this checkout's .venv); nothing is written to
# bench/RESULTS.md (put the figures there by hand, with the command).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${1:?usage: bench/gateway_ab.sh <base revision> [rounds]}
ROUNDS=${2:-3}
WORK=$(mktemp -d /tmp/weathervane-ab.XXXXXX)
git -C "$ROOT" worktree add -q --detach "$WORK/base" "$BASE"
ln -s "$ROOT/.venv" "$WORK/base/.venv"
cleanup() { git -C "$ROOT" worktree remove --force "$WORK/base" || true; }
trap cleanup EXIT
figures() {  # the c=50 line and the c=10 stream line of one gateway.sh log
  local rps streams cpu
  rps=$(grep -A1 'gateway c=50' "$1" | tail -1 | sed -E 's/.*-> ([0-9]+) rps.*/\1/')
  cpu=$(grep -A1 'gateway c=50' "$1" | tail -1 | sed -E 's/.*cpu ([0-9.]+) ms\/req.*/\1/')
  streams=$(grep -A1 'stream gateway c=10' "$1" | tail -1 | sed -E 's/.*-> ([0-9]+) streams\/s.*/\1/')
  echo "$rps req/s, $streams streams/s, $cpu ms CPU/req"
}
echo "| round | side | c=50 req/s, c=10 streams/s, CPU per request |"
echo "|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for side in base main; do
    dir=$ROOT; [[ $side == base ]] && dir=$WORK/base
    (cd "$dir" && FLOOR=0 PAIRS=1 CONC=50 STREAM_CONC=10 DURATION=8 WARMUP=3 RESULTS=$WORK/$side.md \
      OUT=$WORK/$side-$round SHARED_BENCH=$ROOT/../shared/bench bash bench/gateway.sh >"$WORK/$side-$round.log" 2>&1)
    echo "| $round | $side | $(figures "$WORK/$side-$round.log") |"
  done
done
