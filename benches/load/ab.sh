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
. "$(dirname "$0")/run_one.sh"
for _ in $(seq 1 "$PAIRS"); do
  for tag in old new; do
    if [ "$tag" = old ]; then bin=$OLD; else bin=$NEW; fi
    port=$((port + 1))
    # NEW also runs the load generator, so both servers see the same client.
    echo "$tag $SCENARIO $(run_one "$bin" "$NEW" "$SCENARIO" "$port")"
  done
done
