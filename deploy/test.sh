#!/usr/bin/env bash
# The whole test suite, against a real RabbitMQ (brought up first if needed),
# on a vhost of the run's own: no test touches another vhost's queues (a
# developer's own, the demo's), two runs do not collide, and the vhost is
# deleted at the end, after a failure too. Arguments go to `cargo test`
# instead of the whole suite: `bash deploy/test.sh -p jobs-worker --test retries`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/rabbitmq.sh
export PATH="$PATH:/usr/sbin"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# The dashboard's browser test drives headless Chromium over WebDriver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "tests: installing chromium and chromium-driver from the OS packages (for the dashboard's browser test)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# Vhosts left by runs that were killed before their cleanup, over 6 hours old.
now=$(date +%s)
for old in $($SUDO rabbitmqctl -q list_vhosts name 2>/dev/null | grep -E '^jobs-test-[0-9]+-' || true); do
  born=${old#jobs-test-}; born=${born%%-*}
  if [ $((now - born)) -gt 21600 ]; then $SUDO rabbitmqctl -q delete_vhost "$old" >/dev/null 2>&1 || true; fi
done

VHOST="jobs-test-$now-$$-$RANDOM"
cleanup() { $SUDO rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true; }
trap cleanup EXIT
$SUDO rabbitmqctl -q add_vhost "$VHOST"
$SUDO rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*'
export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST"
echo "tests: on vhost $VHOST (deleted at the end)"

if [ $# -gt 0 ]; then
  cargo test --locked "$@"
else
  # Every test binary runs, whatever fails first: one run reports every failure.
  cargo test --workspace --all-targets --locked --no-fail-fast
  cargo test --workspace --doc --locked
fi
