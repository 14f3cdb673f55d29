#!/usr/bin/env bash
# Make a Docker engine reachable, and print the DOCKER_HOST to use.
#   deployments/docker/engine.sh start   → prints `export DOCKER_HOST=...` (eval it)
#   deployments/docker/engine.sh stop    → stops an engine this script started
# An engine that already answers (DOCKER_HOST or the default socket) is used as it is.
# Otherwise Debian's docker.io is installed if needed (root) and dockerd is started on a
# private socket, with host networking only (no bridge, no iptables): what works in
# sandboxes and CI machines without a system Docker.
set -euo pipefail
STATE="${LIFECYCLE_DOCKER_DIR:-/var/lib/lifecycle-docker}"
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"

answers() { timeout 10 docker ${1:+-H "$1"} info >/dev/null 2>&1; }

case "${1:-start}" in
  start)
    if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then echo "export DOCKER_HOST=$DOCKER_HOST"; exit 0; fi
    if answers "unix://$SOCK"; then echo "export DOCKER_HOST=unix://$SOCK"; exit 0; fi
    if answers "unix:///var/run/docker.sock"; then echo "export DOCKER_HOST=unix:///var/run/docker.sock"; exit 0; fi
    if ! command -v dockerd >/dev/null; then
      echo "installing Debian's docker.io" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) >&2
    fi
    mkdir -p "$STATE/data" "$STATE/exec"
    nohup dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --host "unix://$SOCK" \
      --pidfile "$PIDFILE" --storage-driver overlay2 --iptables=false --bridge=none \
      >"$STATE/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
      if answers "unix://$SOCK"; then echo "export DOCKER_HOST=unix://$SOCK"; exit 0; fi
      sleep 1
    done
    echo "dockerd did not start; see $STATE/dockerd.log" >&2
    tail -20 "$STATE/dockerd.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$PIDFILE" ]; then
      kill "$(cat "$PIDFILE")" 2>/dev/null || true
      for _ in $(seq 1 30); do [ -f "$PIDFILE" ] || break; sleep 1; done
    fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
