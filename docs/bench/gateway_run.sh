#!/bin/bash
# docs/benchmarks.md, "Gateway cost per request at 10 deployments": starts BINARY serve on
# CONFIG and PORT (its log to LOG), drives it with docs/bench/gateway_load.rs built as LOAD, stops
# it with SIGTERM.  Usage: gateway_run.sh BINARY CONFIG PORT CONCURRENCY REQUESTS LOAD [LOG]
BIN=$1; CONFIG=$2; PORT=$3; CONC=$4; TOTAL=$5; LOAD=$6; LOG=${7:-/dev/null}
"$BIN" serve --config "$CONFIG" --port "$PORT" > /dev/null 2> "$LOG" &
PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
"$LOAD" "$PORT" "$CONC" "$TOTAL" "$PID"
kill -TERM "$PID"; wait "$PID"
