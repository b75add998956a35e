"""The explorer page and its keyset pagination against the real seeded TimescaleDB."""

from __future__ import annotations

from datetime import datetime

import pytest
from psycopg_pool import ConnectionPool

from app.data import explorer
from app.format import fmt_count, fmt_usd
from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    HISTORY_CASCADE_LONG,
    HISTORY_CASCADE_SHORT,
    HISTORY_DAYS,
    HISTORY_RANGE,
    HISTORY_START_MS,
    all_text,
    app_env,
    fq,
    history_select,
    metric,
    no_exceptions,
    open_app,
    shown,
    sq,
)

END_MS = HISTORY_START_MS + HISTORY_DAYS * 86_400_000


def _newest_first(liqs: list[Liquidation]) -> list[int]:
    return [e.key for e in sorted(liqs, key=lambda e: (e.time_ms, e.key), reverse=True)]


def test_keyset_pages_walk_every_row_once(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    f = sq(HISTORY_START_MS, END_MS, None, ("binance", "bybit"), True)
    keys: list[int] = []
    after: tuple[datetime, int] | None = None
    while True:
        page = explorer.explorer_page(pool, *f, False, after, limit=250)
        keys += [int(k) for k in page["event_key"]]
        if len(page) < 250:
            break
        after = (page["time"].iloc[-1].to_pydatetime(), int(page["event_key"].iloc[-1]))
    expected = _newest_first(history_select(seeded, symbol=None, include_nonlive=True))
    assert keys == expected
    assert explorer.explorer_count(pool, *f) == (len(expected), sum(e.value_usd for e in seeded))


def test_row_filters(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    big = (fq("BTCUSDT", ("bybit",), side="SHORT", min_usd=200_000), HISTORY_START_MS, END_MS)
    expected = [e for e in history_select(seeded, exchanges=("bybit",), side="SHORT") if e.value_usd >= 200_000]
    page = explorer.explorer_page(pool, *big, limit=10_000)
    assert [int(k) for k in page["event_key"]] == _newest_first(expected)
    assert explorer.explorer_count(pool, *big) == (len(expected), sum(e.value_usd for e in expected))

    # Row-level filters over more than a month are not counted (it would scan every raw row).
    wide = (END_MS - 40 * 86_400_000, END_MS)
    assert explorer.explorer_count(pool, fq("BTCUSDT", ("bybit",), min_usd=1), *wide) is None
    assert explorer.explorer_count(pool, fq("BTCUSDT", ("bybit",)), *wide) is not None

    members = sq(HISTORY_START_MS, END_MS, "BTCUSDT", ("binance", "bybit"))
    rows = explorer.explorer_page(pool, *members, cascade_only=True, limit=10_000)
    assert set(rows["cascade_id"]) == {HISTORY_CASCADE_LONG, HISTORY_CASCADE_SHORT}
    assert len(rows) == len([e for e in seeded if e.cascade_id is not None])


def test_page_paginates_with_next_and_previous(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("explorer", HISTORY_RANGE)
    no_exceptions(at)
    chosen = history_select(seeded)
    assert metric(at, "Matching liquidations") == fmt_count(len(chosen))
    assert metric(at, "Matching USD") == fmt_usd(sum(e.value_usd for e in chosen))
    ordered = sorted(chosen, key=lambda e: (e.time_ms, e.key), reverse=True)
    first_page = at.dataframe[0].value
    assert len(first_page) == explorer.EXPLORER_PAGE_ROWS
    assert list(first_page["USD"][:3]) == [fmt_usd(e.value_usd) for e in ordered[:3]]

    at.button(key="x_next").click().run()
    no_exceptions(at)
    second = at.dataframe[0].value
    assert list(second["USD"][:3]) == [fmt_usd(e.value_usd) for e in ordered[100:103]]
    assert "Page 2 of" in all_text(at)

    at.button(key="x_prev").click().run()
    no_exceptions(at)
    assert list(at.dataframe[0].value["USD"][:3]) == [fmt_usd(e.value_usd) for e in ordered[:3]]


def test_page_filters_from_url_and_hostile_values(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("explorer", {**HISTORY_RANGE, "min_usd": "300000", "side": "LONG"})
    no_exceptions(at)
    expected = [e for e in history_select(seeded, side="LONG") if e.value_usd >= 300_000]
    assert metric(at, "Matching liquidations") == fmt_count(len(expected))
    at = open_app("explorer", {**HISTORY_RANGE, "cascade_only": "1"})
    no_exceptions(at)
    assert metric(at, "Matching liquidations") == fmt_count(11)

    at = open_app("explorer", {**HISTORY_RANGE, "min_usd": "1 OR 1=1", "cascade_only": "yes please"})
    no_exceptions(at)
    warnings = shown(" ".join(str(w.value) for w in at.warning))
    assert "min_usd" in warnings and "cascade_only" in warnings
    assert metric(at, "Matching liquidations") == fmt_count(len(history_select(seeded)))


def test_page_empty_state(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    app_env(monkeypatch, settings)
    at = open_app("explorer", HISTORY_RANGE)
    no_exceptions(at)
    assert metric(at, "Matching liquidations") == fmt_count(0)
    assert "No liquidation matches this filter" in all_text(at)
