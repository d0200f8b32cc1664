#!/usr/bin/env bash
# Set up, start Redis/PostgreSQL if needed, run the test suite. Extra arguments go to pytest
# (e.g. `ops/test.sh -m slow` for the real-size CK+48 tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ops/setup.sh
ops/services.sh
source ops/env.sh
exec .venv/bin/python -m pytest "$@"
