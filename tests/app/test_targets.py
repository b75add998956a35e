"""Every page for a coin, a contract and ALL, and the same link giving the same figures on every
page that shows them (issue 12: one query model, every sidebar filter on every page)."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import psycopg
import pytest

from app import cli
from app.format import fmt_count, fmt_usd
from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    HISTORY_CASCADE_LONG,
    HISTORY_RANGE,
    HISTORY_START_MS,
    PAGE_FILES,
    all_text,
    app_env,
    history_cascades,
    insert_liquidations,
    liq,
    metric,
    no_exceptions,
    open_app,
    seed_history,
)

# A second BTC contract (USDC-quoted, on binance) and another coin, in the history range.
# Within the catalog's RECENT_DAYS of the newest stored hour (app/data/catalog.py), so the picker lists them.
_EXTRA = [
    liq("binance", "LONG", "0.75", "95000", HISTORY_START_MS + 15 * 86_400_000 + 5_000, symbol="BTCUSDC"),
    liq("binance", "SHORT", "1.5", "96000", HISTORY_START_MS + 17 * 86_400_000 + 7_000, symbol="BTCUSDC"),
    liq("bybit", "LONG", "2000000", "0.0123", HISTORY_START_MS + 16 * 86_400_000, symbol="1000PEPEUSDT"),
]
TARGETS = {
    "BTC": lambda e: e.symbol in ("BTCUSDT", "BTCUSDC"),
    "bybit:BTCUSDT": lambda e: e.exchange == "bybit" and e.symbol == "BTCUSDT",
    "ALL": lambda e: True,
}
# (page, metric label of the number of liquidations, of their USD): the pages that show totals.
TOTALS = (
    ("accumulated", "Liquidations", "USD liquidated"),
    ("heatmap", "Liquidations in range", "Liquidated USD in range"),
    ("analyses", "Liquidations", "Liquidated USD"),
    ("explorer", "Matching liquidations", "Matching USD"),
)


@pytest.fixture
def dataset(settings: Settings) -> list[Liquidation]:
    liqs = seed_history(settings.database_url)
    insert_liquidations(settings.database_url, _EXTRA)
    return liqs + _EXTRA


def _expected(liqs: list[Liquidation], target: str, side: str | None = None) -> list[Liquidation]:
    return [
        e for e in liqs if TARGETS[target](e) and e.source == "live" and (side is None or e.side == side)
    ]  # the whole seeded range lies inside HISTORY_RANGE


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_page_works_for_a_coin_a_contract_and_all(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, dataset: list[Liquidation], target: str
) -> None:
    app_env(monkeypatch, settings)
    for page in PAGE_FILES:
        at = open_app(page, {**HISTORY_RANGE, "target": target})
        no_exceptions(at)
        assert not at.warning, (page, [w.value for w in at.warning])
        assert at.query_params["target"] == target  # the link keeps the target on every page
        if page == "accumulated":
            quantity = metric(at, "Base quantity")
            assert (quantity == "n/a (mixed assets)") == (target == "ALL")  # base amounts only for one coin
        if page in ("live", "market", "alerts"):  # their own windows or rules: each says so
            text = all_text(at)
            assert "the sidebar's" in text and ("do not" in text or "does not apply" in text), page


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_same_link_gives_the_same_totals_on_every_page(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, dataset: list[Liquidation], target: str
) -> None:
    app_env(monkeypatch, settings)
    for side in (None, "SHORT"):
        params = {**HISTORY_RANGE, "target": target, **({"side": side} if side else {})}
        want = _expected(dataset, target, side)
        assert want
        seen: dict[str, tuple[str, str]] = {}
        for page, count_label, usd_label in TOTALS:
            at = open_app(page, params)
            no_exceptions(at)
            seen[page] = (metric(at, count_label), metric(at, usd_label))
        assert set(seen.values()) == {(fmt_count(len(want)), fmt_usd(sum((e.value_usd for e in want), Decimal(0))))}, (
            seen
        )
        # Cascades: counted the one way (overlapping the range) on both pages that count them.
        cascades = [c for c in history_cascades(dataset) if side is None or str(c.side) == side]
        counts = {page: metric(open_app(page, params), "Cascades") for page in ("accumulated", "cascades")}
        assert set(counts.values()) == {fmt_count(len(cascades))}, counts


def test_cascades_page_has_no_side_selector_of_its_own(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, dataset: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("cascades", {**HISTORY_RANGE, "target": "BTC", "side": "LONG"})
    no_exceptions(at)
    assert metric(at, "Cascades") == fmt_count(1)
    assert "cascades counted: those overlapping the range" in all_text(at)
    assert int(at.selectbox(key="cascade").value) == HISTORY_CASCADE_LONG
    assert sorted(s.key for s in at.selectbox) == ["cascade", "f_side", "f_target"]


def test_the_picker_offers_coins_then_contracts(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, dataset: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("accumulated", HISTORY_RANGE)
    options = at.selectbox(key="f_target").options
    coins = [o for o in options if o.endswith("(all contracts)")]
    contracts = [o for o in options if ": " in o]
    assert options[0] == "ALL (whole market)"
    assert coins == ["BTC (all contracts)", "ETH (all contracts)", "PEPE (all contracts)"]
    assert "binance: BTCUSDC" in contracts and "bybit: 1000PEPEUSDT" in contracts
    assert options.index(coins[-1]) < options.index(contracts[0])  # coins first
    # Picking a coin writes it into the link; the pages then read every contract of it.
    at.selectbox(key="f_target").select_index(options.index("PEPE (all contracts)")).run()
    no_exceptions(at)
    assert at.query_params["target"] == "PEPE"
    pepe = _expected(list(_EXTRA), "ALL")
    pepe = [e for e in pepe if e.symbol == "1000PEPEUSDT"]
    assert metric(at, "Liquidations") == fmt_count(len(pepe))
    assert metric(at, "Base quantity") == "2,000,000,000.0000"  # 1000PEPE counted in PEPE


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_cli_gives_what_the_pages_give(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    dataset: list[Liquidation],
    target: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m app.cli totals --target X` is a thin client of the same Query: the same figures."""
    app_env(monkeypatch, settings)
    since, until = HISTORY_RANGE["since"], HISTORY_RANGE["until"]
    assert cli.main(["totals", "--target", target, "--since", since, "--until", until, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    want = _expected(dataset, target)
    assert data["target"] == target and data["total"]["events"] == len(want)
    assert Decimal(data["total"]["usd"]) == sum((e.value_usd for e in want), Decimal(0))
    assert ("base_amount" in data["total"]) == (target != "ALL")  # USD only for the whole market


@pytest.mark.parametrize(
    "params",
    [
        {"target": "<script>alert(1)</script>", "min_usd": "NaN"},
        {"target": "binance:' OR 1=1 --", "side": "BOTH", "exchanges": "binance,<b>"},
        {"target": "x" * 5000, "hours": "1e9", "since": "20261301"},
        {"target": "okx:BTC-USDT-SWAP"},  # a contract on no configured exchange
    ],
)
def test_hostile_targets_warn_and_fall_back_on_every_page(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, dataset: list[Liquidation], params: dict[str, str]
) -> None:
    app_env(monkeypatch, settings)
    for page in PAGE_FILES:
        at = open_app(page, params)
        no_exceptions(at)
        warnings = " ".join(str(w.value) for w in at.warning)
        assert "Unknown" in warnings or "Ignored" in warnings, (page, warnings)
        assert at.query_params.get("target") in (None, "BTCUSDT")  # the default target, never the payload


def test_the_picker_scales_to_a_thousand_instruments(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, dataset: list[Liquidation]
) -> None:
    """500 coins listed on both venues (1,000 instruments): one searchable box, and a listed contract
    with no liquidation yet opens like any other."""
    with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO instruments (exchange, symbol, base, quote, contract_type) "
                "VALUES (%s, %s, %s, 'USDT', 'perpetual') ON CONFLICT DO NOTHING",
                [(e, f"C{i:03d}USDT", f"C{i:03d}") for i in range(500) for e in ("binance", "bybit")],
            )
    app_env(monkeypatch, settings)
    started = time.monotonic()
    at = open_app("accumulated", {**HISTORY_RANGE, "target": "bybit:C123USDT"})
    no_exceptions(at)
    assert not at.warning and metric(at, "Liquidations") == fmt_count(0)
    options = at.selectbox(key="f_target").options
    assert len(options) >= 1 + 500 + 1000 and "C123 (all contracts)" in options and "bybit: C123USDT" in options
    at.selectbox(key="f_target").select_index(options.index("C123 (all contracts)")).run()
    no_exceptions(at)
    assert at.query_params["target"] == "C123"
    assert time.monotonic() - started < 30
