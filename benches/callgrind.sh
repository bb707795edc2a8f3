#!/usr/bin/env sh
# Instruction counts per push and per drained item, repeatable on a shared
# machine: runs benches/callgrind_probe.rs under callgrind with 2^18 and
# 2^19 pushes and divides the difference by 2^18 (fixed costs cancel), from
# a shared producer and from an exclusive one; then
# the same for round trips under `inline_when_idle` (20,000 and 40,000),
# from a thread and from a task; then pipelined requests from 4 tasks
# (8,192 and 16,384 each), the async throughput workload.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --bench callgrind_probe >/dev/null 2>&1
probe=$(ls -t target/release/deps/callgrind_probe-* | grep -v '\.d$' | head -1)
out=$(mktemp -d)
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }
drain() { callgrind_annotate --inclusive=yes "$1" 2>/dev/null | awk '/Drainer<T,R>>?::sweep \[/ { gsub(",", "", $1); print $1; exit }'; }
# per_item MODE LABEL: pushes per item and drain per item of probe mode MODE.
per_item() {
    for n in 262144 524288; do
        valgrind --tool=callgrind --callgrind-out-file="$out/$1-$n.out" "$probe" "$n" "$1" >/dev/null 2>&1
    done
    t1=$(total "$out/$1-262144.out"); t2=$(total "$out/$1-524288.out")
    d1=$(drain "$out/$1-262144.out"); d2=$(drain "$out/$1-524288.out")
    python3 -c "
n = 262144
total = ($t2 - $t1) / n
drain = ($d2 - $d1) / n
print(f'$2, per item: {total:.1f} instructions; push {total - drain:.1f}, drain and dispatch {drain:.1f}')
"
}
per_item push "shared producer"
per_item push_exclusive "exclusive producer"
for n in 20000 40000; do
    valgrind --tool=callgrind --callgrind-out-file="$out/inline-$n.out" "$probe" "$n" inline >/dev/null 2>&1
done
r1=$(total "$out/inline-20000.out"); r2=$(total "$out/inline-40000.out")
python3 -c "print(f'inline_when_idle round trip (submit, handler, wait): {($r2 - $r1) / 20000:.1f} instructions')"
for n in 20000 40000; do
    valgrind --tool=callgrind --callgrind-out-file="$out/async-$n.out" "$probe" "$n" async_inline >/dev/null 2>&1
done
a1=$(total "$out/async-20000.out"); a2=$(total "$out/async-40000.out")
python3 -c "print(f'inline_when_idle async round trip (submit(x).await on a current-thread runtime): {($a2 - $a1) / 20000:.1f} instructions')"
for n in 8192 16384; do
    valgrind --tool=callgrind --callgrind-out-file="$out/pipe-$n.out" "$probe" "$n" async_pipeline >/dev/null 2>&1
done
p1=$(total "$out/pipe-8192.out"); p2=$(total "$out/pipe-16384.out")
python3 -c "print(f'async pipelined request (4 tasks, submit then await, async handler on the runtime): {($p2 - $p1) / (4 * 8192):.1f} instructions')"
rm -r "$out"
