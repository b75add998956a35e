#!/usr/bin/env bash
# Create .venv and install the pinned Python dependencies. The Dockerfile runs this same script.
#   install-python.sh runtime   requirements.txt
#   install-python.sh dev       requirements-dev.txt (runtime + test and lint tools)
# Idempotent: a stamp per requirements file skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
role=${1:-runtime}
req=requirements.txt
[ "$role" = "dev" ] && req=requirements-dev.txt
venv=${LIQ_VENV:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "install-python: creating $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$role"
sum=$(cat requirements.txt "$req" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
  exit 0
fi
echo "install-python: installing $req"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
echo "$sum" >"$stamp"
