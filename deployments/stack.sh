#!/usr/bin/env bash
# The local stack in one command, all on 127.0.0.1:
#   deployments/stack.sh up     Prefect server, work pools, blocks + defaults + alerts,
#                               `prefect deploy`, a process worker, `mlflow ui`, `evidently ui`
#   deployments/stack.sh down   stop what `up` started (by PID)
# Ports and folders: PREFECT_PORT (4200), MLFLOW_PORT (5000), EVIDENTLY_PORT (8000), WORKDIR (artifacts),
# STACK_DIR (.stack). LIFECYCLE_ALERT_WEBHOOK_URL adds the alert automations.
# LIFECYCLE_STACK_PASSWORD locks it for user `admin`: the Prefect API (PREFECT_SERVER_API_AUTH_STRING;
# this script's worker, bootstrap and deploy get PREFECT_API_AUTH_STRING) and the MLflow UI (basic
# auth by an nginx in front of `mlflow ui` and of `evidently ui`, which then listen on private loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
EVIDENTLY_PORT=${EVIDENTLY_PORT:-8000}
WORKDIR=${WORKDIR:-artifacts}
BIN=$ROOT/.venv/bin

export PREFECT_HOME=$STACK_DIR/prefect
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false  # the UI only: no background job workers
export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-2}
export LIFECYCLE_PROJECT_DIR=$ROOT LIFECYCLE_FLOW_IMAGE_TAG=${LIFECYCLE_FLOW_IMAGE_TAG:-latest}
# the runs' links to the UIs (tasks/outputs.py)
export LIFECYCLE_MLFLOW_UI_URL=http://127.0.0.1:$MLFLOW_PORT LIFECYCLE_EVIDENTLY_UI_URL=http://127.0.0.1:$EVIDENTLY_PORT
LOCKED=${LIFECYCLE_STACK_PASSWORD:+yes}
if [ -n "$LOCKED" ]; then  # every client this script starts (worker → flow runs, bootstrap, deploy)
  export PREFECT_API_AUTH_STRING="admin:$LIFECYCLE_STACK_PASSWORD"
fi

start() {  # name, command...: in its own session, logged, its PID kept
  local name=$1; shift
  if [ -f "$STACK_DIR/$name.pid" ] && kill -0 "$(cat "$STACK_DIR/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$STACK_DIR/$name.pid"))"; return
  fi
  setsid "$@" >"$STACK_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$STACK_DIR/$name.pid"
}

wait_http() {  # url, seconds, log
  "$BIN/python" - "$1" "$2" "$3" <<'PY'
import sys, time, httpx
url, limit, log = sys.argv[1], float(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        if httpx.get(url, timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
sys.exit(f"{url} did not answer within {limit:.0f}s; see {log}")
PY
}

free_port() { "$BIN/python" -c 'from tasks.stores.backends import free_port; print(free_port())'; }

up() {
  mkdir -p "$STACK_DIR" "$PREFECT_HOME" "$WORKDIR"
  if [ -n "$LOCKED" ]; then  # the server alone gets the server-side setting
    (export PREFECT_SERVER_API_AUTH_STRING=$PREFECT_API_AUTH_STRING
     start prefect-server "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT")
  else
    start prefect-server "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
  fi
  wait_http "http://127.0.0.1:$PREFECT_PORT/api/health" 120 "$STACK_DIR/prefect-server.log"
  "$BIN/prefect" work-pool create lifecycle-process --type process --overwrite >/dev/null
  "$BIN/prefect" work-pool create lifecycle-docker --type docker --overwrite >/dev/null
  local kind=process
  if docker info >/dev/null 2>&1; then kind=docker; fi
  "$BIN/python" -m deployments.bootstrap --serving-kind "$kind"
  if [ "$kind" = docker ] && [ -n "${LIFECYCLE_BASE_IMAGE:-}" ]; then
    "$BIN/prefect" --no-prompt deploy --all
  else  # no engine: the process-pool deployments only
    local names=()
    while read -r name; do names+=(--name "$name"); done < <("$BIN/python" -c '
import yaml
for d in yaml.safe_load(open("prefect.yaml"))["deployments"]:
    if d["work_pool"]["name"] == "lifecycle-process":
        print(d["name"])')
    "$BIN/prefect" --no-prompt deploy "${names[@]}"
  fi
  start worker "$BIN/prefect" worker start --pool lifecycle-process
  local db
  db=$(cd "$WORKDIR" && pwd)/mlflow.db
  local mlflow_port=$MLFLOW_PORT evidently_port=$EVIDENTLY_PORT lock="" auth=""
  if [ -n "$LOCKED" ]; then  # the UIs on private ports, the locked fronts on the public ones
    mlflow_port=$(free_port)
    evidently_port=$(free_port)
    lock="   (user admin, password \$LIFECYCLE_STACK_PASSWORD)"
    auth=" PREFECT_API_AUTH_STRING=\"admin:\$LIFECYCLE_STACK_PASSWORD\""  # the name, never the value
  fi
  start mlflow "$BIN/mlflow" ui --backend-store-uri "sqlite:///$db" \
    --host 127.0.0.1 --port "$mlflow_port" --workers 1
  local workspace
  workspace=$(cd "$WORKDIR" && pwd)/monitoring/evidently  # where `monitor` records each run
  mkdir -p "$workspace"
  start evidently "$BIN/evidently" ui --workspace "$workspace" --host 127.0.0.1 --port "$evidently_port"
  wait_http "http://127.0.0.1:$mlflow_port/health" 120 "$STACK_DIR/mlflow.log"
  wait_http "http://127.0.0.1:$evidently_port/api/version" 120 "$STACK_DIR/evidently.log"
  if [ -n "$LOCKED" ]; then
    "$BIN/python" -m deployments.locks front --ui mlflow --folder "$STACK_DIR/mlflow-front" \
      --port "$MLFLOW_PORT" --backend "$mlflow_port"
    "$BIN/python" -m deployments.locks front --ui evidently --folder "$STACK_DIR/evidently-front" \
      --port "$EVIDENTLY_PORT" --backend "$evidently_port"
    wait_http "http://127.0.0.1:$MLFLOW_PORT/health" 30 "$STACK_DIR/mlflow-front/nginx/error.log"
    wait_http "http://127.0.0.1:$EVIDENTLY_PORT/api/version" 30 "$STACK_DIR/evidently-front/nginx/error.log"
  fi
  cat <<MSG

Local stack is up (logs and PIDs in $STACK_DIR):
  Prefect UI   http://127.0.0.1:$PREFECT_PORT$lock
  MLflow UI    http://127.0.0.1:$MLFLOW_PORT$lock   (tracking database $db)
  Evidently UI http://127.0.0.1:$EVIDENTLY_PORT$lock   (workspace $workspace)
  worker       pool lifecycle-process
Use it from this shell:
  export PREFECT_API_URL=$PREFECT_API_URL$auth
  .venv/bin/prefect deployment run lifecycle/lifecycle --watch
Stop it: make stack-down
MSG
}

down() {
  [ -d "$STACK_DIR" ] || { echo "nothing to stop"; return; }
  for front in mlflow-front evidently-front; do
    if [ -f "$STACK_DIR/$front/nginx/nginx.pid" ]; then
      "$BIN/python" -m deployments.locks stop --folder "$STACK_DIR/$front" && echo "stopped $front"
      rm -f "$STACK_DIR/$front/nginx/nginx.pid"
    fi
  done
  for name in worker evidently mlflow prefect-server; do
    local pidfile=$STACK_DIR/$name.pid
    [ -f "$pidfile" ] || continue
    local pid; pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      echo "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
