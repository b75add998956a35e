"""Venue text is data, never markup (issue 9, finding 7), and real symbols work in links (the
symbol half of finding "hundreds of symbols no one has typed").

The collector refuses such symbols at its edge (collector/validation.py); these tests write them
straight into TimescaleDB and Redis, as an older collector, a restore or a hostile writer could.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest
import redis
from playwright.sync_api import sync_playwright
from streamlit.testing.v1 import AppTest

from app.charts import chart_html, liquidation_chart
from app.format import plain_md
from app.query import catalog_of, parse_query
from common.config import Settings
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
    shown,
)
from tests.app.seed import app_env as apptest_env

MD_LINK = "[Session expired - log in again](http://evil.example)"
MD_IMAGE = "![x](http://img.example/x.png)"
HTML = '<a href="http://evil.example">Session expired</a><img src="http://img.example/x.png">'
HOSTILE = (MD_LINK, MD_IMAGE, HTML)
CJK = "币安人生USDT"
# A link or an image in Markdown or HTML syntax, in the source; and what GFM links by itself
# (bare URLs, www. and e-mail addresses), in the text once backslash escapes are resolved.
_SYNTAX = re.compile(r"(?<!\\)\]\(|(?<!\\)!\[|(?<!\\)<\s*(a|img)\b", re.IGNORECASE)
_AUTOLINK = re.compile(r"https?://|www\.|[\w.+-]+@[\w-]+\.", re.IGNORECASE)


def _unsafe(markdown: str) -> bool:
    resolved = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)  # what the renderer's text nodes hold
    return bool(_SYNTAX.search(markdown) or _AUTOLINK.search(resolved))


PAGES = ("accumulated", "chart", "heatmap", "cascades", "analyses", "explorer")


def test_the_detector_sees_what_it_must() -> None:
    for text in HOSTILE:
        assert _unsafe(text) and not _unsafe(plain_md(text)), text
        assert _unsafe(re.sub(r"([\[\]()!:<>.])", r"\\\1", text))  # backslashes alone do not stop GFM autolinks
        assert shown(plain_md(text)) == text  # escaped, the reader still sees the text itself


def _markdown_sources(at: AppTest) -> list[str]:
    """Every string this run handed to a Markdown renderer (bodies, labels, tooltips)."""
    out: list[str] = []
    for group in (at.markdown, at.caption, at.title, at.header, at.subheader, at.info, at.warning, at.error):
        out += [str(e.value) for e in group]
    out += [str(m.label) for m in at.metric]
    for kind in ("button", "download_button"):
        for b in at.get(kind):
            out += [str(b.proto.label), str(b.proto.help)]
    return out


def _plotly_strings(at: AppTest) -> list[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    return [s for chart in at.get("plotly_chart") for s in walk(json.loads(chart.proto.spec))]


def _seed_hostile(settings: Settings) -> None:
    now = now_ms()
    hostile = [
        liq("bybit", "LONG", "100", "100000", now - 3_600_000, symbol=MD_LINK),  # the largest of all
        liq("bybit", "SHORT", "2", "50000", now - 2_600_000, symbol=MD_IMAGE),
        liq("binance", "LONG", "3", "50000", now - 1_600_000, symbol=HTML),
    ]
    normal = [
        liq("bybit", "LONG", "1", "60000", now - 600_000),
        liq("binance", "SHORT", "2", "30", now - 500_000, symbol=CJK),
    ]
    insert_liquidations(settings.database_url, hostile + normal)
    insert_cascades(
        settings.database_url,
        [cascade_of([hostile[1]], 91), cascade_of([hostile[2]], 92), cascade_of([hostile[0]], 93)],
    )


def _assert_safe(at: AppTest, page: str) -> None:
    no_exceptions(at)
    for source in _markdown_sources(at):
        assert not _unsafe(source), (page, source)
    for text in _plotly_strings(at):
        assert not re.search(r"<\s*(a|img)\b", text, re.IGNORECASE), (page, text)


def test_venue_text_in_every_page_is_escaped(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    _seed_hostile(settings)
    apptest_env(monkeypatch, settings)
    for page in PAGES:
        at = open_app(page, {"symbol": "ALL", "hours": "24"})
        _assert_safe(at, page)
        if page == "accumulated":
            assert MD_LINK in all_text(at)  # shown, as text
        if page == "cascades":
            chosen = [shown(s.value) for s in at.subheader]  # the newest cascade, named by its symbol
            assert any(c.startswith(HTML) for c in chosen), chosen
            assert any("&lt;a href" in s for s in _plotly_strings(at))  # hover text: the symbol, inert


def test_error_texts_are_escaped(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    # PostgreSQL names the database it could not open: a hostile name comes back in the error.
    url = str(settings.app_database_url)
    hostile_url = url.rsplit("/", 1)[0] + "/" + quote(MD_LINK + MD_IMAGE, safe="")
    apptest_env(monkeypatch, settings, LIQ_APP_DATABASE_URL=hostile_url)
    for page in PAGES:
        at = open_app(page)
        _assert_safe(at, page)
        errors = shown(" ".join(e.value for e in at.error))
        assert MD_LINK in errors and "does not exist" in errors, (page, errors)


def test_live_health_text_is_escaped(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot("bybit", now, connected=False, last_error=f"Bybit refused: {MD_LINK} {MD_IMAGE}"),
            health_snapshot("binance", now, last_error=HTML),
        ],
    )
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    apptest_env(monkeypatch, settings)
    at = open_app("live")
    _assert_safe(at, "live")
    assert MD_LINK in all_text(at)  # the refusal is shown, as text


def test_chart_html_export_holds_no_markup_from_venue_text() -> None:
    now = now_ms()
    bars = pd.DataFrame(
        {"bar": [pd.Timestamp(now, unit="ms", tz="UTC")], "side": ["LONG"], "events": [1],
         "quantity": [Decimal(1)], "value_usd": [Decimal(500_000)]}
    )  # fmt: skip
    markers = pd.DataFrame(
        {"time": [pd.Timestamp(now, unit="ms", tz="UTC")], "exchange": [HTML], "symbol": [MD_LINK], "side": ["LONG"],
         "quantity": [Decimal(5)], "price": [Decimal(100_000)], "value_usd": [Decimal(500_000)]}
    )  # fmt: skip
    candles = pd.DataFrame(columns=["bar", "open", "high", "low", "close", "volume"])
    fig = liquidation_chart(candles, bars, markers=markers, title=f"{HTML} {MD_LINK}", price_label=HTML)
    page = chart_html(fig)
    data = page[page.index("Plotly.newPlot(") :]
    decoded = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), data)  # plotly escapes < in JSON
    assert "&lt;a href=&quot;http:" in decoded and "&lt;img src=" in decoded  # the text is there, inert
    assert not re.search(r"<\s*(a|img)\b", decoded, re.IGNORECASE)
    assert fig.layout.title.text.startswith("&lt;a href")


def test_real_symbols_work_in_links(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    known = catalog_of([("binance", "BTCUSDT", None), ("binance", CJK, None)])
    q, warnings = parse_query({"symbol": CJK.lower()}, known, ("binance", "bybit"), default_symbol="BTCUSDT")
    assert q.target.param == CJK and warnings == []
    q, warnings = parse_query({"target": f"binance:{CJK}"}, known, ("binance", "bybit"), default_symbol="BTCUSDT")
    assert q.target.param == f"binance:{CJK}" and warnings == []
    for hostile in (*HOSTILE, "BTC\x00USDT", "BTC USDT", "x" * 41):
        hostile_known = catalog_of([("binance", "BTCUSDT", None), ("binance", hostile, None)])
        for name, value in (("symbol", hostile), ("target", hostile), ("target", f"binance:{hostile}")):
            q, warnings = parse_query({name: value}, hostile_known, ("binance", "bybit"), default_symbol="BTCUSDT")
            assert q.target.param == "BTCUSDT" and len(warnings) == 1, (name, hostile)

    _seed_hostile(settings)
    apptest_env(monkeypatch, settings)
    at = open_app("accumulated", {"symbol": CJK, "hours": "24"})
    no_exceptions(at)
    assert at.selectbox(key="f_target").value.param == CJK and not at.warning
    assert "Liquidations: 1" in all_text(at)
    assert not any(_unsafe(o) for o in at.selectbox(key="f_target").options)  # hostile names not offered

    at = open_app("accumulated", {"symbol": MD_LINK, "hours": "24"})
    _assert_safe(at, "accumulated")
    assert at.selectbox(key="f_target").value.param == "BTCUSDT"
    assert "Unknown symbol" in shown(" ".join(w.value for w in at.warning))


@pytest.mark.browser
def test_no_link_or_image_from_venue_text_in_chromium(settings: Settings, sync_redis: redis.Redis) -> None:
    assert CHROMIUM.is_file(), "Debian's chromium is required: apt-get install chromium"
    _seed_hostile(settings)
    now = now_ms()
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [health_snapshot("bybit", now, connected=False, last_error=f"{MD_LINK} {MD_IMAGE} {HTML}")],
    )
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    requested: list[str] = []
    with app_server(app_env(settings), log_name="markup-server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.on("request", lambda r: requested.append(r.url))
            for path, title in (
                ("accumulated", "Accumulated"),
                ("cascades", "Cascades"),
                ("chart", "Chart"),
                ("live", "Live — last 60 minutes"),
            ):
                page.goto(f"{url}/{path}?symbol=ALL&hours=24", wait_until="domcontentloaded")
                wait_until_done(page, title)
                assert_no_errors(page, path)
                links = page.locator('a[href*="evil.example"]')
                assert links.count() == 0, (path, links.first.evaluate("a => a.parentElement.parentElement.outerHTML"))
                assert page.locator('img[src*="img.example"]').count() == 0, path
                page.screenshot(path=str(ARTIFACTS / f"markup-{path}.png"), full_page=True)
            page.goto(f"{url}/accumulated?symbol=ALL&hours=24", wait_until="domcontentloaded")
            wait_until_done(page, "Accumulated")
            assert MD_LINK in page.locator("body").inner_text().replace("\u2060", "")  # shown as text
            page.goto(f"{url}/accumulated?symbol={quote(CJK)}&hours=24", wait_until="domcontentloaded")
            wait_until_done(page, "Accumulated")
            assert CJK in page.locator('[data-testid="stCaptionContainer"]').first.inner_text()
            assert page.get_by_text("Unknown symbol").count() == 0
            assert quote(CJK) in page.url or CJK in page.url
        finally:
            browser.close()
    assert not [u for u in requested if "evil.example" in u or "img.example" in u]
