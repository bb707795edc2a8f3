#!/usr/bin/env sh
# Throughput by producer count: runs the fire-and-forget workload of
# benches/peers.rs (benches/harness/throughput.rs) at 1, 2, ... N producers
# for ringbatch and its peers, and prints items/s per count as a markdown
# table (numbers also in target/bench-results/scaling.json).
#
# Usage: benches/scaling.sh [N]        N defaults to `nproc`
#        SYSTEMS=ringbatch,array_queue,disruptor benches/scaling.sh 8
set -eu
cd "$(dirname "$0")/.."
n=${1:-$(nproc)}
# shellcheck disable=SC2046 # one argument per producer count
exec cargo bench --bench scaling -- $(seq 1 "$n")
