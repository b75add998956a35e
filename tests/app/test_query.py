"""The one query model (app/query.py): URL parsing, old links, hostile values, ranges, the one WHERE
builder and segmenter, and the layering rule (app/data and the CLI import no Streamlit)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as hs

from app.data.rows import WIDTH_MS, segments, tiers_for
from app.query import (
    MAX_HOURS,
    QUERY_PARAMS,
    Query,
    all_target,
    auto_interval,
    catalog_of,
    coin_target,
    contract_target,
    parse_query,
    symbol_target,
)
from tests.app.seed import fq

EXCHANGES = ("binance", "bybit", "okx")
CATALOG = catalog_of(
    [
        ("binance", "BTCUSDT", "BTC"),
        ("bybit", "BTCUSDT", "BTC"),
        ("okx", "BTC-USDT-SWAP", "BTC"),
        ("binance", "ETHUSDT", "ETH"),
        ("binance", "1000PEPEUSDT", None),  # guessed: PEPE
        ("okx", "PEPE-USDT-SWAP", "PEPE"),
    ]
)
TODAY = date(2026, 1, 1)
ROOT = Path(__file__).resolve().parents[2]


def _parse(params: dict[str, str], default: str = "BTCUSDT") -> tuple[Query, list[str]]:
    return parse_query(params, CATALOG, EXCHANGES, default_symbol=default, today=TODAY)


def test_targets_resolve_to_contracts() -> None:
    btc = coin_target("BTC", CATALOG)
    assert btc.pairs == (("binance", "BTCUSDT"), ("bybit", "BTCUSDT"), ("okx", "BTC-USDT-SWAP"))
    assert btc.symbols == ("BTC-USDT-SWAP", "BTCUSDT") and btc.unit == "BTC"
    pepe = coin_target("PEPE", CATALOG)
    assert pepe.pairs == (("binance", "1000PEPEUSDT"), ("okx", "PEPE-USDT-SWAP")) and pepe.unit == "PEPE"
    assert contract_target("binance", "1000PEPEUSDT").unit == "PEPE"
    assert all_target().symbols is None and all_target().unit is None
    # the venues read are the chosen ones the target has contracts on
    assert Query(target=coin_target("ETH", CATALOG), exchanges=EXCHANGES).venues == ("binance",)
    assert Query(target=all_target(), exchanges=("okx",)).venues == ("okx",)


@pytest.mark.parametrize(
    ("params", "expected", "warned"),
    [
        ({}, Query(target=symbol_target("BTCUSDT", CATALOG, EXCHANGES), exchanges=EXCHANGES), False),
        # old links: symbol= keeps meaning that venue symbol on every venue listing it
        (
            {"symbol": "ethusdt", "hours": "24"},
            Query(target=symbol_target("ETHUSDT", CATALOG, EXCHANGES), exchanges=EXCHANGES, hours=24),
            False,
        ),
        ({"symbol": "ALL", "exchanges": "bybit"}, Query(exchanges=("bybit",)), False),
        ({"target": "all"}, Query(exchanges=EXCHANGES), False),
        ({"target": "BTC"}, Query(target=coin_target("BTC", CATALOG), exchanges=EXCHANGES), False),
        ({"target": "btc"}, Query(target=coin_target("BTC", CATALOG), exchanges=EXCHANGES), False),
        (
            {"target": "okx:BTC-USDT-SWAP", "side": "short"},
            Query(target=contract_target("okx", "BTC-USDT-SWAP"), exchanges=EXCHANGES, side="SHORT"),
            False,
        ),
        ({"target": "okx:NOPE"}, Query(target=symbol_target("BTCUSDT", CATALOG, EXCHANGES), exchanges=EXCHANGES), True),
        ({"target": "DOGE"}, Query(target=symbol_target("BTCUSDT", CATALOG, EXCHANGES), exchanges=EXCHANGES), True),
        (
            {"symbol": "DOGEUSDT"},
            Query(target=symbol_target("DOGEUSDT", CATALOG, EXCHANGES), exchanges=EXCHANGES),
            False,
        ),
        (
            {"symbol": "doge usdt"},
            Query(target=symbol_target("BTCUSDT", CATALOG, EXCHANGES), exchanges=EXCHANGES),
            True,
        ),
        (
            {"symbol": "BTCUSDT'; DROP TABLE liquidations;--"},
            Query(target=symbol_target("BTCUSDT", CATALOG, EXCHANGES), exchanges=EXCHANGES),
            True,
        ),
        ({"hours": "-5"}, Query(target=symbol_target("BTCUSDT", CATALOG, EXCHANGES), exchanges=EXCHANGES), True),
        ({"hours": "9" * 30, "target": "ALL"}, Query(exchanges=EXCHANGES), True),
        ({"hours": str(MAX_HOURS + 1), "target": "ALL"}, Query(exchanges=EXCHANGES), True),
        ({"exchanges": "binance,kraken", "target": "ALL"}, Query(exchanges=("binance",)), True),
        ({"since": "20250230", "target": "ALL"}, Query(exchanges=EXCHANGES), True),
        (
            {"since": "20250101", "until": "20241231", "target": "ALL"},
            Query(exchanges=EXCHANGES, since=date(2025, 1, 1)),
            True,
        ),
        ({"since": "20990101", "target": "ALL"}, Query(exchanges=EXCHANGES), True),
        ({"interval": "7m", "side": "LONG", "target": "ALL"}, Query(exchanges=EXCHANGES, side="LONG"), True),
        # old page parameters of Cascades and Heatmap still mean what they meant
        (
            {"c_side": "SHORT", "c_min": "250000", "target": "ALL"},
            Query(exchanges=EXCHANGES, side="SHORT", min_usd=Decimal(250_000)),
            False,
        ),  # fmt: skip
        ({"min_usd": "1e400", "target": "ALL"}, Query(exchanges=EXCHANGES), True),
        ({"min_usd": "2.5e5", "target": "ALL"}, Query(exchanges=EXCHANGES, min_usd=Decimal(250_000)), False),
        (
            {"nonlive": "1", "markers": "0", "target": "ALL"},
            Query(exchanges=EXCHANGES, include_nonlive=True, markers=False),
            False,
        ),
    ],
)
def test_parse_query(params: dict[str, str], expected: Query, warned: bool) -> None:
    q, warnings = _parse(params)
    assert q == expected
    assert bool(warnings) == warned, warnings


def test_a_contract_off_the_chosen_exchanges_says_so() -> None:
    q, warnings = _parse({"target": "okx:BTC-USDT-SWAP", "exchanges": "binance"})
    assert q.venues == () and any("not on the chosen exchanges" in w for w in warnings)


@hsettings(max_examples=300, deadline=None)
@given(hs.dictionaries(hs.sampled_from([*QUERY_PARAMS, "c_side", "hm_side", "c_min", "x"]), hs.text(max_size=300)))
def test_parse_never_raises_and_round_trips(params: dict[str, str]) -> None:
    q, _ = _parse(params)
    assert q.exchanges and set(q.exchanges) <= set(EXCHANGES)
    assert q.hours is None or 1 <= q.hours <= MAX_HOURS
    assert q.side in (None, "LONG", "SHORT") and 0 <= q.min_usd <= 10**12
    default = symbol_target("BTCUSDT", CATALOG, EXCHANGES)
    again, warnings = _parse(q.to_params(default, EXCHANGES))
    assert again == q and warnings == []


def test_time_range_and_auto_interval() -> None:
    now = 1_767_225_600_000  # 20260101 00:00:00 UTC
    assert Query(hours=24).time_range(now) == (now - 86_400_000, now)
    assert Query().time_range(now, first_ms=now - 5000) == (now - 5000, now)  # whole history: the first event
    assert Query().time_range(now, first_ms=None) == (now - 3_600_000, now)
    assert Query(since=date(2025, 12, 30), until=date(2025, 12, 30)).time_range(now) == (
        now - 2 * 86_400_000,
        now - 86_400_000,
    )
    hour = 3_600_000
    assert [auto_interval(h * hour) for h in (1, 24, 168, 720, 8760)] == ["1m", "5m", "1h", "4h", "1d"]


TIERS = [
    ("liquidations_1m",),
    ("liquidations_1m", "liquidations_1h"),
    ("liquidations_1m", "liquidations_market_1h"),
    ("liquidations_1m", "liquidations_1h", "liquidations_1d"),
]


@hsettings(max_examples=400, deadline=None)
@given(hs.integers(0, 10**13), hs.integers(0, 10**10), hs.sampled_from(TIERS), hs.integers(0, 10**13 // 3_600_000))
def test_segments_tile_the_range_exactly(start: int, span: int, tiers: tuple[str, ...], line_hour: int) -> None:
    line = line_hour * 3_600_000  # the fold's line: an hour boundary
    parts = segments(start, start + span, tiers, line_ms=line)
    # Past the line only the minutes and raw rows serve (the hours and days hold nothing there).
    assert all(hi <= line for table, _lo, hi in parts if table not in ("liquidations", "liquidations_1m"))
    assert [p[1] for p in parts[1:]] == [p[2] for p in parts[:-1]]  # contiguous, no overlap
    if span:
        assert parts[0][1] == start and parts[-1][2] == start + span
    for table, lo, hi in parts:
        assert table == "liquidations" or table in tiers
        step = WIDTH_MS[table]
        assert lo < hi and (step == 0 or (lo % step == 0 and hi % step == 0))
    # Coarser tiers sit inside finer ones: the table sequence rises to the middle, then falls.
    ranks = [("liquidations", *tiers).index(t) for t, _lo, _hi in parts]
    top = ranks.index(max(ranks)) if ranks else 0
    assert ranks[: top + 1] == sorted(ranks[: top + 1]) and ranks[top:] == sorted(ranks[top:], reverse=True)


def test_rollup_tiers_follow_the_readers_buckets() -> None:
    coin = fq("BTCUSDT")
    whole = fq(None)
    hours, days, market = "liquidations_1h", "liquidations_1d", "liquidations_market_1h"
    assert tiers_for(coin) == ("liquidations_1m", hours, days)
    assert tiers_for(coin, 4 * 3_600_000) == ("liquidations_1m", hours)  # 4 h bars: no days
    assert tiers_for(coin, 300_000) == ("liquidations_1m",)
    assert tiers_for(whole) == ("liquidations_1m", market)  # ALL: the market's hours, no days
    assert tiers_for(whole, per_symbol=True) == ("liquidations_1m", hours, days)


def test_data_layer_and_cli_import_no_streamlit() -> None:
    code = (
        "import importlib, pkgutil, sys, app.data\n"
        "for m in pkgutil.iter_modules(app.data.__path__): importlib.import_module('app.data.' + m.name)\n"
        "import app.cli, app.query, app.market_text, app.charts\n"
        "assert 'streamlit' not in sys.modules, sorted(m for m in sys.modules if m.startswith('streamlit'))[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_only_app_data_touches_the_services() -> None:
    """No page, nor any module outside app/data, writes SQL or runs a query; connections are opened
    only by app/cache.py (pages) and the CLI, both through app.data.connections."""
    outside = [p for p in (ROOT / "app").rglob("*.py") if "data" not in p.relative_to(ROOT / "app").parts]
    assert len(outside) > 10
    for path in outside:
        text = path.read_text(encoding="utf-8")
        for needle in ("SELECT ", "COPY ", "fetch_all", "fetch_df", ".execute(", "cursor(", "redis.Redis("):
            assert needle not in text, f"{path.relative_to(ROOT)} uses {needle}"
        if path.name not in ("cache.py", "cli.py"):
            for needle in ("open_pool", "open_redis", "get_pool", "get_redis"):
                assert needle not in text, f"{path.relative_to(ROOT)} uses {needle}"
