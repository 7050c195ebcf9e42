#!/usr/bin/env bash
# Set up .venv with the dev extras, then run the test suite (extra arguments go to pytest; test paths are read from
# the directory it is called from).
set -euo pipefail
caller="$PWD"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh" dev browser
args=()
for arg in "$@"; do  # pytest runs in the checkout (its config, tests/): paths given relative to the caller move along
    if [[ "$arg" != -* && "$arg" != /* ]] && [ -e "$caller/${arg%%::*}" ]; then
        args+=("$caller/$arg")
    else
        args+=("$arg")
    fi
done
cd "$root"
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
