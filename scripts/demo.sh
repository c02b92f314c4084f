#!/usr/bin/env bash
# The demo in one command (README): run as root on a fresh Debian 12 with Node 20 and npm.
# Installs what is missing (Prosody for the demo upstream, the npm dependencies), then starts
# a demo Prosody and the proxy in front of it (scripts/demo.ts). Options go to scripts/demo.ts:
#   bash scripts/demo.sh [--domain demo.test] [--port 5222] [--tls-port 5223]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "demo.sh: Node.js 20 and npm are required" >&2
  exit 1
fi

packages=()
installed_prosody=false
if ! command -v prosody >/dev/null; then
  packages+=(prosody lua-unbound python3-slixmpp)
  installed_prosody=true
fi
# startProsody generates the upstream's certificate with the openssl command.
command -v openssl >/dev/null || packages+=(openssl)

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: missing ${packages[*]}; run as root or: sudo apt-get install ${packages[*]}" >&2
    exit 1
  fi
  echo "demo.sh: installing ${packages[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${packages[@]}"
  if $installed_prosody; then
    # The demo runs its own Prosody on a free port; Debian's prosody service would hold 5222.
    echo "demo.sh: stopping Debian's prosody service (the demo starts its own Prosody)"
    if [ -d /run/systemd/system ]; then
      systemctl stop prosody || true
      systemctl disable prosody || true
    elif [ -x /etc/init.d/prosody ]; then
      /etc/init.d/prosody stop >/dev/null 2>&1 || true
    fi
    # Debian 12's init script looks for the process name lua5.2 and misses lua5.4.
    pidfile=/run/prosody/prosody.pid
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      kill "$(cat "$pidfile")" || true
      for _ in $(seq 50); do kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
fi

if [ ! -d node_modules ] || [ ! -e node_modules/.package-lock.json ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "demo.sh: npm ci ..."
  npm ci --no-audit --no-fund
fi

# node --import tsx (rather than npx tsx) keeps the demo one process with this script's PID, so a
# SIGINT/SIGTERM sent to it reaches the demo (npx's sh -c wrapper would not pass it on).
exec node --import tsx scripts/demo.ts "$@"
