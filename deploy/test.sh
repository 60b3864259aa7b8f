#!/usr/bin/env bash
# The whole test suite, against a real RabbitMQ (brought up first if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/rabbitmq.sh
cargo test --workspace --all-targets --locked "$@"
cargo test --workspace --doc --locked "$@"
