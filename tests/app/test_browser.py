"""Every page in a real headless chromium against a real `streamlit run` server and seeded data.

Screenshots land in tests/artifacts/ (git-ignored) for a human look. Chromium comes from Debian
(/usr/bin/chromium); without it this test fails, it never skips. app2 adds its pages to PAGES.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Page, sync_playwright

from common.config import Settings
from common.live_view import Keys
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
# (url path, query string, text the finished page shows). app2: add heatmap, cascades, analyses, explorer.
PAGES: list[tuple[str, str, str]] = [
    ("live", "", "Live — last 60 minutes"),
    ("accumulated", "", "Accumulated"),
    ("chart", "hours=24", "Chart"),
    ("chart", "hours=168&markers=1", "Chart"),
    # app2's pages
    ("heatmap", "hours=48", "Heatmap"),
    ("heatmap", "hours=48&hm_side=SHORT&hm_metric=Count", "Heatmap"),
    ("cascades", "", "Cascades"),
    ("analyses", "hours=48", "Analyses"),
    ("explorer", "hours=48&min_usd=10000", "Explorer"),
]
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(settings: Settings, client: redis.Redis) -> None:
    now = now_ms()
    events = []
    for i in range(120):  # two days, a liquidation every 24 minutes, alternating sides and venues
        side = "LONG" if i % 3 else "SHORT"
        exchange = "bybit" if i % 2 else "binance"
        events.append(
            liq(exchange, side, f"{0.05 + (i % 7) * 0.3:.4f}", f"{60000 + i * 13.5:.2f}", now - i * 24 * 60_000 - 5000)
        )
    events.append(liq("bybit", "LONG", "4", "61000", now - 5 * HOUR))  # institutional size
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


def _heartbeat(settings: Settings, stop: threading.Event) -> None:
    """Play the collector's part: refresh the heartbeat every second so the app sees it running."""
    client = redis.Redis.from_url(str(settings.redis_url))
    try:
        while not stop.wait(1.0):
            redis_heartbeat(client, settings.redis_prefix, now_ms())
    finally:
        client.close()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, "streamlit exited; see tests/artifacts/streamlit-server.log"
        assert time.monotonic() < deadline, "streamlit did not become healthy in 60 s"
        time.sleep(0.2)


@pytest.fixture
def server(settings: Settings, sync_redis: redis.Redis) -> Iterator[str]:
    _seed(settings, sync_redis)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(settings, stop), daemon=True)
    beat.start()
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": str(settings.database_url),
        "LIQ_APP_DATABASE_URL": str(settings.app_database_url),
        "REDIS_URL": str(settings.redis_url),
        "LIQ_REDIS_PREFIX": settings.redis_prefix,
        "LIQ_NONLIVE_SOURCE": "test",
        "LIQ_APP_PASSWORD": "",
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / "streamlit-server.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "streamlit"), "run", "app/main.py", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc)
            yield url
        finally:
            stop.set()
            beat.join(timeout=5)
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_done(page: Page, title: str) -> None:
    """The page's title is drawn and the app reports no script running for a moment."""
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    page.wait_for_function(
        """() => {
            const running = document.querySelector('[data-testid="stStatusWidget"]');
            const idle = !running || !running.innerText.toLowerCase().includes('running');
            if (!idle) { window.__idleSince = undefined; return false; }
            window.__idleSince = window.__idleSince || Date.now();
            return Date.now() - window.__idleSince > 1500;
        }""",
        polling=250,
        timeout=60_000,
    )


def _assert_no_errors(page: Page, name: str) -> None:
    for selector in ('[data-testid="stException"]', ".stException"):
        assert page.locator(selector).count() == 0, f"{name}: {page.locator(selector).first.inner_text()}"


@pytest.mark.browser
def test_every_page_renders_in_chromium(server: str, settings: Settings, sync_redis: redis.Redis) -> None:
    assert CHROMIUM.is_file(), "Debian's chromium is required: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2000})  # tall: Streamlit scrolls inside
            # First request of a fresh server straight to a page: the frame (gate, filters) still runs.
            # (heatmap does not call ensure_frame itself: app.state.current_view() covers it.)
            page.goto(server + "/heatmap?hours=48", wait_until="domcontentloaded")
            _wait_until_done(page, "Heatmap")
            page.get_by_role("heading", name="Filters").wait_for(timeout=30_000)
            _assert_no_errors(page, "heatmap first")
            page.goto(server + "/?symbol=BTCUSDT&hours=24", wait_until="domcontentloaded")
            _wait_until_done(page, "Live — last 60 minutes")
            assert page.url.startswith(f"{server}/live"), page.url  # the root forwards to /live
            assert "hours=24" in page.url  # ... keeping the view in the link
            for path, query, title in PAGES:
                page.goto(f"{server}/{path}" + (f"?{query}" if query else ""), wait_until="domcontentloaded")
                _wait_until_done(page, title)
                _assert_no_errors(page, path)
                if path == "chart":
                    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
                name = path + ("-" + query.replace("=", "").replace("&", "-") if query else "")
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

            # The live panel refreshes itself: a new liquidation shows up without any user action.
            page.goto(f"{server}/live", wait_until="domcontentloaded")
            _wait_until_done(page, "Live — last 60 minutes")
            before = page.get_by_test_id("stMetricValue").nth(0).inner_text()
            redis_liquidations(sync_redis, settings.redis_prefix, [liq("bybit", "SHORT", "1", "1", now_ms() - 1000)])
            redis_heartbeat(sync_redis, settings.redis_prefix, now_ms())
            page.wait_for_function(
                "(before) => document.querySelector('[data-testid=\"stMetricValue\"]').innerText !== before",
                arg=before,
                timeout=40_000,
            )
            assert (
                int(page.get_by_test_id("stMetricValue").nth(0).inner_text().replace(",", ""))
                == int(before.replace(",", "")) + 1
            )
            assert sync_redis.exists(Keys(settings.redis_prefix).liqs)
            _assert_no_errors(page, "live after refresh")
        finally:
            browser.close()
