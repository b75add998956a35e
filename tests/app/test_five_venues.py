"""Five venues in the app and the CLI: every page in real chromium, and `app.cli totals`, with
Binance, Bybit, OKX, Gate and Bitget configured and seeded, each under its own symbol spelling.

Nothing in the app names a venue: the filters, tables, colours and lower-bound notes come from the
venue registry (common.venues) and LIQ_EXCHANGES. Screenshots land in tests/artifacts/five-*.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis
from playwright.sync_api import sync_playwright

from app.format import fmt_usd
from common.config import Settings
from common.venues import lower_bound_note
from tests import services
from tests.app.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    app_env,
    app_server,
    assert_no_errors,
    wait_until_done,
)
from tests.app.seed import (
    all_text,
    cascade_of,
    health_snapshot,
    insert_cascades,
    insert_liquidations,
    liq,
    no_exceptions,
    now_ms,
    open_app,
    redis_health,
    redis_heartbeat,
    redis_liquidations,
)
from tests.app.seed import app_env as seed_app_env

ROOT = services.ROOT
VENUES = ("binance", "bybit", "okx", "gate", "bitget")
BTC = {"binance": "BTCUSDT", "bybit": "BTCUSDT", "okx": "BTC-USDT-SWAP", "gate": "BTC_USDT", "bitget": "BTCUSDT"}
MINUTE = 60_000


@pytest.fixture
def five(clean_db: str, redis_prefix: str, tmp_path: os.PathLike[str]) -> Settings:
    return services.make_settings(clean_db, redis_prefix, tmp_path, LIQ_EXCHANGES=",".join(VENUES), LIQ_SYMBOLS="ALL")


def _seed(settings: Settings, client: redis.Redis) -> dict[str, Decimal]:
    """Per venue: BTC liquidations on both sides in the last hour, and 40 small coins each over a day.
    Returns USD per venue."""
    now = now_ms()
    events = []
    for i, venue in enumerate(VENUES):
        for k in range(6):
            side = "LONG" if k % 2 else "SHORT"
            events.append(liq(venue, side, "0.1", f"{90000 + i}", now - (k + 1) * MINUTE - i * 1000, BTC[venue]))
        for c in range(40):
            coin = f"Q{c:03d}".replace("0", "A").replace("1", "B").replace("2", "C").replace("3", "D")
            symbol = {"okx": f"{coin}-USDT-SWAP", "gate": f"{coin}_USDT"}.get(venue, f"{coin}USDT")
            events.append(liq(venue, "LONG", "10", "1.5", now - (c + 2) * 30 * MINUTE - i * 1000, symbol))
    insert_liquidations(settings.database_url, events)
    btc = sorted((e for e in events if e.time_ms >= now - 10 * MINUTE and e.side == "LONG"), key=lambda e: e.time_ms)
    insert_cascades(settings.database_url, [cascade_of(btc, 31)])
    recent = [e for e in events if e.time_ms >= now - 3_600_000]
    redis_liquidations(client, settings.redis_prefix, recent)
    redis_health(client, settings.redis_prefix, [health_snapshot(v, now) for v in VENUES])
    redis_heartbeat(client, settings.redis_prefix, now, exchanges=VENUES)
    usd: dict[str, Decimal] = {}
    for e in events:
        usd[e.exchange] = usd.get(e.exchange, Decimal(0)) + e.value_usd
    return usd


@pytest.fixture
def server(five: Settings, sync_redis: redis.Redis) -> Iterator[str]:
    _seed(five, sync_redis)
    stop = threading.Event()

    def beat() -> None:
        client = redis.Redis.from_url(str(five.redis_url))
        try:
            while not stop.wait(1.0):
                redis_heartbeat(client, five.redis_prefix, now_ms(), exchanges=VENUES)
                redis_health(client, five.redis_prefix, [health_snapshot(v, now_ms()) for v in VENUES])
        finally:
            client.close()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        with app_server(app_env(five), log_name="streamlit-five.log") as url:
            yield url
    finally:
        stop.set()
        thread.join(timeout=5)


@pytest.mark.browser
def test_every_page_shows_five_venues(server: str, five: Settings) -> None:
    assert CHROMIUM.is_file(), "Debian's chromium is required: apt-get install chromium"
    note = lower_bound_note(VENUES)
    assert note.startswith("Binance, OKX, Gate and Bitget figures are lower bounds: ")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2200})
            for path, query, title, must in [
                # Tables are drawn on a canvas: their rows are checked with AppTest below; here the text.
                ("live", "symbol=ALL", "Live — last 60 minutes", [note]),
                ("accumulated", "symbol=ALL&hours=48", "Accumulated", [note]),
                ("cascades", "symbol=ALL&hours=48", "Cascades", [note]),
                ("analyses", "symbol=ALL&hours=48", "Analyses", [note]),
                ("explorer", "symbol=ALL&hours=48", "Explorer", [note]),
                ("heatmap", "symbol=ALL&hours=48", "Heatmap", [note]),
            ]:
                page.goto(f"{server}/{path}?{query}", wait_until="domcontentloaded")
                wait_until_done(page, title)
                assert_no_errors(page, path)
                text = page.locator("body").inner_text()
                for word in must:
                    assert word in text, (path, word, text[-3000:])
                page.screenshot(path=str(ARTIFACTS / f"five-{path}.png"), full_page=True)
            # The Exchanges filter offers every configured venue.
            page.goto(f"{server}/accumulated?symbol=ALL&hours=48", wait_until="domcontentloaded")
            wait_until_done(page, "Accumulated")
            page.get_by_text("Exchanges").first.wait_for(timeout=30_000)
            sidebar = page.get_by_test_id("stSidebar").inner_text()
            for venue in VENUES:
                assert venue in sidebar, venue
        finally:
            browser.close()


def test_cli_totals_list_five_venues(five: Settings, sync_redis: redis.Redis) -> None:
    usd = _seed(five, sync_redis)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": str(five.database_url),
        "LIQ_APP_DATABASE_URL": str(five.app_database_url),
        "REDIS_URL": str(five.redis_url),
        "LIQ_REDIS_PREFIX": five.redis_prefix,
        "LIQ_NONLIVE_SOURCE": five.nonlive_source,
        "LIQ_SYMBOLS": "ALL",
        "LIQ_EXCHANGES": ",".join(VENUES),
    }
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "totals", "--symbol", "ALL", "--hours", "48"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for venue in VENUES:
        line = next((ln for ln in out.stdout.splitlines() if ln.strip().startswith(venue)), None)
        assert line is not None, (venue, out.stdout)
        assert fmt_usd(usd[venue]) in line, (venue, line)
    assert lower_bound_note(VENUES) in out.stdout


def test_live_page_tables_every_venue_with_its_lower_bound(
    five: Settings, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    usd = _seed(five, sync_redis)
    seed_app_env(monkeypatch, five)
    at = open_app("live", {"symbol": "ALL"})
    no_exceptions(at)
    assert not at.error
    exchanges = at.dataframe[1].value
    assert list(exchanges["Exchange"]) == [
        "binance (lower bound)",
        "bitget (lower bound)",
        "bybit",
        "gate (lower bound)",
        "okx (lower bound)",
    ]
    recent = {v: sum(Decimal("0.1") * (90000 + i) for _ in range(6)) for i, v in enumerate(VENUES)}
    assert list(exchanges["USD"]) == [fmt_usd(recent[v]) for v in sorted(VENUES)]
    assert all(recent[v] < usd[v] for v in VENUES)  # the live page shows the last hour only
    assert lower_bound_note(VENUES) in all_text(at)


def test_cli_market_lists_five_venues_and_joins_coins(five: Settings, sync_redis: redis.Redis) -> None:
    """`app.cli market --json` over 24 h: each venue's USD, and BTC as one coin across five spellings."""
    usd = _seed(five, sync_redis)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": str(five.database_url),
        "LIQ_APP_DATABASE_URL": str(five.app_database_url),
        "REDIS_URL": str(five.redis_url),
        "LIQ_REDIS_PREFIX": five.redis_prefix,
        "LIQ_NONLIVE_SOURCE": five.nonlive_source,
        "LIQ_SYMBOLS": "ALL",
        "LIQ_EXCHANGES": ",".join(VENUES),
    }
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "market", "--hours", "24", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for venue in VENUES:  # everything seeded is within the last 21 hours
        assert Decimal(data["by_exchange"][venue]["usd"]) == usd[venue]
    btc = next(c for c in data["coins"] if c["coin"] == "BTC")
    assert btc["events"] == 30  # 6 on each of the five venues, under five spellings
    want = sum(Decimal("0.1") * (90000 + i) * 6 for i in range(len(VENUES)))
    assert Decimal(btc["usd"]) == want
