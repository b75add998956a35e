from decimal import Decimal
from pathlib import Path

import pytest

from common.config import ConfigError, load_settings, reader_url


def test_defaults_point_at_the_real_exchanges() -> None:
    s = load_settings(env={}, dotenv=None)
    assert [s.ws_url(n) for n in s.exchanges] == [
        "wss://fstream.binance.com/market",
        "wss://stream.bybit.com/v5/public/linear",
        "wss://ws.okx.com/ws/v5/public",
        "wss://fx-ws.gateio.ws/v4/ws/usdt",
        "wss://ws.bitget.com/v3/ws/public",
    ]
    assert s.exchanges == ("binance", "bybit", "okx", "gate", "bitget")  # every venue of the registry
    assert s.symbols == ("ALL",)  # the whole market
    assert s.institutional_usd == Decimal(100000)
    assert all(s.source_for(s.ws_url(n)) == "live" for n in s.exchanges)


def test_non_real_endpoints_are_never_live() -> None:
    s = load_settings(env={"LIQ_BINANCE_WS_URL": "ws://127.0.0.1:9000/market"}, dotenv=None)
    assert s.source_for(s.ws_url("binance")) == "replay"
    with pytest.raises(ConfigError, match="LIQ_NONLIVE_SOURCE"):
        load_settings(env={"LIQ_NONLIVE_SOURCE": "live"}, dotenv=None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LIQ_EXCHANGES", "binance,kraken"),
        ("LIQ_SYMBOLS", "BTC-USDT;DROP"),
        ("LIQ_INSTITUTIONAL_USD", "lots"),
        ("LIQ_INSTITUTIONAL_USD", "-5"),
        ("LIQ_CASCADE_MIN_EVENTS", "1"),
        ("DATABASE_URL", "mysql://x@y/z"),
        ("LIQ_BYBIT_WS_URL", "https://stream.bybit.com"),
        ("LIQ_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env={name: value}, dotenv=None)


def test_environment_beats_dotenv_beats_defaults(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nLIQ_SYMBOLS=ethusdt, btcusdt\nexport LIQ_EXCHANGES='bybit'\n")
    s = load_settings(env={"LIQ_EXCHANGES": "binance"}, dotenv=dotenv)
    assert s.symbols == ("ETHUSDT", "BTCUSDT")
    assert s.exchanges == ("binance",)


def test_secrets_are_masked() -> None:
    s = load_settings(
        env={"DATABASE_URL": "postgresql://liq:hunter2@db:5432/liq", "LIQ_APP_PASSWORD": "open-sesame"},
        dotenv=None,
    )
    text = repr(s) + str(s.masked())
    assert "hunter2" not in text and "open-sesame" not in text
    assert s.masked()["database_url"] == "postgresql://liq:****@db:5432/liq"


def test_reader_url_keeps_server_and_database() -> None:
    assert (
        reader_url("postgresql://liq:pw@db.example:6543/liq", "r pw")
        == "postgresql://liq_reader:r%20pw@db.example:6543/liq"
    )
    assert reader_url("postgresql://liq@127.0.0.1/liq", "") == "postgresql://liq_reader@127.0.0.1/liq"


def test_an_explicit_symbol_list_is_the_configured_set_and_its_first_is_the_default_view() -> None:
    s = load_settings(env={"LIQ_SYMBOLS": "ethusdt,币安人生USDT"}, dotenv=None)
    assert s.symbols == s.configured_symbols == ("ETHUSDT", "币安人生USDT") and not s.all_symbols
    assert s.default_symbol == "ETHUSDT"
