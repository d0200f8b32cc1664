#!/usr/bin/env bash
# Create .venv and install ferqueue (editable, with test tools) when missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "ferqueue: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.ferqueue-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "ferqueue: installing dependencies into .venv (TensorFlow is large: a minute or two)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # the versions the figures came from (constraints.txt), so that another machine gets the same numbers
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,s3]"
  touch "$stamp"
fi
