"""The discovery settings: REST base URLs, the refresh period, LIQ_SYMBOLS=ALL and LIQ_CANDLE_SYMBOLS."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from common.config import REAL_HOSTS, ConfigError, load_settings
from common.venues import VENUES


def test_defaults() -> None:
    s = load_settings(env={}, dotenv=None)
    assert [s.rest_url(n) for n in ("binance", "bybit", "okx", "gate", "bitget")] == [
        "https://fapi.binance.com",
        "https://api.bybit.com",
        "https://www.okx.com",
        "https://api.gateio.ws",
        "https://api.bitget.com",
    ]
    assert all(s.rest_url(name) == v.rest_url for name, v in VENUES.items())
    assert s.instruments_refresh_s == 3600
    assert s.candle_symbols == ("ALL",) and s.all_candle_symbols
    assert s.symbols == ("ALL",) and s.all_symbols and s.configured_symbols == () and s.default_symbol == "ALL"


def test_all_and_explicit_lists() -> None:
    s = load_settings(
        env={
            "LIQ_SYMBOLS": "all",
            "LIQ_CANDLE_SYMBOLS": "btcusdt, 币安人生USDT",
            "LIQ_BINANCE_REST_URL": "http://127.0.0.1:8081/",
            "LIQ_INSTRUMENTS_REFRESH_S": "60",
        },
        dotenv=None,
    )
    assert s.symbols == ("ALL",) and s.all_symbols
    assert s.candle_symbols == ("BTCUSDT", "币安人生USDT") and not s.all_candle_symbols
    assert s.rest_url("binance") == "http://127.0.0.1:8081" and s.instruments_refresh_s == 60


def test_rest_hosts_never_label_events_live() -> None:
    for v in VENUES.values():
        assert v.ws_host in REAL_HOSTS
        assert urlsplit(v.rest_url).hostname not in REAL_HOSTS


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LIQ_SYMBOLS", "ALL,BTCUSDT", "cannot be combined"),
        ("LIQ_CANDLE_SYMBOLS", "BTC USDT", "not a venue symbol"),
        ("LIQ_BINANCE_REST_URL", "wss://fapi.binance.com", "expected a http/https URL"),
        ("LIQ_BYBIT_REST_URL", "api.bybit.com", "expected a http/https URL"),
        ("LIQ_INSTRUMENTS_REFRESH_S", "59", "between 60 and 86400"),
        ("LIQ_INSTRUMENTS_REFRESH_S", "86401", "between 60 and 86400"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}: .*{message}"):
        load_settings(env={name: value}, dotenv=None)
