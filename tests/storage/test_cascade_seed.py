"""The relative cascade rule starts warm: at start the collector seeds each canonical instrument's
24-hour baseline from the stored 1-minute rollups (every venue's spelling of it, live rows only),
instead of judging every burst against the absolute floor until a day of flow has been seen."""

from __future__ import annotations

from decimal import Decimal

from collector.cascades import CascadeDetector
from common.config import Settings
from tests.app.seed import insert_liquidations, liq, now_ms
from tests.storage.helpers import running_service, wait_until

MINUTE = 60_000


async def test_baselines_are_seeded_from_the_rollups_across_venue_spellings(settings: Settings) -> None:
    now = now_ms()
    this_minute = now - now % MINUTE
    events = []
    for hour in range(1, 24):  # one BTC liquidation an hour on Binance and one on OKX, a day back
        t = this_minute - hour * 3_600_000 + 5_000
        events.append(liq("binance", "LONG", "0.2", "100000", t, "BTCUSDT"))
        events.append(liq("okx", "SHORT", "0.1", "100000", t + 1_000, "BTC-USDT-SWAP"))
    events.append(liq("bybit", "LONG", "1000", "1", this_minute - 30 * MINUTE, "QAAAUSDT"))
    events.append(liq("bybit", "LONG", "9", "100000", this_minute - 25 * 3_600_000, "BTCUSDT"))  # older than 24 h
    events.append(liq("bybit", "LONG", "9", "100000", this_minute - 2 * MINUTE, "BTCUSDT", source="test"))  # not live
    insert_liquidations(settings.database_url, events)

    # What the detector must know: live rows of the last 24 h, summed per canonical instrument and minute.
    want = CascadeDetector.from_settings(settings)
    btc: dict[int, Decimal] = {}
    for e in events[:-3]:
        if e.symbol != "QAAAUSDT":
            minute = e.time_ms - e.time_ms % MINUTE
            btc[minute] = btc.get(minute, Decimal(0)) + e.value_usd
    want.seed_baseline("BTC-USDT-PERP", sorted(btc.items()))
    want.seed_baseline("QAAA-USDT-PERP", [(this_minute - 30 * MINUTE, Decimal(1000))])

    async with running_service(settings) as service:
        detector = service.pipeline.detector
        await wait_until(lambda: detector.baseline_usd("BTC-USDT-PERP", now) > 0, within=20, what="baselines seeded")
        for name in ("BTC-USDT-PERP", "QAAA-USDT-PERP"):
            assert detector.baseline_usd(name, now) == want.baseline_usd(name, now) > 0, name
        # 23 h of $30,000 an hour over ~1,380 minutes: about $500 per 60 s window, so a $20,000
        # minute is no cascade on BTC (10 x B is still below the floor) while the floor holds.
        assert Decimal(400) < detector.baseline_usd("BTC-USDT-PERP", now) < Decimal(600)
