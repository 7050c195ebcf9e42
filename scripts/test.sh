#!/usr/bin/env bash
# Set up .venv with the dev extras, then run the test suite (extra arguments go to pytest; test paths are read from
# the directory it is called from).
set -euo pipefail
caller="$PWD"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh" dev browser
args=() prev=""
for arg in "$@"; do  # pytest runs in the checkout (its config, tests/): a path given from elsewhere moves along,
    # written relative to the checkout as pytest's node ids are; option values (-k expr, -m marks) stay as they are
    path="${arg%%::*}"
    if [ "$caller" != "$root" ] && [[ "$arg" != -* && "$prev" != @(-k|-m|-p|-o|-c) ]] && [ -e "$caller/$path" ]; then
        args+=("$(realpath -m --relative-to="$root" "$caller/$path")${arg:${#path}}")
    else
        args+=("$arg")
    fi
    prev="$arg"
done
cd "$root"
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
