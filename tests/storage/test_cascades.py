from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from collector.cascades import CascadeDetector, cascade_id, risk_score
from common.events import Side
from tests.storage.factories import T0, liq

WALL = T0 + 1_000  # wall clock near the data, so only exchange time ends cascades


def detector() -> CascadeDetector:
    return CascadeDetector(window_s=60, min_events=5, min_usd=Decimal(100_000))


def test_five_bybit_events_over_threshold_make_one_cascade() -> None:
    d = detector()
    first = [liq(time_ms=T0 + i * 5_000, qty="0.6") for i in range(4)]  # 4 x $30,000
    assert d.process(first, WALL).cascades == []
    fifth = liq(time_ms=T0 + 20_000, qty="0.6")
    update = d.process([fifth], WALL)
    [c] = update.cascades
    assert (c.count, c.value_usd, c.counts, c.side, c.active) == (5, Decimal(150_000), {"bybit": 5}, Side.LONG, True)
    assert c.id == cascade_id("BTCUSDT", Side.LONG, first[0].key)
    assert (c.start_ms, c.end_ms) == (T0, T0 + 20_000)
    assert update.lines == ["CASCADE DETECTED: BYBIT BTCUSDT LONG 5 liquidations | $150,000"]
    # members of the earlier batch are flagged for an UPDATE; the current one is tagged in place
    assert sorted(f[1] for f in update.flags) == sorted(e.key for e in first)
    assert fifth.cascade_id == c.id and all(f[0] == c.id for f in update.flags)


def test_below_usd_or_count_or_spread_out_is_no_cascade() -> None:
    d = detector()
    small = [liq(time_ms=T0 + i * 1_000, qty="0.3") for i in range(8)]  # 8 x $15,000 = $120,000: qualifies
    assert d.process(small[:6], WALL).cascades == []  # $90,000 < $100,000
    assert d.process(small[6:7], WALL).cascades != []
    d2 = detector()
    spread = [liq(time_ms=T0 + i * 61_000, qty="10") for i in range(6)]  # big but each alone in its window
    assert d2.process(spread, T0).cascades == []
    d3 = detector()
    assert d3.process([liq(time_ms=T0 + i, qty="10") for i in range(4)], WALL).cascades == []


def test_merges_until_quiet_then_ends_and_a_new_one_gets_a_new_id() -> None:
    d = detector()
    burst = [liq(time_ms=T0 + i * 1_000, qty="1") for i in range(5)]
    [c] = d.process(burst, WALL).cascades
    later = [liq(time_ms=T0 + 4_000 + k * 50_000, qty="0.01") for k in range(1, 4)]  # tiny, each < 60 s apart
    for ev in later:
        [same] = d.process([ev], WALL).cascades
        assert same.id == c.id
    assert c.count == 8 and c.end_ms == T0 + 154_000
    assert all(e.cascade_id == c.id for e in later)
    # an event after 60 s of quiet ends it (by exchange time) and starts a fresh window
    after = liq(time_ms=T0 + 154_000 + 60_001, qty="0.01")
    update = d.process([after], WALL)
    assert [(x.id, x.active) for x in update.cascades] == [(c.id, False)]
    assert after.cascade_id is None
    second = [liq(time_ms=after.time_ms + 1 + i, qty="1") for i in range(4)]
    [c2] = d.process(second, WALL).cascades
    assert c2.id != c.id and c2.count == 5 and c2.id == cascade_id("BTCUSDT", Side.LONG, after.key)


def test_wall_clock_quiet_ends_a_cascade() -> None:
    d = detector()
    [c] = d.process([liq(time_ms=T0 + i, qty="1", received_ms=T0 + 10) for i in range(5)], T0 + 10).cascades
    assert d.tick(T0 + 60_000).cascades == []
    [ended] = d.tick(T0 + 60_011).cascades
    assert ended.id == c.id and not ended.active and d.active == []


def test_cross_exchange_and_binance_weighting() -> None:
    d = detector()
    binance = [liq("binance", T0 + i * 1_000, qty="0.8") for i in range(3)]  # 3 sampled events weigh 6
    update = d.process(binance, WALL)
    [c] = update.cascades
    assert c.count == 3 and c.counts == {"binance": 3} and not c.cross_exchange
    assert update.lines == ["CASCADE DETECTED: BINANCE BTCUSDT LONG 3 liquidations | $120,000"]
    update = d.process(
        [liq("bybit", T0 + 3_500, qty="2")] + [liq("bybit", T0 + 3_600 + i, qty="1") for i in range(3)], WALL
    )
    [c] = update.cascades
    assert c.counts == {"binance": 3, "bybit": 4} and c.cross_exchange and c.exchanges == ("binance", "bybit")
    assert update.lines == ["CROSS-EXCHANGE CASCADE DETECTED: 7 liquidations | $370,000"]
    d2 = detector()
    assert d2.process([liq("binance", T0 + i * 1_000, qty="5") for i in range(2)], WALL).cascades == []


