#!/usr/bin/env bash
# Start a Ray cluster by hand on one or several hosts, with token authentication (Ray 2.60).
#
#   cluster/local.sh head               start the head here (creates the shared token if absent)
#   cluster/local.sh worker HEAD:PORT   start a worker here and join the head at HEAD:PORT
#   cluster/local.sh status             the nodes this script started here, then `ray status`
#   cluster/local.sh stop               stop the nodes this script started here, by recorded PID
#
# Each node is one `ray start --block` process in its own session, recorded in a PID file; `stop`
# signals those sessions only, so other Ray instances of the same user on this host are untouched.
# Every Ray process (nodes and drivers) gets RAY_AUTH_MODE=token and reads the token from
# RAY_AUTH_TOKEN_PATH; a host that joins needs a copy of the same token file.
#
# Environment [default]:
#   MOESWEEP_RAY                  ray CLI [ray]
#   MOESWEEP_RAY_PORT             head GCS port [6379]
#   MOESWEEP_RAY_CPUS             --num-cpus [detected]
#   MOESWEEP_RAY_GPUS             --num-gpus [detected]
#   MOESWEEP_RAY_OBJECT_STORE_MB  --object-store-memory in MB [1024]
#   MOESWEEP_RAY_NODE_IP          --node-ip-address [detected]
#   MOESWEEP_RAY_DIR              PID file, logs, Ray temp dirs [/tmp/msray-UID] (keep it short:
#                                 Ray's unix socket paths under it must stay below ~107 bytes)
#   MOESWEEP_RAY_TOKEN_FILE       shared token [~/.ray/moesweep_auth_token]
#   MOESWEEP_RAY_START_TIMEOUT    seconds to wait for a node to start [120]
set -euo pipefail

RAY_BIN=${MOESWEEP_RAY:-ray}
PORT=${MOESWEEP_RAY_PORT:-6379}
OBJECT_STORE_MB=${MOESWEEP_RAY_OBJECT_STORE_MB:-1024}
STATE_DIR=${MOESWEEP_RAY_DIR:-/tmp/msray-$(id -u)}
TOKEN_FILE=${MOESWEEP_RAY_TOKEN_FILE:-$HOME/.ray/moesweep_auth_token}
START_TIMEOUT=${MOESWEEP_RAY_START_TIMEOUT:-120}
PID_FILE=$STATE_DIR/nodes.pid # one line per node: "<pid> <role> <temp dir>"
ADDRESS_FILE=$STATE_DIR/address
NODE_LOG= # set by start_node: the log of the node it started

# The token file is the single source: an inherited RAY_AUTH_TOKEN would take precedence over it.
unset RAY_AUTH_TOKEN
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$TOKEN_FILE RAY_USAGE_STATS_ENABLED=0
# On SIGTERM a node drains for up to 30 s by default; nothing here needs draining.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}

