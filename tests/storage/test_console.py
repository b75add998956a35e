from collector.pipeline import institutional_line
from tests.storage.factories import liq


def test_institutional_line_in_the_users_format() -> None:
    ev = liq("binance", qty="1.5675", price="107234.50")
    assert institutional_line(ev) == "INSTITUTIONAL: BINANCE BTCUSDT LONG $168,090.08 @ $107,234.50"