def test_duplicates_count_once_and_replay_gives_the_same_ids() -> None:
    events = [liq(time_ms=T0 + i * 100, qty="1") for i in range(5)]
    d = detector()
    assert d.process(events[:4] + events[:4], WALL).cascades == []  # 4 distinct events only
    [c] = d.process(events[4:] + events[:2], WALL).cascades
    assert c.count == 5
    again = detector()
    [c2] = again.process([liq(time_ms=T0 + i * 100, qty="1") for i in range(5)], WALL).cascades
    assert c2.id == c.id and c2.value_usd == c.value_usd


def test_price_move_peak_minute_and_sides_apart() -> None:
    d = detector()
    prices = ["50000", "49900", "49500", "49000", "48000"]
    events = [liq(time_ms=T0 + 50_000 + i * 4_000, qty="1", price=p) for i, p in enumerate(prices)]
    shorts = [liq(time_ms=T0 + 50_000 + i, side=Side.SHORT, qty="1") for i in range(3)]
    [c] = d.process(events + shorts, WALL).cascades
    assert c.side == Side.LONG and c.count == 5
    assert (c.price_start, c.price_end) == (Decimal(50000), Decimal(48000))
    assert c.price_move_pct == Decimal(-4)
    # minute T0 holds 3 events (~$149k), the next minute 2 (~$97k)
    assert c.peak_minute_ms == T0


def test_opposite_side_lowers_the_risk_score() -> None:
    def score(with_shorts: bool) -> int:
        d = detector()
        longs = [liq(time_ms=T0 + i * 1_000, qty="1") for i in range(5)]
        d.process(longs, WALL)
        extra = [liq(time_ms=T0 + 6_000 + i, side=Side.SHORT, qty="1") for i in range(4)] if with_shorts else []
        [c] = d.process(extra + [liq(time_ms=T0 + 7_000, qty="1")], WALL).cascades
        return c.risk_score

    assert score(False) - score(True) >= 10


def test_risk_score_reference_points() -> None:
    min_usd = Decimal(100_000)
    assert risk_score(min_usd, min_usd, 5, 600_000, min_usd, 1) == 0  # at threshold, slow, balanced, one venue
    assert risk_score(min_usd * 100, min_usd, 200, 10_000, Decimal(0), 2) == 100
    # size 40*log10(10)/2 = 20, speed 30*(10/10 s)/2 = 15, one-sided 20, cross 0
    assert risk_score(min_usd * 10, min_usd, 10, 10_000, Decimal(0), 1) == 55


@given(
    usd=st.decimals(min_value=0, max_value=10**12, places=2),
    min_usd=st.decimals(min_value=0, max_value=10**9, places=2),
    weighted=st.integers(min_value=0, max_value=10**6),
    duration_ms=st.integers(min_value=0, max_value=10**9),
    opposite=st.decimals(min_value=0, max_value=10**12, places=2),
    exchanges=st.integers(min_value=1, max_value=5),
)
def test_risk_score_is_always_0_to_100(
    usd: Decimal, min_usd: Decimal, weighted: int, duration_ms: int, opposite: Decimal, exchanges: int
) -> None:
    assert 0 <= risk_score(usd, min_usd, weighted, duration_ms, opposite, exchanges) <= 100


def test_close_all_ends_active_cascades_at_shutdown() -> None:
    d = detector()
    [c] = d.process([liq(time_ms=T0 + i, qty="1") for i in range(5)], WALL).cascades
    [ended] = d.close_all()
    assert ended.id == c.id and not ended.active and d.active == [] and d.close_all() == []


def test_a_late_event_from_before_the_window_does_not_join() -> None:
    """Two venues' sockets can deliver out of order; an old event must not join a newer cascade."""
    d = detector()
    burst = [liq(time_ms=T0 + 200_000 + i * 1_000, qty="1") for i in range(5)]
    [c] = d.process(burst, WALL).cascades
    late = liq(time_ms=T0 + 200_000 - 61_000, qty="0.01")  # from before the cascade's own window
    assert d.process([late], WALL).cascades == []
    assert late.cascade_id is None and c.count == 5
    inside = liq(time_ms=T0 + 200_000 - 30_000, qty="0.01")  # late, but inside the qualifying window
    [same] = d.process([inside], WALL).cascades
    assert same.id == c.id and c.count == 6
