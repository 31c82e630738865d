#!/usr/bin/env bash
# Create .venv (if missing) and install lmpipe with its pinned dependencies.
# torch goes first and pinned: this machine's small CPU wheel; unpinned, other packages pull
# a multi-GB CUDA build. Use pip, not uv/poetry (they cannot see the local CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.lmpipe-installed
if [ -f "$stamp" ] && [ "$stamp" -nt requirements.lock ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c requirements.lock -e ".[dev]"
.venv/bin/python -m pip check
touch "$stamp"
