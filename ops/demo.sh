#!/usr/bin/env bash
# Set up, then run the paper's four scenarios on the embedded default (SQLite, local executor,
# files under ./ferqueue-data). Extra arguments go to `ferqueue run`.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/setup.sh
source ops/env.sh
exec .venv/bin/ferqueue run --dataset synthetic "$@"
