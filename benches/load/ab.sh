#!/usr/bin/env bash
# A/B two wspool server binaries under the same load generator, runs
# interleaved (old, new, old, new, ...), one JSON line per run.
#
#   benches/load/ab.sh OLD_BIN NEW_BIN SCENARIO [PAIRS]
#
# Build OLD_BIN from another commit, e.g.:
#   git worktree add /tmp/old <commit>
#   (cd /tmp/old && CARGO_TARGET_DIR=$PWD/target/old cargo build --release -p wspool-bench)
# NEW_BIN also runs the load generator, so both servers see the same client.
set -euo pipefail
OLD=$1 NEW=$2 SCENARIO=$3 PAIRS=${4:-3}
port=9400
for _ in $(seq 1 "$PAIRS"); do
  for tag in old new; do
    if [ "$tag" = old ]; then bin=$OLD; else bin=$NEW; fi
    port=$((port + 1))
    taskset -c 0 "$bin" serve wspool "$port" 2>/dev/null &
    server=$!
    for _ in $(seq 1 50); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    out=$(taskset -c 1 "$NEW" load "$SCENARIO" wspool "$port" "$server" --quick 2>/dev/null | tail -1)
    kill "$server"
    wait "$server" 2>/dev/null || true
    echo "$tag $SCENARIO $out"
  done
done
