#!/usr/bin/env bash
# The main job of the README: train → evaluate → deploy locally through kfp.local, then serve the
# released model with KServe's ModelServer and answer the classic churn curl request (v1) and
# the same customer over the Open Inference Protocol (v2). The server keeps running until Ctrl-C;
# set CHURNFLOW_DEMO_EXIT=1 to stop after the sample requests.
# It writes where every other command looks by default: runs/latest (runs/latest/model is what
# `churnflow serve` and `churnflow drift` are shown with in the README).
# Exit status: 0 served, 4 the model was trained but the evaluation gate refused it and no earlier
# model was released to serve instead (as `churnflow run`), anything else a failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
out="${CHURNFLOW_DEMO_OUTPUT:-runs/latest}"
port="${CHURNFLOW_PORT:-8080}"
status=0
.venv/bin/churnflow run --output "$out" "$@" || status=$?
if [[ $status == 4 ]]; then
  # Trained but not released: the gate's reasons are printed above.
  if [[ ! -e "$out/model" ]]; then
    echo "demo: the model was trained but not released (the evaluation gate refused it; reasons above)," \
      "and no earlier model is released in $out/model: nothing to serve" >&2
    exit 4
  fi
  echo "demo: this run's model was not released (reasons above); serving the model released before," \
    "still in $out/model" >&2
elif [[ $status != 0 ]]; then
  exit "$status"
fi
.venv/bin/churnflow serve --model-dir "$out/model" --port "$port" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$port/v2/models/churn/ready" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "demo: the model server exited" >&2; exit 1; }
  sleep 0.2
done
echo "--- v1 (the classic churn request):"
curl -s -X POST "http://127.0.0.1:$port/v1/models/churn:predict" -H "Content-Type: application/json" \
  -d '{"instances": [{"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}]}'
echo
echo "--- v2 (Open Inference Protocol, one input per column):"
curl -s -X POST "http://127.0.0.1:$port/v2/models/churn/infer" -H "Content-Type: application/json" -d '{
  "inputs": [
    {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [12]},
    {"name": "usage", "shape": [1], "datatype": "FP64", "data": [50]},
    {"name": "age", "shape": [1], "datatype": "INT64", "data": [30]},
    {"name": "monthly_charges", "shape": [1], "datatype": "FP64", "data": [70]},
    {"name": "contract_type", "shape": [1], "datatype": "BYTES", "data": ["Month-to-month"]}]}'
echo
if [[ "${CHURNFLOW_DEMO_EXIT:-0}" == 1 ]]; then exit 0; fi
echo "--- serving on http://127.0.0.1:$port (metrics: /metrics); Ctrl-C to stop"
wait $server
