#!/usr/bin/env bash
# System packages the project needs, by role. The Dockerfile runs this same script.
#   install-system-packages.sh runtime   redis-server, and TimescaleDB's tooling (see below)
#   install-system-packages.sh test      runtime + Debian's chromium and chromedriver, and valgrind
#                                        (bench.bench_parse_instructions counts instructions with it)
#   install-system-packages.sh image     only what the app image needs (services run elsewhere)
# Every role gets a C compiler and the Python headers: scripts/build_native.py compiles the parse
# hot path's C twins (common/_events_native.c, collector/_validation_native.c).
# Debian 13 gets postgresql-17-timescaledb from its own archive; Debian 12 has none, so it gets
# debootstrap and scripts/services.sh builds a Debian 13 root for PostgreSQL once.
# Idempotent: packages already installed cost one dpkg query, no download.
set -euo pipefail
role=${1:-runtime}

pkgs=(ca-certificates)
# Debian's python3 has no venv module until python3-venv is installed.
python3 -c "import ensurepip, venv" 2>/dev/null || pkgs+=(python3-venv python3-pip)
pkgs+=(gcc libc6-dev)
# Debian's own python3 keeps Python.h in python3-dev; pyenv and the python image ship theirs.
"${PYTHON:-python3}" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || pkgs+=(python3-dev)
if [ "$role" != "image" ]; then
  pkgs+=(redis-server redis-tools make)
  . /etc/os-release
  if [ "${VERSION_ID%%.*}" -ge 13 ] 2>/dev/null || [ "${VERSION_CODENAME:-}" = "trixie" ]; then
    pkgs+=(postgresql-17-timescaledb postgresql-client-17)
  else
    pkgs+=(debootstrap)
  fi
fi
if [ "$role" = "test" ]; then
  pkgs+=(chromium chromium-driver fonts-dejavu-core valgrind)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-packages: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-system-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Don't let the packages start their own daemons: scripts/services.sh starts ours on loopback.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; own_policy=1; fi
trap '[ $own_policy = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
