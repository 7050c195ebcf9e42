#!/usr/bin/env bash
# Set up .venv with the dev extras, then run the test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh dev browser
exec .venv/bin/python -m pytest "$@"