die() {
  echo "local.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

ensure_token() {
  if [[ ! -s $TOKEN_FILE ]]; then
    mkdir -p "$(dirname "$TOKEN_FILE")"
    # 32 random bytes as 64 hex characters, the same size as Ray's own generated tokens.
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE")
    echo "Generated a new auth token in $TOKEN_FILE"
  fi
}

# True if PID is alive and still the `ray start --block` that this script launched with TEMP_DIR
# (guards against the PID having been reused by an unrelated process).
is_our_node() {
  local pid=$1 temp_dir=$2 cmdline
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  [[ $cmdline == *"start --block"* && $cmdline == *"--temp-dir=$temp_dir "* ]]
}

# PIDs in the session led by PID (the node and everything it spawned, workers included).
session_members() {
  ps -e -o pid= -o sid= | awk -v sid="$1" '$2 == sid { print $1 }'
}

start_node() {
  local role=$1
  shift
  mkdir -p "$STATE_DIR"
  chmod 700 "$STATE_DIR"
  local n=0
  while [[ -e $STATE_DIR/n$n ]]; do n=$((n + 1)); done
  local temp_dir=$STATE_DIR/n$n log=$STATE_DIR/n$n.log
  mkdir -p "$temp_dir"
  NODE_LOG=$log
  local args=(start --block "$@" "--temp-dir=$temp_dir"
    "--object-store-memory=$((OBJECT_STORE_MB * 1024 * 1024))"
    # Let the OS pick these ports so several nodes can share one host (the defaults collide).
    --dashboard-agent-listen-port=0 --min-worker-port=0 --max-worker-port=0
    --disable-usage-stats)
  if [[ -n ${MOESWEEP_RAY_CPUS:-} ]]; then args+=("--num-cpus=$MOESWEEP_RAY_CPUS"); fi
  if [[ -n ${MOESWEEP_RAY_GPUS:-} ]]; then args+=("--num-gpus=$MOESWEEP_RAY_GPUS"); fi
  if [[ -n ${MOESWEEP_RAY_NODE_IP:-} ]]; then args+=("--node-ip-address=$MOESWEEP_RAY_NODE_IP"); fi

  # setsid: the node leads its own session, so `stop` can find everything it spawned. In a
  # non-interactive shell a background job is not a group leader, so setsid execs in place and
  # $! is the node's own PID.
  setsid "$RAY_BIN" "${args[@]}" >"$log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid $role $temp_dir" >>"$PID_FILE"

  local waited=0
  until grep -q "Ray runtime started" "$log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2
      die "$role failed to start (log: $log)"
    fi
    if ((waited >= START_TIMEOUT * 2)); then
      tail -n 30 "$log" >&2
      die "$role not started after ${START_TIMEOUT}s (log: $log); run '$0 stop' to clean up"
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  echo "$role started: pid $pid, log $log"
}

print_next_steps() {
  local address=$1
  cat <<EOF

Ray cluster address: $address
Auth: every host and every driver needs RAY_AUTH_MODE=token and the same token file.
On each other host (same Python environment and moesweep version as this one):
  mkdir -p ~/.ray && scp $(hostname):$TOKEN_FILE ~/.ray/moesweep_auth_token
  chmod 600 ~/.ray/moesweep_auth_token
  MOESWEEP_RAY_TOKEN_FILE=~/.ray/moesweep_auth_token cluster/local.sh worker $address
In the shell that runs the sweep:
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$TOKEN_FILE
  moesweep launch --space search_spaces/heads.yaml --address $address --storage /shared/moesweep
(--storage must be a directory every node sees at the same path, or an s3:// URI.)
EOF
}

cmd_head() {
  ensure_token
  start_node head --head "--port=$PORT" --include-dashboard=false
  local address
  # Ray prints the address that other nodes must use (the node IP it advertises, not 127.0.0.1).
  address=$(grep -o "ray start --address='[^']*'" "$NODE_LOG" | tail -n 1 | cut -d"'" -f2)
  [[ -n $address ]] || address=${MOESWEEP_RAY_NODE_IP:-$(hostname -I | awk '{print $1}')}:$PORT
  echo "$address" >"$ADDRESS_FILE"
  print_next_steps "$address"
}

cmd_worker() {
  local address=${1:-}
  [[ -n $address ]] || die "usage: $0 worker HEAD_IP:PORT"
  [[ -s $TOKEN_FILE ]] || die "no token in $TOKEN_FILE: copy the head's token file here first"
  start_node worker "--address=$address"
  [[ -s $ADDRESS_FILE ]] || echo "$address" >"$ADDRESS_FILE"
}

cmd_status() {
  if [[ ! -s $PID_FILE ]]; then
    echo "no nodes recorded in $PID_FILE"
    return 0
  fi
  local pid role temp_dir
  while read -r pid role temp_dir; do
    if is_our_node "$pid" "$temp_dir"; then
      echo "$role pid $pid: running"
    else
      echo "$role pid $pid: gone"
    fi
  done <"$PID_FILE"
  if [[ -s $ADDRESS_FILE ]]; then
    "$RAY_BIN" status --address "$(cat "$ADDRESS_FILE")" || true
  fi
}

stop_one() {
  local pid=$1 role=$2 temp_dir=$3 members waited=0
  if ! is_our_node "$pid" "$temp_dir"; then
    echo "$role pid $pid: already gone"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  while members=$(session_members "$pid") && [[ -n $members ]] && ((waited < 60)); do
    sleep 0.5
    waited=$((waited + 1))
  done
  # Whatever ignored SIGTERM for 30 s. A session id cannot be reused while a member is alive.
  members=$(session_members "$pid")
  if [[ -n $members ]]; then
    # shellcheck disable=SC2086  # one PID per word
    kill -KILL $members 2>/dev/null || true
  fi
  rm -rf "$temp_dir" # Ray's session files; the node's log (n<i>.log) stays for reading
  echo "$role pid $pid: stopped"
}

cmd_stop() {
  if [[ ! -s $PID_FILE ]]; then
    echo "no nodes recorded in $PID_FILE"
    return 0
  fi
  local lines=() i pid role temp_dir
  mapfile -t lines <"$PID_FILE"
  # Workers before the head, so they do not spend their last seconds reconnecting to it.
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    read -r pid role temp_dir <<<"${lines[i]}"
    stop_one "$pid" "$role" "$temp_dir"
  done
  rm -f "$PID_FILE" "$ADDRESS_FILE"
}

case ${1:-} in
head) cmd_head ;;
worker) cmd_worker "${2:-}" ;;
status) cmd_status ;;
stop) cmd_stop ;;
*) usage ;;
esac
