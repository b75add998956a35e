"""Every page in a real headless chromium against a real `streamlit run` server and seeded data.

Screenshots land in tests/artifacts/ (git-ignored) for a human look. Chromium comes from Debian
(/usr/bin/chromium); without it this test fails, it never skips.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import sync_playwright

from common.config import Settings
from common.live_view import Keys
from tests.app.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    app_env,
    app_server,
    assert_no_errors,
    heartbeat,
    seed_pages,
    wait_until_done,
)
from tests.app.seed import (
    liq,
    now_ms,
    redis_heartbeat,
    redis_liquidations,
)

HOUR = 3_600_000
# (url path, query string, text the finished page shows): every page.
PAGES: list[tuple[str, str, str]] = [
    ("market", "window=24", "Market overview"),
    ("market", "window=1&feed_min=1000", "Market overview"),
    ("live", "", "Live — last 60 minutes"),
    ("accumulated", "", "Accumulated"),
    ("chart", "hours=24", "Chart"),
    ("chart", "hours=168&markers=1", "Chart"),
    ("heatmap", "hours=48", "Heatmap"),
    ("heatmap", "hours=48&hm_side=SHORT&hm_metric=Count", "Heatmap"),
    ("cascades", "", "Cascades"),
    ("alerts", "hours=24", "Alerts"),
    ("analyses", "hours=48", "Analyses"),
    ("explorer", "hours=48&min_usd=10000", "Explorer"),
    # a coin, a contract and the whole market on the same pages
    ("accumulated", "target=BTC&hours=48", "Accumulated"),
    ("chart", "target=bybit:BTCUSDT&hours=24", "Chart"),
    ("cascades", "target=ALL&hours=48&side=LONG", "Cascades"),
    ("explorer", "target=bybit:BTCUSDT&hours=48", "Explorer"),
]


@pytest.fixture
def server(settings: Settings, sync_redis: redis.Redis) -> Iterator[str]:
    seed_pages(settings, sync_redis)
    stop = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(settings, stop), daemon=True)
    beat.start()
    try:
        with app_server(app_env(settings)) as url:
            yield url
    finally:
        stop.set()
        beat.join(timeout=5)


@pytest.mark.browser
def test_every_page_renders_in_chromium(server: str, settings: Settings, sync_redis: redis.Redis) -> None:
    assert CHROMIUM.is_file(), "Debian's chromium is required: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2000})  # tall: Streamlit scrolls inside
            # First request of a fresh server straight to a page: the frame (gate, filters) still runs.
            page.goto(server + "/heatmap?hours=48", wait_until="domcontentloaded")
            wait_until_done(page, "Heatmap")
            page.get_by_role("heading", name="Filters").wait_for(timeout=30_000)
            assert_no_errors(page, "heatmap first")
            page.goto(server + "/?symbol=BTCUSDT&hours=24", wait_until="domcontentloaded")
            wait_until_done(page, "Market overview")
            assert page.url.startswith(f"{server}/market"), page.url  # the root forwards to /market
            assert "hours=24" in page.url  # ... keeping the view in the link
            for path, query, title in PAGES:
                page.goto(f"{server}/{path}" + (f"?{query}" if query else ""), wait_until="domcontentloaded")
                wait_until_done(page, title)
                assert_no_errors(page, path)
                if path == "chart":
                    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
                name = path + ("-" + query.replace("=", "").replace("&", "-").replace(":", "_") if query else "")
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

            # The live panel refreshes itself: a new liquidation shows up without any user action.
            page.goto(f"{server}/live", wait_until="domcontentloaded")
            wait_until_done(page, "Live — last 60 minutes")
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
            assert_no_errors(page, "live after refresh")
        finally:
            browser.close()
