#!/usr/bin/env bash
# Runs every test of switchboard on a fresh machine: installs what the tests
# need when it is missing (redis-server and redis-cli, nginx, chromium, Node.js
# with tests/browser's and the reference Socket.IO server's npm packages, the
# Python packages in tests/requirements.txt), builds the release binaries once, then
# runs the Rust suites (unit, integration, load generator) and the Python
# suites (interoperability with an independent client, deployment).
# Undo: the installed packages stay; remove them with apt-get/pip if unwanted,
# and bench/socketio/node_modules with rm -r.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's package starts a redis-server on 6379 and nginx on 80; the tests
# start their own on free ports and need neither.

if ! python3 -c 'import pytest, websockets, yaml' >/dev/null 2>&1; then
  echo "test.sh: installing Python packages from tests/requirements.txt"
  python3 -m pip install -q -r tests/requirements.txt
fi

# The browser test drives Debian's chromium with playwright-core (no browser download).
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  echo "test.sh: installing tests/browser's npm packages"
  npm ci --prefix tests/browser --no-audit --no-fund
fi

# The load generator's Socket.IO tests run bench/socketio/server.js (socket.io
# with the Redis adapter); npm ci installs exactly its package-lock.json.
if [[ ! -d bench/socketio/node_modules/socket.io ]] ||
  [[ bench/socketio/package-lock.json -nt bench/socketio/node_modules/.package-lock.json ]]; then
  echo "test.sh: installing the Socket.IO server's packages (npm ci --prefix bench/socketio)"
  npm ci --prefix bench/socketio --no-audit --no-fund
fi

# One profile for everything: the Python suites run the same release binaries.
cargo build --release --workspace --bins
cargo test --release --workspace -- --test-threads=2

python3 -m pytest -q -p no:cacheprovider tests/interop tests/deploy
