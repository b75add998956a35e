#!/usr/bin/env bash
# Run the whole system in the foreground: supervisord with the collector and the Streamlit app.
# Services must answer at REDIS_URL / DATABASE_URL (`make run` starts local ones first and passes
# their URLs through var/services.env). Ctrl-C or SIGTERM stops both programs cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f var/services.env ]; then
  while IFS='=' read -r k v; do
    case "$k" in ''|\#*) continue;; esac
    [ -z "${!k:-}" ] && export "$k=$v"
  done <var/services.env
fi
export LIQ_APP_PORT=${LIQ_APP_PORT:-8501}
export LIQ_RUN_DIR=${LIQ_RUN_DIR:-$PWD/var}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
mkdir -p var "$LIQ_RUN_DIR"
venv=${LIQ_VENV:-.venv}
host=$(hostname -I 2>/dev/null | awk '{print $1}')
echo "liquidation-aggregator: app at http://${host:-localhost}:$LIQ_APP_PORT (also http://localhost:$LIQ_APP_PORT)"
echo "liquidation-aggregator: status with 'make status'; Ctrl-C stops"
exec "$venv/bin/supervisord" -n -c supervisord.conf
