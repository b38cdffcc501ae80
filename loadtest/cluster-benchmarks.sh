#!/usr/bin/env bash
# The cluster figures of docs/BENCHMARKS.md, one `loadtest cluster` run each:
# 1 vs 3 instances behind nginx (chat), the mixed scenario, and every fault.
# Usage: loadtest/cluster-benchmarks.sh [OUTDIR]   (default /tmp/agentry-cluster)
# Each run writes OUTDIR/<name>.json and .md; a run that loses an event (or
# fails) exits 1, and so does this script, after running the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/agentry-cluster}"
mkdir -p "$out"

cargo build --release --quiet -p agentry -p loadtest || exit 1
target="${CARGO_TARGET_DIR:-target}"
loadtest="$target/release/loadtest"
agentry="$target/release/agentry"

failed=0
run() {
    local name="$1"
    shift
    echo "== $name: loadtest cluster $*" >&2
    if ! "$loadtest" cluster --agentry-bin "$agentry" --report "$out/$name.json" "$@" >/dev/null; then
        echo "== $name FAILED" >&2
        failed=1
    fi
}

run chat-1 --instances 1 --scenario chat --duration 30s
run chat-3 --instances 3 --scenario chat --duration 30s
run mixed-3 --instances 3 --scenario mixed --duration 30s
run webhooks-3 --instances 3 --scenario webhooks --duration 30s
run ratelimit-3 --instances 3 --scenario ratelimit --duration 30s
run kill --instances 3 --scenario mixed --duration 30s --kill-one-after 10s
run redis-none --instances 3 --scenario mixed --duration 30s --restart-redis-after 10s --redis-persistence none
run redis-aof --instances 3 --scenario mixed --duration 30s --restart-redis-after 10s --redis-persistence aof
run cut-postgres --instances 3 --scenario mixed --duration 30s --cut-postgres-after 10s
run slow-receiver --instances 3 --scenario mixed --duration 30s --slow-receiver-after 10s
run failing-receiver --instances 3 --scenario mixed --duration 30s --failing-receiver-after 10s

echo "reports in $out" >&2
exit "$failed"
