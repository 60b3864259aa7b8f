#!/usr/bin/env bash
# Makes sure a RabbitMQ answers on 127.0.0.1:5672 (guest/guest) and is ready:
# does nothing if one does; starts an installed rabbitmq-server if it is not
# running; installs it from the OS packages (Debian/Ubuntu apt) if it is missing.
set -euo pipefail

HOST=${RABBITMQ_HOST:-127.0.0.1}
PORT=${RABBITMQ_PORT:-5672}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# The management plugin's HTTP API on 15672 gives `worker queues` its unacked
# counts; enabling it on a running node is online and idempotent.
enable_management() {
  if command -v rabbitmq-plugins >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-plugins ]; then
    PATH="$PATH:/usr/sbin" $SUDO rabbitmq-plugins -q enable rabbitmq_management >/dev/null 2>&1 || true
  fi
}

if port_open; then
  enable_management
  echo "rabbitmq: answering on $HOST:$PORT"
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "rabbitmq: not installed and no apt-get here; install RabbitMQ 3.10+ and start it on $HOST:$PORT" >&2
    exit 1
  fi
  echo "rabbitmq: installing rabbitmq-server from the OS packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if ! port_open; then
  echo "rabbitmq: starting rabbitmq-server"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl start rabbitmq-server || true
  fi
  if ! port_open && ! $SUDO rabbitmqctl -q status >/dev/null 2>&1; then
    $SUDO rabbitmq-server -detached
  fi
fi

# Wait until the node has booted and the AMQP port answers (bounded).
$SUDO rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
for _ in $(seq 1 120); do
  if port_open; then
    enable_management
    echo "rabbitmq: ready on $HOST:$PORT"
    exit 0
  fi
  sleep 1
done
echo "rabbitmq: still not answering on $HOST:$PORT after 2 minutes; see /var/log/rabbitmq/" >&2
exit 1
