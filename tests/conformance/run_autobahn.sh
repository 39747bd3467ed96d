#!/usr/bin/env bash
# Run the Autobahn WebSocket conformance suite against an echo object served
# by td.serve. Exits 1 if any case FAILED. If this machine cannot run the
# suite (no Python 2.7, or the suite cannot be installed), it says so loudly
# and exits 0: that is missing infrastructure, not a failure of ours.
set -u
cd "$(dirname "$0")/../.."
tool=../shared/tools/autobahn.sh
[ -f "$tool" ] || { echo "AUTOBAHN NOT RUN: $tool is missing"; exit 0; }
py2=$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/2.7*/bin/python 2>/dev/null | tail -n 1)
[ -n "$py2" ] || { echo "AUTOBAHN NOT RUN: no Python 2.7 on this machine"; exit 0; }
lib=${AB_LIB:-$HOME/.cache/ab27}
if [ ! -d "$lib/autobahntestsuite" ]; then
  "$py2" -m pip install -q --target "$lib" autobahntestsuite==0.8.2 'zope.interface<6' >/dev/null 2>&1 \
    || { echo "AUTOBAHN NOT RUN: could not install autobahntestsuite for Python 2.7"; exit 0; }
fi
port=${AB_PORT:-9231}
python -m tests.conformance.echo_server "$port" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 50); do
  python -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
out=$(mktemp -d)
bash "$tool" "ws://127.0.0.1:$port" '["*"]' "$out"
