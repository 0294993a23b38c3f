#!/usr/bin/env bash
# The read buffer's size against idle memory and large inbound messages:
# the same wspool server binary with each size, runs interleaved, one JSON
# line per run (BENCHMARKS.md, "The read buffer").
#
#   benches/load/read_buffer.sh BIN "512 1024 4096" [ROUNDS]
set -euo pipefail
BIN=$1 SIZES=$2 ROUNDS=${3:-2}
port=9600
for _ in $(seq 1 "$ROUNDS"); do
  for size in $SIZES; do
    for scenario in idle_15k inbound_64k; do
      port=$((port + 1))
      WSPOOL_BENCH_READ_BUFFER=$size taskset -c 0 "$BIN" serve wspool "$port" 2>/dev/null &
      server=$!
      for _ in $(seq 1 50); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
      done
      out=$(taskset -c 1 "$BIN" load "$scenario" wspool "$port" "$server" --quick 2>/dev/null | tail -1)
      kill "$server"
      wait "$server" 2>/dev/null || true
      echo "$size $scenario $out"
    done
  done
done
