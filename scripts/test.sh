#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint (ruff), type-check (mypy on pipeenv/) and test (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy pipeenv
.venv/bin/python -m pytest "$@"
