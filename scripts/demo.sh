#!/usr/bin/env bash
# Builds what the demo needs (the test images, from Debian packages; the operator), brings the
# demo stack to Ready in local mode, and prints the status table.
set -euo pipefail
cd "$(dirname "$0")/.."

docker info >/dev/null 2>&1 || { echo "demo: the Docker engine is not reachable (is dockerd running, and may this user use /var/run/docker.sock?)" >&2; exit 1; }
bash tests/images/build.sh
cargo build --release -p stackwarden
./target/release/stackwarden local examples/demo/ --exit-when-ready --timeout 300
./target/release/stackwarden status
echo
echo "The stack keeps running. Keep it reconciled with:  ./target/release/stackwarden local examples/demo/"
echo "Try the backend:                                 curl -s localhost:8000/health"
