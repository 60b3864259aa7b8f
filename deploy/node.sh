#!/usr/bin/env bash
# One RabbitMQ node of its own, apart from the machine's broker, in the foreground:
#   bash deploy/node.sh NAME PORT DIST_PORT DIR [EXTRA_CONF [ADVANCED]]
# NAME is the Erlang node name (e.g. jobs-c1@localhost); it listens for AMQP on
# 127.0.0.1:PORT and keeps its data, logs and config under DIR (given to the
# `rabbitmq` user, so files EXTRA_CONF names must be readable by it). EXTRA_CONF
# is more rabbitmq.conf lines; ADVANCED, an advanced.config (Erlang terms, for
# settings rabbitmq.conf has no key for, such as channel_tick_interval). The
# tests that stop or restart a broker and deploy/cluster.sh start their nodes
# with it.
# Needs rabbitmq-server installed (bash deploy/rabbitmq.sh) and root.
set -euo pipefail
export PATH="$PATH:/usr/sbin"
if [ $# -lt 4 ]; then
  echo "usage: $0 NAME PORT DIST_PORT DIR [EXTRA_CONF]" >&2
  exit 2
fi
name=$1 port=$2 dist=$3 dir=$4 extra=${5:-} advanced=${6:-}
if ! command -v rabbitmq-server >/dev/null; then
  echo "node.sh: rabbitmq-server is not installed; bash deploy/rabbitmq.sh installs it" >&2
  exit 1
fi
mkdir -p "$dir"
: >"$dir/plugins"
# A config file of its own: the machine's may pin the listener to 5672.
printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users.guest = true\n%s\n' "$port" "$extra" >"$dir/node.conf"
if [ -n "$advanced" ]; then
  printf '%s\n' "$advanced" >"$dir/advanced.config"
  export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
fi
chown -R rabbitmq:rabbitmq "$dir"
export RABBITMQ_NODENAME=$name RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$dist \
  RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log RABBITMQ_PID_FILE=$dir/pid \
  RABBITMQ_ENABLED_PLUGINS_FILE=$dir/plugins RABBITMQ_CONFIG_FILE=$dir/node.conf
# In the foreground (exec keeps this pid): `-detached` trips over its own dist port on 3.10.
exec rabbitmq-server
