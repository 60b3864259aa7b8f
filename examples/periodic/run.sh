#!/usr/bin/env bash
# Periodic jobs, live: three workers share examples/periodic/jobs.toml; one
# leads the scheduler and fires `tick` every two seconds, the jobs go to
# whichever worker is free, and `worker schedules` shows it all. Then the
# leader is killed (kill -9) and another takes over; then Run now. Checks
# that every tick ran once. `RUN_SECONDS` (default 12) sets how long each
# part runs; `WORKER_BIN` a prebuilt worker binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${WORKER_BIN:-}
if [ -z "$bin" ]; then
  bash deploy/rabbitmq.sh
  echo "periodic: building"
  cargo build -q --locked -p examples --bin worker
  bin=target/debug/worker
fi
config=examples/periodic/jobs.toml
seconds=${RUN_SECONDS:-12}
logs=$(mktemp -d)
declare -A pids
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$logs"; }
trap cleanup EXIT

leader() { grep -l "this worker leads the scheduler" "$logs"/*.log 2>/dev/null | tail -1 | xargs -r basename | sed 's/\.log$//'; }
wait_for() { # wait_for <what> <command...>: up to 30 s
  local what=$1; shift
  for _ in $(seq 1 300); do if "$@"; then return 0; fi; sleep 0.1; done
  echo "periodic: gave up waiting for $what" >&2; tail -n 20 "$logs"/*.log >&2; exit 1
}
has_leader() { [ -n "$(leader)" ]; }

for name in A B C; do
  RUST_LOG=info "$bin" --config "$config" --id "periodic-$name" >"$logs/periodic-$name.log" 2>&1 &
  pids[$name]=$!
done
wait_for "a leader" has_leader
first=$(leader)
echo "periodic: $first leads; letting it fire for $seconds s"
sleep "$seconds" # the example's run time, on purpose
"$bin" --config "$config" schedules

echo "periodic: kill -9 $first"
kill -9 "${pids[${first#periodic-}]}"
unset "pids[${first#periodic-}]"
mv "$logs/$first.log" "$logs/$first.dead"
wait_for "a new leader" has_leader
echo "periodic: $(leader) leads now; $seconds s more"
sleep "$seconds" # the example's run time, on purpose

id=$("$bin" --config "$config" schedules run tick)
echo "periodic: run now enqueued job $id"
ran_now() { grep -q "(job $id)" "$logs"/*.log; }
wait_for "the run-now job" ran_now

for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

echo
fired=$(cat "$logs"/* | grep -c "fired schedule=tick " || true)
echo "periodic: the leaders fired $fired tick(s)"
for log in "$logs"/*; do
  echo "  $(basename "$log" | sed 's/\.[a-z]*$//'): ran $(grep -c "Received 'tick' (job" "$log" || true) job(s) of tick"
done
twice=$(cat "$logs"/* | grep -o "Received 'tick' (job [^)]*)" | sort | uniq -d)
if [ -n "$twice" ]; then
  echo "periodic: ran twice (under one id: the tick of the kill, the window docs/periodic.md names):"
  echo "$twice" | sed 's/^/  /'
fi
if [ "$(echo -n "$twice" | grep -c . || true)" -gt 1 ]; then
  echo "periodic: more than one tick ran twice" >&2; exit 1
fi
echo "periodic: every tick ran once (at most the tick of the kill twice), and run now once"
