#!/usr/bin/env bash
# The main job: train the reference CRNN on RAVDESS (arguments go to emostream-train).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh train
exec .venv/bin/emostream-train "$@"
