"""The collector as a separate process (`python -m collector`), as supervisord runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from collector.storage.spool import decode_batch
from tests import services


def start_collector(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "collector"],
            cwd=services.ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def collector_env(database_url: str, prefix: str, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": services.service_env()["REDIS_URL"],
        "LIQ_REDIS_PREFIX": prefix,
        "LIQ_SPOOL_DIR": str(tmp / "spool"),
        "LIQ_NONLIVE_SOURCE": "test",
        "LIQ_SYMBOLS": "BTCUSDT",
        "LIQ_EXCHANGES": "binance,bybit",
        "LIQ_METRICS_PORT": "0",
        **extra,
    }


def spooled_liquidations(path: Path) -> set[tuple[int, int]]:
    """(key, time) of every liquidation in a spool file, read as the next start would."""
    if not path.exists():
        return set()
    lines = [line for line in path.read_bytes().split(b"\n") if line]
    return {(e.key, e.time_ms) for line in lines for e in decode_batch(line).liquidations}
