"""The rules file: valid rules, and malformed ones named by line (and the process exits 2)."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from alerter.delivery import signature, webhook_body
from alerter.rules import RulesError, parse_rules
from alerter.store import Delivery
from tests.services import ROOT

GOOD = """
[[rule]]
name = "btc-big"
kind = "liquidation"
coin = "btc"
venues = ["binance", "Bybit"]
side = "long"
min_usd = 100000
cooldown_s = 60

[[rule]]
name = "cascades"
kind = "cascade"
contract = "BTCUSDT"
min_risk = 70
cross_venue_only = true

[[rule]]
name = "eth-15m"
kind = "volume"
coin = "ETH"
min_usd = 2.5e6
minutes = 15

[[rule]]
name = "feeds"
kind = "stream"
minutes = 5
"""


def test_valid_rules_are_read_with_their_defaults() -> None:
    big, casc, vol, feeds = parse_rules(GOOD)
    assert (big.coin, big.venues, big.side, big.min_usd, big.cooldown_s) == (
        "BTC",
        ("binance", "bybit"),
        "LONG",
        100000,
        60,
    )
    assert big.wants_liquidation("binance", "BTCUSDT") and big.wants_liquidation("okx", "BTC-USDT-SWAP")
    assert not big.wants_liquidation("binance", "ETHUSDT")
    assert casc.wants_canonical("BTC-USDT-PERP") and not casc.wants_canonical("BTC-USDC-PERP")
    assert (casc.min_risk, casc.cross_venue_only, casc.min_usd, casc.side, casc.include_nonlive) == (
        70,
        True,
        None,
        "ALL",
        False,
    )
    assert (vol.min_usd, vol.minutes, vol.scope()) == (Decimal("2500000.0"), 15.0, "ETH")
    assert (feeds.kind, feeds.minutes, feeds.cooldown_s, feeds.venues) == ("stream", 5.0, 300, ())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[rule]]\nname = "a"\nkind = "liquidation"\nmin_usd = \n', "line 4"),  # TOML syntax: tomllib's line
        (
            GOOD + '\n[[rule]]\nname = "x"\nkind = "volume"\n\nmin_usd = "lots"\nminutes = 5\n',
            "line 34: rule #5 key 'min_usd'",
        ),
        (GOOD.replace('side = "long"', 'side = "up"'), "line 7: rule #1 key 'side'"),
        (GOOD.replace("minutes = 15", "minutes = 0"), "line 23: rule #3 key 'minutes'"),
        (GOOD.replace("min_risk = 70\n", ""), "line 11: rule #2 key 'min_usd': a 'cascade' rule needs"),
        (GOOD.replace('kind = "stream"', 'kind = "stream"\nside = "LONG"'), "line 28: rule #4 key 'side': not a key"),
        (GOOD.replace('"eth-15m"', '"btc-big"'), "line 19: rule #3 key 'name'"),
        (GOOD.replace('"Bybit"', '"kraken"'), "line 6: rule #1 key 'venues': unknown venue 'kraken'"),
        ("", "no [[rule]] table"),
    ],
)
def test_malformed_rules_name_the_line(text: str, expected: str) -> None:
    with pytest.raises(RulesError) as err:
        parse_rules(text, "alerts.toml")
    assert expected in str(err.value)
    assert str(err.value).startswith("alerts.toml: ")


def test_malformed_rules_file_exits_2_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text('[[rule]]\nname = "a"\nkind = "liquidation"\nmin_usd = 1\ncooldown_s = -5\n')
    env = dict(os.environ, LIQ_ALERTS_FILE=str(path), LIQ_WEBHOOK_URL="http://127.0.0.1:9/hook", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "alerter"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"{path}: line 5: rule #1 key 'cooldown_s'" in done.stdout


def test_webhook_formats_and_signature() -> None:
    d = Delivery(1, "r", "liquidation", "k", datetime(2026, 12, 2, tzinfo=UTC), "hello", "webhook", {"a": 1})
    assert webhook_body("slack", d) == b'{"text":"hello"}'
    assert webhook_body("discord", d) == b'{"content":"hello"}'
    body = webhook_body("json", d)
    assert body.startswith(b'{"rule":"r","kind":"liquidation","key":"k","fired_at":"2026-12-02T00:00:00+00:00"')
    assert signature("sec", body) == "sha256=" + hmac.new(b"sec", body, hashlib.sha256).hexdigest()
