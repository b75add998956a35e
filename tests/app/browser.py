"""Running the app for browser tests: a real `streamlit run app/main.py` on a free loopback port,
and headless chromium (Debian's /usr/bin/chromium through playwright) to look at it.

Every `app_server()` is a newly started process: the first sessions it serves meet Streamlit's
legacy multipage mode for app/pages/ (see app/gate.py), which is what the gate tests need.
Screenshots and server logs land in tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis
from playwright.sync_api import Page

from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    ROOT,
    Coverage,
    cascade_of,
    health_snapshot,
    insert_candles,
    insert_cascades,
    insert_coverage,
    insert_liquidations,
    liq,
    make_candles,
    now_ms,
    redis_cascades,
    redis_health,
    redis_heartbeat,
    redis_liquidations,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
HOUR = 3_600_000
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, f"streamlit exited; see {log}"
        assert time.monotonic() < deadline, "streamlit did not become healthy in 60 s"
        time.sleep(0.2)


def app_env(settings: Settings, password: str = "", **extra: str) -> dict[str, str]:
    """The environment of an app server on this test's database and Redis prefix."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": str(settings.database_url),
        "LIQ_APP_DATABASE_URL": str(settings.app_database_url),
        "REDIS_URL": str(settings.redis_url),
        "LIQ_REDIS_PREFIX": settings.redis_prefix,
        "LIQ_NONLIVE_SOURCE": "test",
        "LIQ_SYMBOLS": ",".join(settings.symbols),
        "LIQ_EXCHANGES": ",".join(settings.exchanges),
        "LIQ_APP_PASSWORD": password,
        **extra,
    }


@contextmanager
def app_server(env: Mapping[str, str], log_name: str = "streamlit-server.log") -> Iterator[str]:
    """A newly started app server; yields its base URL and stops it (SIGTERM) afterwards."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = ARTIFACTS / log_name
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "streamlit"), "run", "app/main.py", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_idle(page: Page, quiet_ms: int = 1500, timeout_ms: int = 60_000) -> None:
    """The app reports no script running, and no element is still a loading skeleton (charts and
    tables mount after the script ends), for `quiet_ms`."""
    page.wait_for_function(
        """(quiet) => {
            const running = document.querySelector('[data-testid="stStatusWidget"]');
            const idle = (!running || !running.innerText.toLowerCase().includes('running'))
                && !document.querySelector('[data-testid="stSkeleton"]');
            if (!idle) { window.__idleSince = undefined; return false; }
            window.__idleSince = window.__idleSince || Date.now();
            return Date.now() - window.__idleSince > quiet;
        }""",
        arg=quiet_ms,
        polling=250,
        timeout=timeout_ms,
    )


def wait_until_done(page: Page, title: str) -> None:
    """The page's title is drawn and the app reports no script running for a moment."""
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    wait_idle(page)


def assert_no_errors(page: Page, name: str) -> None:
    for selector in ('[data-testid="stException"]', ".stException"):
        assert page.locator(selector).count() == 0, f"{name}: {page.locator(selector).first.inner_text()}"


# --- Data to look at -----------------------------------------------------------------------------


def seed_pages(settings: Settings, client: redis.Redis, extra: Sequence[Liquidation] = ()) -> list[Liquidation]:
    """Two days of BTCUSDT liquidations (plus `extra`), candles, coverage, a cascade and the live
    view in Redis: something to show on every page. Returns the liquidations written."""
    now = now_ms()
    events = []
    for i in range(120):  # two days, a liquidation every 24 minutes, alternating sides and venues
        side = "LONG" if i % 3 else "SHORT"
        exchange = "bybit" if i % 2 else "binance"
        events.append(
            liq(exchange, side, f"{0.05 + (i % 7) * 0.3:.4f}", f"{60000 + i * 13.5:.2f}", now - i * 24 * 60_000 - 5000)
        )
    events.append(liq("bybit", "LONG", "4", "61000", now - 5 * HOUR))  # institutional size
    events += extra
    insert_liquidations(settings.database_url, events)
    insert_candles(settings.database_url, make_candles("binance", "BTCUSDT", now - 48 * HOUR, 48 * 60, step="0.5"))
    insert_coverage(
        settings.database_url,
        [
            Coverage("binance", now - 48 * HOUR, now - 20 * HOUR, now - 20 * HOUR),
            Coverage("binance", now - 18 * HOUR, now, None),
            Coverage("bybit", now - 48 * HOUR, now, None),
        ],
    )
    recent = [e for e in events if e.time_ms >= now - HOUR]
    insert_cascades(settings.database_url, [cascade_of(events[:3], 11)])
    redis_liquidations(client, settings.redis_prefix, recent)
    redis_cascades(client, settings.redis_prefix, [cascade_of(recent[:2], 11, active=True)])
    redis_health(client, settings.redis_prefix, [health_snapshot("binance", now), health_snapshot("bybit", now)])
    redis_heartbeat(client, settings.redis_prefix, now)
    return events


def heartbeat(settings: Settings, stop: threading.Event) -> None:
    """Play the collector's part: refresh the heartbeat every second so the app sees it running."""
    client = redis.Redis.from_url(str(settings.redis_url))
    try:
        while not stop.wait(1.0):
            redis_heartbeat(client, settings.redis_prefix, now_ms())
    finally:
        client.close()
