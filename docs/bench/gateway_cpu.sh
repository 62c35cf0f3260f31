#!/bin/bash
# docs/benchmarks.md, "The gateway's own cost per request at 10 mocked deployments": starts
# BINARY serve on a group `big` of 10 mocked deployments (as benches/scale.rs writes it), warms it
# up (c=16, 1 s), drives it with the harness' `load` at CONCURRENCY for SECONDS and prints
# requests/s, p50, p99 and the server's CPU time per request (utime + stime from /proc).
# Usage: gateway_cpu.sh BINARY CONCURRENCY SECONDS LOAD [PORT]
BIN=$1; C=$2; S=$3; LOAD=$4; PORT=${5:-18400}
CONFIG=$(mktemp --suffix=.yaml)
echo "model_list:" > "$CONFIG"
for i in $(seq 0 9); do
  printf '  - model_name: big\n    litellm_params: {model: openai/gpt-4o-%s, api_key: sk-x, mock_response: ok, rpm: 100000000, tpm: 100000000000}\n' "$i" >> "$CONFIG"
done
"$BIN" serve --config "$CONFIG" --port "$PORT" > /dev/null 2>&1 &
PID=$!
for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
"$LOAD" --port "$PORT" --connections 16 --seconds 1 --model big > /dev/null
before=$(awk '{print $14+$15}' "/proc/$PID/stat")
out=$("$LOAD" --port "$PORT" --connections "$C" --seconds "$S" --model big | tail -1)
after=$(awk '{print $14+$15}' "/proc/$PID/stat")
kill -TERM "$PID"; wait "$PID"; rm -f "$CONFIG"
python3 -c "
import json
d = json.loads('''$out''')
cpu = ($after - $before) / $(getconf CLK_TCK)
print('%s c=%s requests/s=%.0f p50=%.2f ms p99=%.2f ms cpu/request=%.1f us' % ('$BIN', $C,
      d['requests_per_s'], d['p50_ms'], d['p99_ms'], cpu / max(d['requests'], 1) * 1e6))
"
