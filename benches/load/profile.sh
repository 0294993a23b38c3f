#!/usr/bin/env bash
# Where a scenario's server time goes: `perf record` of a wspool server
# (core 0) while the load generator (core 1) runs SCENARIO in full mode,
# sampled for LEN seconds after DELAY (the defaults fall inside
# fanout_10k's publishing phase). BENCHMARKS.md, issue 20.
#
#   benches/load/profile.sh BIN SCENARIO OUT.data [DELAY] [LEN]
#   perf report -i OUT.data --no-children --sort symbol -g none
#
# With HEAP=1, the server runs under heaptrack instead (OUT.zst, every
# allocation; `heaptrack_print -f OUT.zst`): where the bytes of idle_15k
# or burst_idle_15k go. SERVER=NAME profiles another server (default wspool).
set -euo pipefail
BIN=$1 SCENARIO=$2 OUT=$3 DELAY=${4:-7} LEN=${5:-4}
port=9550
if [ "${HEAP:-0}" = 1 ]; then
  taskset -c 0 heaptrack -o "${OUT%.zst}" "$BIN" serve "${SERVER:-wspool}" "$port" >/dev/null 2>&1 &
else
  taskset -c 0 "$BIN" serve "${SERVER:-wspool}" "$port" 2>/dev/null &
fi
for _ in $(seq 1 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
server=$(pgrep -f -n "serve ${SERVER:-wspool} $port")
recorder=
if [ "${HEAP:-0}" != 1 ]; then
  (sleep "$DELAY"; perf record -F 1000 -g --call-graph dwarf,16384 -p "$server" -o "$OUT" -- sleep "$LEN" >/dev/null 2>&1) &
  recorder=$!
fi
taskset -c 1 "$BIN" load "$SCENARIO" "${SERVER:-wspool}" "$port" "$server" 2>/dev/null | tail -1
# Only perf is waited for: under heaptrack the last job is the server.
if [ -n "$recorder" ]; then wait "$recorder" || true; fi
kill "$server"
sleep 2
