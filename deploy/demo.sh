#!/usr/bin/env bash
# The work-queues tutorial, live: two workers, four tasks, who did what.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/rabbitmq.sh
echo "demo: building"
cargo build -q --locked -p examples --bins
bin=target/debug
logs=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

for name in A B; do
  RUST_LOG=info "$bin/worker" --id "worker-$name" >"$logs/$name.out" 2>"$logs/$name.err" &
  pids+=($!)
done
# Wait (bounded) until both workers consume.
for _ in $(seq 1 300); do
  ready=$(cat "$logs"/*.err | grep -c "worker ready" || true)
  [ "$ready" -ge 2 ] && break
  if ! kill -0 "${pids[0]}" 2>/dev/null || ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "demo: a worker failed to start:" >&2; cat "$logs"/*.err >&2; exit 1
  fi
  sleep 0.1
done

echo "demo: two workers up; enqueueing four tasks (one second of work per dot)"
for msg in "First message." "Second message.." "Third message..." "Fourth message...."; do
  "$bin/manager" "$msg"
done

for _ in $(seq 1 300); do
  done_count=$(cat "$logs"/*.out | grep -c " Done " || true)
  [ "$done_count" -ge 4 ] && break
  sleep 0.1
done
cleanup
pids=()

echo
echo "demo: what each worker printed"
for name in A B; do
  sed "s/^/  /" "$logs/$name.out"
done
echo
for name in A B; do
  echo "demo: worker-$name did $(grep -c ' Done ' "$logs/$name.out" || true) task(s)"
done
rm -rf "$logs"
