#!/usr/bin/env bash
# The main job: the daemon on the shipped model. Without a source (--file, --mic, --stdin, --listen-only) it streams the
# bundled sample (emostream/assets/sample.flac) in real time, looped, on ws://127.0.0.1:8765; other
# arguments go to emostream-daemon as they are (e.g. --port 9000, --mic, --stdin --rate 16000, --file talk.wav).
# Paths in the arguments are read from the directory it is called from.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"  # runtime dependencies only: no TensorFlow
source_given=0
for arg in "$@"; do
    case "$arg" in --file|--file=*|--mic|--stdin|--listen-only) source_given=1 ;; esac
done
[ "$source_given" = 1 ] || set -- --loop "$@"  # options alone still loop the default sample
exec "$root/.venv/bin/emostream-daemon" "$@"
