#!/usr/bin/env bash
# Set up pipeenv in ./.venv: the package (editable) with its dev tools. torch is constrained to
# 2.13.* (constraints.txt), which pip takes from a local CPU wheel where the machine has one
# instead of downloading a multi-GB CUDA build. Re-running is cheap: pip skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "pipeenv needs Python >= 3.11")'
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
