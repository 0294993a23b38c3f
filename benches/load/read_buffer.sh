#!/usr/bin/env bash
# The read buffer's size against idle memory and large inbound messages:
# the same wspool server binary with each size, runs interleaved, one JSON
# line per run (BENCHMARKS.md, "The read buffer").
#
#   benches/load/read_buffer.sh BIN "512 1024 4096" [ROUNDS]
set -euo pipefail
BIN=$1 SIZES=$2 ROUNDS=${3:-2}
port=9600
. "$(dirname "$0")/run_one.sh"
for _ in $(seq 1 "$ROUNDS"); do
  for size in $SIZES; do
    for scenario in idle_15k inbound_64k; do
      port=$((port + 1))
      out=$(WSPOOL_BENCH_READ_BUFFER=$size run_one "$BIN" "$BIN" "$scenario" "$port")
      echo "$size $scenario $out"
    done
  done
done
