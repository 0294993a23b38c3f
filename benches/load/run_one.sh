# Sourced by ab.sh and read_buffer.sh: one run of SCENARIO against a wspool
# server started from SERVER_BIN on PORT (core 0), loaded by LOAD_BIN
# (core 1), `--quick` unless FULL=1; prints the load generator's JSON line.
run_one() {
  local server_bin=$1 load_bin=$2 scenario=$3 port=$4 server mode=--quick
  if [ "${FULL:-0}" = 1 ]; then mode=""; fi
  taskset -c 0 "$server_bin" serve wspool "$port" 2>/dev/null &
  server=$!
  for _ in $(seq 1 50); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  taskset -c 1 "$load_bin" load "$scenario" wspool "$port" "$server" $mode 2>/dev/null | tail -1
  kill "$server"
  wait "$server" 2>/dev/null || true
}
