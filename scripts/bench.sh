#!/usr/bin/env bash
# Runs every benchmark RUNS times (default 3) on a release build and
# regenerates docs/BENCHMARKS.md and docs/benchmarks.svg from the results.
#   scripts/bench.sh [RUNS] [BENCHMARK...]
# PostgreSQL must answer on 127.0.0.1:5432 (the ingest and cluster-*
# benchmarks use it); TESSERA_BENCH_PG_URL overrides the admin URL used to
# create databases. The cluster-* benchmarks also need NATS with JetStream
# at nats://127.0.0.1:4222 (TESSERA_BENCH_NATS_URL overrides it).
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-3}"
shift || true
benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
  benches=(relay-throughput relay-latency relay-messages fanout idle-devices idle-pairs connect-storm cluster-relay cluster-idle cluster-storm session-setup ingest console-pages screen-encode screen-workloads)
fi

cargo build --release --locked -p tessera -p tessera-bench
bench=target/release/tessera-bench
results="target/bench-results"
mkdir -p "$results"
# This run's figures replace the earlier ones of the same benchmarks.
for b in "${benches[@]}"; do
  rm -f "$results/$b"-*.json
done

# 10,000 device connections need as many descriptors on each side.
ulimit -n "$(ulimit -Hn)"

for i in $(seq 1 "$runs"); do
  for b in "${benches[@]}"; do
    echo "==> $b (run $i of $runs)"
    "$bench" "$b" --json "$results/$b-$i.json"
  done
done
"$bench" report --results "$results" --out docs/BENCHMARKS.md --chart docs/benchmarks.svg
