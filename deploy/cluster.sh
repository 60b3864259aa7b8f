#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for development and tests.
#   bash deploy/cluster.sh start [DIR] [BASE_PORT]   # nodes on BASE_PORT..+2 (AMQP), prints their URLs
#   bash deploy/cluster.sh stop  [DIR]
# Node names: ${CLUSTER_PREFIX:-jobs-c}{1,2,3}@localhost; data, logs and config under DIR.
# Needs rabbitmq-server installed (bash deploy/rabbitmq.sh) and root (nodes run as `rabbitmq`).
set -euo pipefail
export PATH="$PATH:/usr/sbin"
cmd=${1:-start}
dir=${2:-/tmp/jobs-cluster}
base=${3:-5681}
prefix=${CLUSTER_PREFIX:-jobs-c}
here=$(cd "$(dirname "$0")" && pwd)
nodes=("${prefix}1@localhost" "${prefix}2@localhost" "${prefix}3@localhost")

await() {
  for _ in $(seq 1 120); do
    rabbitmqctl -q -n "$1" await_startup --timeout 60 >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "cluster: $1 did not start; see $dir" >&2
  return 1
}

case "$cmd" in
start)
  mkdir -p "$dir"
  for i in 0 1 2; do
    d="$dir/n$((i + 1))"
    mkdir -p "$d"
    nohup bash "$here/node.sh" "${nodes[$i]}" "$((base + i))" "$((base + 20000 + i))" "$d" >"$d/console.log" 2>&1 &
  done
  for node in "${nodes[@]}"; do await "$node"; done
  for node in "${nodes[1]}" "${nodes[2]}"; do
    rabbitmqctl -q -n "$node" stop_app
    rabbitmqctl -q -n "$node" reset
    rabbitmqctl -q -n "$node" join_cluster "${nodes[0]}"
    rabbitmqctl -q -n "$node" start_app
  done
  for i in 0 1 2; do echo "amqp://guest:guest@127.0.0.1:$((base + i))/%2f"; done
  ;;
stop)
  for node in "${nodes[@]}"; do rabbitmqctl -q -n "$node" stop >/dev/null 2>&1 || true; done
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop [DIR] [BASE_PORT]" >&2
  exit 2
  ;;
esac
