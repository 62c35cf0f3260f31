#!/bin/bash
# docs/benchmarks.md, "An HTTP deployment's per-call work built once": the instructions
# `ferrolite serve` spends per request through HTTP deployments to a loopback upstream. Starts
# the harness' upstream (`LOAD --upstream`), BINARY serve under `valgrind --tool=callgrind` on a
# group `big` of 10 HTTP deployments (as benches/scale.rs writes them), drives it with `LOAD`
# at 4 connections for REQUESTS requests in all, stops it, and prints the run's total
# instructions and the requests answered. Two runs' difference of totals over their difference
# of requests is the cost of a request (start-up and shut-down cancel out).
# Usage: gateway_callgrind_http.sh BINARY LOAD REQUESTS [PORT] [OUT]
BIN=$1; LOAD=$2; N=$3; PORT=${4:-18500}; OUT=${5:-$(mktemp --suffix=.callgrind)}
coproc UP { exec "$LOAD" --upstream; }
read -r line <&"${UP[0]}"
UPORT=${line#listening }
CONFIG=$(mktemp --suffix=.yaml)
echo "model_list:" > "$CONFIG"
for i in $(seq 0 9); do
  printf '  - model_name: big\n    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:%s/d%s/v1", api_key: sk-x, rpm: 100000000, tpm: 100000000000}\n' "$UPORT" "$i" >> "$CONFIG"
done
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" serve --config "$CONFIG" --port "$PORT" > /dev/null 2>&1 &
PID=$!
for _ in $(seq 1 1200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
res=$("$LOAD" --port "$PORT" --connections 4 --requests "$N" --seconds 0 --model big | tail -1)
kill -TERM "$PID"; wait "$PID"
kill "$UP_PID" 2>/dev/null; wait "$UP_PID" 2>/dev/null
rm -f "$CONFIG"
total=$(grep -E '^(summary|totals):' "$OUT" | head -1 | awk '{print $2}')
requests=$(python3 -c "import json; print(json.loads('''$res''')['requests'])")
echo "$BIN asked=$N instructions=$total requests=$requests out=$OUT"
