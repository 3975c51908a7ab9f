#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU machine that has torch, numpy and pandas:
#   bench/gpu_check.sh --out DIR [--wheels DIR] [--dry-run] [--sections tests raw ...]
# --wheels DIR installs the serving stack (FastAPI, SQLAlchemy, PyAV, ...) from wheels
# carried there (no registry needed); see bench/gpu_check.py for what it measures.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$wheels" ]; then
  site="$(mktemp -d /tmp/vidmon-gpu-site.XXXXXX)"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$wheels"/*.whl
  export PYTHONPATH="$site:$PYTHONPATH"
fi
export MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" bench/gpu_check.py "${args[@]}"
