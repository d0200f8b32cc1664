#!/usr/bin/env bash
# The fault tests (workers killed, a broker flushed, cancel, duplicate merges and aggregations,
# lost leases, a dropped database, a poison shard) N times in a row, stopping at the first
# failure. With --loaded, one busy loop per CPU runs beside them the whole time.
#
#   ops/fault-loop.sh [N=10] [--loaded]
set -euo pipefail
cd "$(dirname "$0")/.."
ops/setup.sh
ops/services.sh
source ops/env.sh
mkdir -p bench-out
runs=${1:-10}
loaded=${2:-}
hogs=()
if [[ $loaded == --loaded ]]; then
  for _ in $(seq "$(nproc)"); do
    python3 -c 'while True: pass' &
    hogs+=($!)
  done
  trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
fi
selection="killed or flushed or merges or cancel or delivered_twice or lease or dropped or poison"
for run in $(seq "$runs"); do
  start=$SECONDS
  if ! .venv/bin/python -m pytest -q tests/workers/test_celery_jobs.py tests/workers/test_healing.py \
      -k "$selection" > "bench-out/fault-loop-$run.log" 2>&1; then
    tail -30 "bench-out/fault-loop-$run.log"
    echo "fault-loop: run $run of $runs failed${loaded:+ (loaded)}; log in bench-out/fault-loop-$run.log"
    exit 1
  fi
  echo "fault-loop: run $run of $runs passed in $((SECONDS - start)) s${loaded:+ (loaded)}: $(tail -1 "bench-out/fault-loop-$run.log")"
done
