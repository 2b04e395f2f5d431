#!/usr/bin/env bash
# Start the Docker engine (Debian's docker.io, installed if missing, run as root) unless one already answers, then wait
# until `docker info` works (up to DOCKERD_WAIT seconds, default 60). Idempotent; CI calls it.
#   container/standin/start_dockerd.sh            log: $DOCKERD_LOG (default /var/log/dockerd.log)
set -euo pipefail

log="${DOCKERD_LOG:-/var/log/dockerd.log}"
wait_s="${DOCKERD_WAIT:-60}"

if docker info >/dev/null 2>&1; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "error: dockerd must be started as root" >&2; exit 1; }
if ! command -v dockerd >/dev/null; then   # a bare machine: Debian's engine
  echo "installing docker.io (Debian's Docker engine)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

# A daemon process may exist but not answer yet (just started by someone else): start one only if none.
if ! pgrep -x dockerd >/dev/null; then
  mkdir -p "$(dirname "$log")"
  # its own session: it must outlive the shell (and process group) that started it
  setsid nohup dockerd >>"$log" 2>&1 </dev/null &
  echo "started dockerd (pid $!, log $log)"
fi

for _ in $(seq "$wait_s"); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "error: docker info still fails after ${wait_s}s; see $log" >&2
tail -20 "$log" >&2 || true
exit 1
