#!/usr/bin/env bash
# The main job: the daemon on the shipped model. With no arguments it streams the bundled sample
# (stream/assets/sample.flac) in real time, looped, on ws://127.0.0.1:8765; arguments go to
# emostream-daemon instead (e.g. --mic, --stdin --rate 16000, --file talk.wav).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh  # runtime dependencies only: no TensorFlow
[ $# -gt 0 ] || set -- --loop
exec .venv/bin/emostream-daemon "$@"
