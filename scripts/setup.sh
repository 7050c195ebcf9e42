#!/usr/bin/env bash
# Create .venv and install the project with the given extras (e.g. "dev"); quick when nothing changed.
# As root on Debian it also installs the system packages it needs (python3-venv, libportaudio2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# One set-up at a time per checkout: the run and test commands both call this script, and two pip installs (or
# apt-gets) into one .venv at once break each other. Where flock is missing (macOS) the commands run one by one.
if command -v flock >/dev/null; then
  exec 9>"${TMPDIR:-/tmp}/emostream-setup-$(pwd | sha256sum | cut -c1-16).lock"
  flock 9
fi
extras="${1:-}"
want_browser="${2:-}"  # "browser": Debian's chromium for the dashboard test
PYTHON="${PYTHON:-python3}"

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install $*" >&2
    compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || apt-get update -qq  # a fresh image has none
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
  else
    return 1
  fi
}

if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  apt_install python3-venv || { echo "setup: $PYTHON has no venv/ensurepip; install python3-venv" >&2; exit 1; }
fi
if ! "$PYTHON" -c 'import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library("portaudio") else 1)'; then
  apt_install libportaudio2 || echo "setup: PortAudio missing; microphone input needs 'apt-get install libportaudio2'" \
    "(file and stdin input work without it)" >&2
fi

if [ "$want_browser" = browser ] && ! command -v chromium >/dev/null; then
  apt_install chromium || echo "setup: chromium missing; the dashboard browser test will skip" >&2
fi
# The publishing tests start their own redis-server and mosquitto (Debian packages) on loopback ports.
have_brokers() { command -v redis-server >/dev/null && { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; }; }
if [[ ",$extras," == *",dev,"* ]] && ! have_brokers; then
  apt_install redis-server mosquitto || echo "setup: redis-server/mosquitto missing; the publishing tests will skip" >&2
fi
# The TLS test makes a self-signed certificate with openssl.
if [[ ",$extras," == *",dev,"* ]] && ! command -v openssl >/dev/null; then
  apt_install openssl || echo "setup: openssl missing; the TLS test will skip" >&2
fi

# A venv whose creation was interrupted has a python but no pip: made again, not skipped.
.venv/bin/python -m pip --version >/dev/null 2>&1 || "$PYTHON" -m venv --clear .venv
stamp=".venv/.installed-$( (cat pyproject.toml; echo "extras=$extras") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing emostream${extras:+[$extras]} into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
