#!/usr/bin/env bash
# A plain install from a built wheel (not editable) carries its migrations: build the wheel,
# install it alone into a temporary folder, and upgrade a fresh database with it, run from
# outside the repository so that nothing can come from the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/setup.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel -q --no-deps -w "$work/dist" . 2>&1 | grep -v "^WARNING: Location" || true
wheel=$(ls "$work"/dist/ferqueue-*.whl)
.venv/bin/python -m pip install -q --no-deps --target "$work/site" "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
python=$(pwd)/.venv/bin/python
cd "$work"
out=$(PYTHONPATH="$work/site" FERQUEUE_HOME="$work/home" "$python" -c '
import ferqueue, sys
assert ferqueue.__file__.startswith(sys.argv[1]), ferqueue.__file__
from ferqueue.cli import main
main(["db", "upgrade"])' "$work/site" 2>&1)
echo "$out"
head=$(PYTHONPATH="$work/site" "$python" -c 'from ferqueue.db.session import Database; print(Database.head_revision())')
case "$out" in
  *"at revision $head"*) echo "ferqueue: the wheel $(basename "$wheel") upgrades a fresh database to $head" ;;
  *) echo "ferqueue: the wheel did not upgrade the database to $head" >&2; exit 1 ;;
esac
