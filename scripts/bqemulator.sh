#!/usr/bin/env bash
# Start the local BigQuery (the bqemulator package) in the background for `make run`, unless it
# answers already. Idempotent. Its data persists in .run/bqemulator between runs.
# Stop it with: kill "$(cat .run/bqemulator/bqemulator.pid)". With BQEMULATOR_RECORD=<file> (as
# `make run` sets it, in OMK_RUN_DIR) the pid of an emulator this script starts is also written
# there, for `manage.py stop` and `make run`'s exit to stop it; one already answering is not.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${VENV_BIN:-$ROOT/.venv/bin}"
REST_PORT="${BQEMULATOR_REST_PORT:-9050}"
GRPC_PORT="${BQEMULATOR_GRPC_PORT:-9060}"
PROJECT="${BIGQUERY_PROJECT:-omk-local}"
DATA_DIR="${BQEMULATOR_DATA_DIR:-$ROOT/.run/bqemulator}"
URL="http://127.0.0.1:$REST_PORT/bigquery/v2/projects/$PROJECT/datasets"

answers() {
  "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$URL" 2>/dev/null
}

if answers; then
  echo "bqemulator: answering on 127.0.0.1:$REST_PORT"
  exit 0
fi

mkdir -p "$DATA_DIR"
# bqemulator loads DuckDB's spatial extension at start and cannot download it offline: install it
# once from the duckdb-extension-spatial wheel.
"$BIN/python" -c 'import duckdb_extensions; duckdb_extensions.import_extension("spatial")'
nohup setsid "$BIN/bqemulator" start --persistent --data-dir "$DATA_DIR" --project "$PROJECT" \
  --rest-port "$REST_PORT" --grpc-port "$GRPC_PORT" --log-level warning \
  >>"$DATA_DIR/bqemulator.log" 2>&1 </dev/null &
echo $! >"$DATA_DIR/bqemulator.pid"
if [ -n "${BQEMULATOR_RECORD:-}" ]; then
  mkdir -p "$(dirname "$BQEMULATOR_RECORD")"
  echo $! >"$BQEMULATOR_RECORD"
fi

for _ in $(seq 1 120); do
  if answers; then
    echo "bqemulator: started on 127.0.0.1:$REST_PORT (pid $(cat "$DATA_DIR/bqemulator.pid"), log $DATA_DIR/bqemulator.log)"
    exit 0
  fi
  sleep 0.5
done
echo "bqemulator did not start; the end of its log:" >&2
tail -n 30 "$DATA_DIR/bqemulator.log" >&2
exit 1
