#!/usr/bin/env bash
# Kernel memory of idle connections: /proc/meminfo's Slab and the TCP
# buffer pages of /proc/net/sockstat, sampled while idle_15k holds 15,000
# loopback connections (both ends are on this machine: the figure is per
# pair). BENCHMARKS.md, "1,000,000 connections per node, on paper".
#
#   benches/load/kernel_memory.sh [BIN]
set -euo pipefail
BIN=${1:-target/release/wspool-bench}
. "$(dirname "$0")/run_one.sh"
slab() { awk '/^Slab:/{print $2}' /proc/meminfo; }
tcp_pages() { awk '/^TCP:/{print $NF}' /proc/net/sockstat; }
base_slab=$(slab) base_tcp=$(tcp_pages) max_slab=0 max_tcp=0
out=$(mktemp)
run_one "$BIN" "$BIN" idle_15k 9700 >"$out" &
load=$!
while kill -0 "$load" 2>/dev/null; do
  s=$(slab) t=$(tcp_pages)
  if [ "$s" -gt "$max_slab" ]; then max_slab=$s; fi
  if [ "$t" -gt "$max_tcp" ]; then max_tcp=$t; fi
  sleep 0.2
done
wait "$load"
echo "slab KiB per connection pair: $(( (max_slab - base_slab) * 100 / 15000 ))e-2"
echo "TCP buffer pages at most: $((max_tcp - base_tcp)) over the run"
cat "$out"
rm -f "$out"
