"""The Redis live view written by the collector: members, their bucket sums, rebuilds, deadlines.

Figures are checked three ways: the raw members (`redis_totals`), the bucket sums as the app reads
them (`app.data.live.snapshot`, exact window) and TimescaleDB (`db_totals`).
"""

import json
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.data.live import snapshot
from app.query import Catalog, Query, all_target, symbol_target
from collector.storage.redis_live import fast_member
from common.events import Liquidation, Side
from common.live_scripts import KEEP_MS, add_liquidations
from common.live_view import BUCKET_MS, WINDOW_MS, Keys, decode_cascade, decode_liquidation, encode_liquidation
from tests import services
from tests.e2e.own_servers import OwnRedis
from tests.e2e.tcp_proxy import TcpProxy
from tests.storage.factories import liq, now_ms
from tests.storage.helpers import Totals, db_count, db_totals, redis_totals, running_service, wait_until

EXCHANGES = ("binance", "bybit")


@pytest.fixture
def hanging_proxy() -> Iterator[TcpProxy]:
    """tests/e2e/tcp_proxy.py in front of the shared Redis (passes until told to hang)."""
    parsed = redis.connection.parse_url(services.service_env()["REDIS_URL"])
    with TcpProxy((parsed.get("host", "127.0.0.1"), int(parsed.get("port", 6379)))) as proxy:
        yield proxy


def _query(symbol: str | None, exchanges: tuple[str, ...]) -> Query:
    """The app's Query of one venue symbol (or ALL) on these venues, every source (as these tests count)."""
    target = all_target() if symbol is None else symbol_target(symbol, Catalog(), exchanges)
    return Query(target=target, exchanges=exchanges, include_nonlive=True)


def window_totals(client: redis.Redis, prefix: str, now: int, symbol: str | None = "BTCUSDT") -> Totals:
    """The app's figures for [now - WINDOW_MS, now] (bucket sums + edge members), per (exchange, side)."""
    out: Totals = {}
    for exchange in EXCHANGES:
        snap = snapshot(client, Keys(prefix), _query(symbol, (exchange,)), now=now)
        for side, agg in snap.totals.by_side.items():
            if agg.events:
                out[(exchange, side)] = (agg.events, agg.usd)
    return out


def all_bucket_sums(client: redis.Redis, prefix: str) -> dict[tuple[str, str, str, str], tuple[int, Decimal, Decimal]]:
    """Every bucket sum the registry lists, folded per (symbol or "*", exchange, side, source)."""
    from app.data.live import _Sums
    from common.live_view import limbs_to_decimal

    keys = Keys(prefix)
    out: dict[tuple[str, str, str, str], tuple[int, Decimal, Decimal]] = {}
    per_scope: dict[str, _Sums] = {}
    for suffix in client.zrange(keys.agg_keys, 0, -1):
        scope = suffix.decode().partition(":")[2] or "*"
        per_scope.setdefault(scope, _Sums()).add_hash(client.hgetall(keys.agg + suffix.decode()))
    for scope, sums in per_scope.items():
        for group, g in sums.groups.items():
            exchange, side, source = sums.name(group)
            out[(scope, exchange, side, source)] = (g.events, limbs_to_decimal(g.quantity), limbs_to_decimal(g.usd))
    return out


def check_aggregate_keys(client: redis.Redis, prefix: str) -> None:
    """Every aggregate key is in the registry and expires within an hour and a few minutes."""
    keys = Keys(prefix)
    registered = {keys.agg + s.decode() for s in client.zrange(keys.agg_keys, 0, -1)}
    present = {k.decode() for k in client.scan_iter(match=f"{keys.agg}*", count=1000)}
    assert present and present <= registered
    for key in present:
        assert 0 < client.pttl(key) <= KEEP_MS + BUCKET_MS, key


def member_sums(client: redis.Redis, prefix: str) -> dict[tuple[str, str, str, str], tuple[int, Decimal, Decimal]]:
    """The same figures from the raw members."""
    out: dict[tuple[str, str, str, str], tuple[int, Decimal, Decimal]] = {}
    for member in client.zrange(Keys(prefix).liqs, 0, -1):
        d = decode_liquidation(member)
        for scope in ("*", json.dumps(d["symbol"])[1:-1]):
            k = (scope, d["exchange"], str(d["side"]), d["source"])
            n, q, u = out.get(k, (0, Decimal(0), Decimal(0)))
            out[k] = (n + 1, q + d["quantity"], u + d["value_usd"])
    return out


def rewritten(ev: Liquidation, style: int) -> Liquidation:
    """The same liquidation with its numbers written another way (`0.50`, `5E-1` for `0.5`)."""

    def text(d: Decimal) -> str:
        _sign, digits, exponent = d.as_tuple()
        if style % 2:  # 0.5 -> 50E-2, 61000 -> 610000E-1
            return f"{''.join(map(str, digits))}0E{int(exponent) - 1}"
        plain = f"{d:f}"
        return f"{plain}0" if "." in plain else f"{plain}.0"

    q, p = Decimal(text(ev.quantity)), Decimal(text(ev.price))
    return replace(ev, quantity=q, price=p, value_usd=q * p, key=0)


def _script(now: int) -> tuple[list[Liquidation], int]:
    """300 events over the last 70 minutes on both venues and sides, 40 re-deliveries, 60 re-sent with
    their numbers written differently, one burst."""
    events = [
        liq(
            ("bybit", "binance")[i % 2],
            now - 4_200_000 + i * 13_500,
            (Side.LONG, Side.SHORT)[i % 3 == 0],
            qty=f"0.0{i % 7 + 1}3",
            price=f"{60_000 + i}.5",
        )
        for i in range(300)
    ]
    burst = [liq("bybit", now - 30_000 + i * 10, Side.SHORT, qty="2", price="61000") for i in range(6)]
    unique = events + burst
    resent = events[100:140] + [rewritten(e, i) for i, e in enumerate(events[140:200])]
    assert all(str(r.quantity) != str(e.quantity) for r, e in zip(resent[40:], events[140:200], strict=True))
    return unique + resent, len(unique)


def _expected(events: list[Liquidation], lo: int, hi: int) -> Totals:
    totals: Totals = {}
    for e in {x.key: x for x in events}.values():
        if lo <= e.time_ms <= hi:
            n, usd = totals.get((e.exchange, str(e.side)), (0, Decimal(0)))
            totals[(e.exchange, str(e.side))] = (n + 1, usd + e.value_usd)
    return totals


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


async def test_window_totals_in_redis_equal_timescale(
    settings: object, sync_redis: redis.Redis, redis_prefix: str, clean_db: str
) -> None:
    now = now_ms()
    events, unique = _script(now)
    async with running_service(settings) as service:  # type: ignore[arg-type]
        for ev in events:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == unique, what="all rows in TimescaleDB")
        keys = Keys(redis_prefix)
        await wait_until(
            lambda: (
                sync_redis.zcard(keys.liqs) >= 250
                and sync_redis.hexists(keys.collector, "state")
                and bool(sync_redis.exists(keys.built))
            ),
            what="redis",
        )
        lo, hi = now - WINDOW_MS, now
        from_redis = redis_totals(sync_redis, redis_prefix, lo, hi)
        assert from_redis == db_totals(clean_db, lo, hi) == _expected(events, lo, hi)
        assert window_totals(sync_redis, redis_prefix, hi) == from_redis  # the bucket sums the app reads
        assert all_bucket_sums(sync_redis, redis_prefix) == member_sums(sync_redis, redis_prefix)
        check_aggregate_keys(sync_redis, redis_prefix)
        assert sum(n for n, _ in from_redis.values()) < unique  # the window really cut older events
        [raw] = sync_redis.hvals(keys.cascades)
        cascade = decode_cascade(raw)
        assert (cascade.count, cascade.side, cascade.value_usd) == (6, Side.SHORT, Decimal(732_000))
        state = json.loads(sync_redis.hget(keys.collector, "state") or "{}")
        assert state["spool"]["pending_events"] == 0 and abs(state["heartbeat_ms"] - now_ms()) < 10_000


async def test_flushed_redis_is_rebuilt_from_timescale(
    own_redis: OwnRedis, redis_prefix: str, clean_db: str, tmp_path: Path
) -> None:
    settings = services.make_settings(clean_db, redis_prefix, tmp_path, REDIS_URL=own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    now = now_ms()
    events, unique = _script(now)
    lo, hi = now - WINDOW_MS, now
    keys = Keys(redis_prefix)
    async with running_service(settings) as service:
        for ev in events:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == unique, what="rows")
        await wait_until(lambda: redis_totals(client, redis_prefix, lo, hi) == _expected(events, lo, hi), what="window")
        assert window_totals(client, redis_prefix, hi) == _expected(events, lo, hi)
        client.flushall()
        await wait_until(lambda: bool(client.exists(keys.built)), what="rebuild marker")
        assert redis_totals(client, redis_prefix, lo, hi) == db_totals(clean_db, lo, hi) == _expected(events, lo, hi)
        assert window_totals(client, redis_prefix, hi) == _expected(events, lo, hi)
        assert all_bucket_sums(client, redis_prefix) == member_sums(client, redis_prefix) != {}
        check_aggregate_keys(client, redis_prefix)
        assert client.hlen(keys.cascades) == 1
    client.close()


async def test_redis_down_then_back_keeps_timescale_and_rebuilds(
    own_redis: OwnRedis, redis_prefix: str, clean_db: str, tmp_path: Path
) -> None:
    settings = services.make_settings(clean_db, redis_prefix, tmp_path, REDIS_URL=own_redis.url)
    now = now_ms()
    events, unique = _script(now)
    lo, hi = now - WINDOW_MS, now
    async with running_service(settings) as service:
        for ev in events[:100]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == 100, what="first rows")
        own_redis.stop()
        for ev in events[100:]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == unique, what="rows written while Redis is down")
        assert not service.live.available
        own_redis.start()  # comes back empty (no persistence)
        client = redis.Redis.from_url(own_redis.url)
        await wait_until(lambda: bool(client.exists(Keys(redis_prefix).built)), what="rebuild")
        assert redis_totals(client, redis_prefix, lo, hi) == db_totals(clean_db, lo, hi) == _expected(events, lo, hi)
        assert window_totals(client, redis_prefix, hi) == _expected(events, lo, hi)
        assert all_bucket_sums(client, redis_prefix) == member_sums(client, redis_prefix)
        client.close()


@given(
    exchange=st.sampled_from(["bybit", "binance", 'we"ird', "ünï"]),
    symbol=st.sampled_from(["BTCUSDT", "币安人生USDT", "龙虾USDT", "1000PEPEUSDT", "a\\b"]),
    source=st.sampled_from(["live", "test", "a\\b"]),
    qty=st.decimals(min_value=Decimal("0.00000001"), max_value=10**6, places=8),
    price=st.decimals(min_value=Decimal("0.0001"), max_value=10**7, places=4),
    time_ms=st.integers(min_value=0, max_value=2**42),
    side=st.sampled_from(list(Side)),
    style=st.integers(min_value=0, max_value=3),
)
def test_fast_member_equals_the_shared_codec_and_is_canonical(
    exchange: str, symbol: str, source: str, qty: Decimal, price: Decimal, time_ms: int, side: Side, style: int
) -> None:
    ev = liq(exchange, time_ms, side, qty=str(qty), price=str(price), symbol=symbol, source=source)
    member = fast_member(ev)
    assert member == encode_liquidation(ev)
    assert member.isascii() and decode_liquidation(member)["symbol"] == symbol
    again = rewritten(ev, style)  # the venue re-sends it with its numbers written another way
    assert again.key == ev.key and fast_member(again) == encode_liquidation(again) == member


async def test_restart_after_a_kill_drops_members_that_never_reached_timescale(
    settings: object, sync_redis: redis.Redis, redis_prefix: str, clean_db: str
) -> None:
    keys = Keys(redis_prefix)
    now = now_ms()
    ghost = liq(time_ms=now - 5_000, qty="7")  # in Redis from a killed run, never committed
    add_liquidations(sync_redis, keys, [ghost])
    sync_redis.set(keys.built, "1")
    sync_redis.hset(keys.collector, "state", json.dumps({"stopped": False}))
    events = [liq(time_ms=now - 1_000 - i, qty="0.01") for i in range(50)]
    async with running_service(settings) as service:  # type: ignore[arg-type]
        for ev in events:
            await service.queue.put(ev)
        await wait_until(lambda: service.live.rebuilt_ms is not None and db_count(clean_db) == 50, what="rebuild")
        lo, hi = now - WINDOW_MS, now
        await wait_until(
            lambda: redis_totals(sync_redis, redis_prefix, lo, hi) == _expected(events, lo, hi), what="window"
        )
        assert redis_totals(sync_redis, redis_prefix, lo, hi) == db_totals(clean_db, lo, hi)
        assert window_totals(sync_redis, redis_prefix, hi) == _expected(events, lo, hi)  # the ghost's sums went too
        assert all_bucket_sums(sync_redis, redis_prefix) == member_sums(sync_redis, redis_prefix)
    assert json.loads(sync_redis.hget(keys.collector, "state") or "{}")["stopped"] is True


async def test_restart_after_a_clean_stop_keeps_the_view_without_rebuilding(
    settings: object, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    now = now_ms()
    async with running_service(settings) as service:  # type: ignore[arg-type]
        await service.queue.put(liq(time_ms=now - 1_000))
        await wait_until(
            lambda: service.live.rebuilt_ms is not None and sync_redis.zcard(keys.liqs) == 1, what="first run"
        )
    async with running_service(settings) as service:  # type: ignore[arg-type]
        await service.queue.put(liq(time_ms=now - 2_000))
        await wait_until(lambda: sync_redis.zcard(keys.liqs) == 2, what="second run")
        assert service.live.rebuilt_ms is None and not service.live.needs_rebuild


async def test_a_flush_during_a_rebuild_aborts_the_swap(redis_prefix: str, sync_redis: redis.Redis) -> None:
    """A rebuild must not stamp `built` on a window that a FLUSH emptied while it was assembled."""
    from collector.storage.redis_live import RedisLive

    live = RedisLive(services.service_env()["REDIS_URL"], redis_prefix)
    await live.open()
    keys = Keys(redis_prefix)
    try:
        events = [liq(time_ms=now_ms() - 1_000 * i) for i in range(3)]
        assert await live.begin_rebuild()
        for k in sync_redis.scan_iter(match=f"{redis_prefix}*"):  # FLUSH of this test's keys only
            sync_redis.delete(k)
        assert not await live.rebuild(events, list, list)
        assert not sync_redis.exists(keys.built) and live.needs_rebuild
        assert await live.begin_rebuild()
        assert await live.rebuild(events, list, list)
        assert sync_redis.exists(keys.built) and sync_redis.zcard(keys.liqs) == 3
    finally:
        await live.close()


def test_window_edges_are_exact(sync_redis: redis.Redis, redis_prefix: str) -> None:
    """Whatever `now` is (on a bucket boundary or not), bucket sums + edge members = the exact window."""
    keys = Keys(redis_prefix)
    base = 1_795_000_020_000  # a bucket boundary
    nows = [base + d for d in (0, 1, BUCKET_MS - 1, BUCKET_MS, 4_321, 59_999)]
    times = set()
    for now in nows:
        lo = now - WINDOW_MS
        first = -(-lo // BUCKET_MS) * BUCKET_MS
        end = (now + 1) // BUCKET_MS * BUCKET_MS
        times |= {lo - 1, lo, lo + 1, first - 1, first, end - 1, end, now - 1, now, now + 1}
    rng = random.Random(9)
    times |= {rng.randrange(base - WINDOW_MS - 30_000, base + 90_000) for _ in range(400)}
    events = []
    for i, t in enumerate(sorted(times)):
        ev = liq(EXCHANGES[i % 2], t, (Side.LONG, Side.SHORT)[i % 3 == 0], qty=f"0.{i % 89 + 1}7", price=f"6{i}.25")
        events.append(ev)
        if i % 5 == 0:
            events.append(rewritten(ev, i))  # re-sent, numbers written differently: counted once
        if i % 7 == 0:
            events.append(liq("bybit", t, Side.SHORT, qty="3", price="3000", symbol="ETHUSDT"))
    assert add_liquidations(sync_redis, keys, events) == len({e.key for e in events})
    for now in nows:
        lo = now - WINDOW_MS
        btc = [e for e in events if e.symbol == "BTCUSDT"]
        assert window_totals(sync_redis, redis_prefix, now) == _expected(btc, lo, now), now
        assert window_totals(sync_redis, redis_prefix, now, symbol=None) == _expected(events, lo, now), now
        snap = snapshot(sync_redis, keys, _query("BTCUSDT", EXCHANGES), now=now)
        inside = {e.key: e for e in btc if lo <= e.time_ms <= now}.values()
        assert snap.totals.total.quantity == sum((e.quantity for e in inside), Decimal(0))
        assert snap.totals.max_usd == max(e.value_usd for e in inside)
        assert snap.members_read <= 2 * BUCKET_MS // 100 + 500  # the edges and one page, never the window
    assert all_bucket_sums(sync_redis, redis_prefix) == member_sums(sync_redis, redis_prefix)


# Any magnitude, up to 28 significant digits (common.events.canonical_text rounds longer numbers).
_amounts = st.decimals(
    min_value=Decimal("1E-30"), max_value=Decimal("1E+30"), allow_nan=False, allow_infinity=False
).map(lambda d: +d)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amounts=st.lists(st.tuples(_amounts, _amounts), min_size=1, max_size=25),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_bucket_sums_are_exact_for_any_decimal(
    sync_redis: redis.Redis, redis_prefix: str, amounts: list[tuple[Decimal, Decimal]], seed: int
) -> None:
    keys = Keys(f"{redis_prefix}{secrets.token_hex(4)}:")
    t = 1_795_000_020_000 + seed % (BUCKET_MS - 2)  # t .. t + 2 stay in one bucket
    events = [liq("bybit", t + i % 3, qty=str(q), price=str(p)) for i, (q, p) in enumerate(amounts)]
    unique = list({e.key: e for e in events}.values())
    split = seed % (len(events) + 1)
    add_liquidations(sync_redis, keys, events[:split])  # two calls: sums and the largest carry over
    add_liquidations(sync_redis, keys, events[split:])
    add_liquidations(sync_redis, keys, events)  # the third time nothing is new
    with localcontext(prec=200):  # the exact sums (the default 28 digits would round them)
        want = (
            len(unique),
            sum((e.quantity for e in unique), Decimal(0)),
            sum((e.value_usd for e in unique), Decimal(0)),
        )
    sums = all_bucket_sums(sync_redis, keys.prefix)
    assert sums[("*", "bybit", "LONG", "test")] == sums[("BTCUSDT", "bybit", "LONG", "test")]
    got = sums[("*", "bybit", "LONG", "test")]
    assert got[0] == want[0] and got[1] == want[1] and got[2] == want[2]
    largest = sync_redis.hget(keys.agg_key(t - t % BUCKET_MS), '["bybit","LONG","test"]x')
    assert largest is not None and Decimal(largest.decode()) == max(e.value_usd for e in unique)


async def test_hanging_redis_is_an_outage_and_timescale_keeps_writing(
    hanging_proxy: TcpProxy, sync_redis: redis.Redis, redis_prefix: str, clean_db: str, tmp_path: Path
) -> None:
    """Redis accepts and never answers: within the deadline the collector treats it as down, goes
    on writing TimescaleDB, and rebuilds the view (members and sums) once it answers again."""
    url = hanging_proxy.url_for(services.service_env()["REDIS_URL"])
    settings_ = services.make_settings(clean_db, redis_prefix, tmp_path, REDIS_URL=url, LIQ_REDIS_TIMEOUT_S="1")
    now = now_ms()
    events, unique = _script(now)
    lo, hi = now - WINDOW_MS, now
    async with running_service(settings_) as service:
        for ev in events[:100]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == 100 and service.live.rebuilt_ms is not None, what="first rows")
        hanging_proxy.set_mode("hang")
        hung = time.monotonic()
        for ev in events[100:]:
            await service.queue.put(ev)
        await wait_until(lambda: db_count(clean_db) == unique, within=30, what="rows written while Redis hangs")
        assert time.monotonic() - hung < 10  # a deadline of 1 s (2 s a round trip), not TCP timeouts
        await wait_until(lambda: not service.live.available, within=10, what="Redis marked unavailable")
        rebuilt = service.live.rebuilt_ms
        hanging_proxy.set_mode("pass")
        await wait_until(
            lambda: service.live.available and service.live.rebuilt_ms != rebuilt, within=30, what="rebuild"
        )
        assert (
            redis_totals(sync_redis, redis_prefix, lo, hi) == db_totals(clean_db, lo, hi) == _expected(events, lo, hi)
        )
        assert window_totals(sync_redis, redis_prefix, hi) == _expected(events, lo, hi)
        assert all_bucket_sums(sync_redis, redis_prefix) == member_sums(sync_redis, redis_prefix)


async def test_two_collectors_publish_one_health_view(redis_prefix: str, sync_redis: redis.Redis) -> None:
    """Two collectors: a venue is down in the shared view only when both lost it (no flapping with
    whichever wrote last); the shared state lists both; a stopping one leaves it to the other."""
    from collector.storage.redis_live import RedisLive

    url = services.service_env()["REDIS_URL"]
    a = RedisLive(url, redis_prefix, instance="host-a:1")
    b = RedisLive(url, redis_prefix, instance="host-b:2")
    keys = Keys(redis_prefix)

    def snap(connected: bool, last_ms: int | None) -> dict[str, object]:
        return {"connected": connected, "last_message_ms": last_ms, "reconnects": 0 if connected else 3}

    def state(stopped: bool = False, heartbeat: int | None = None) -> dict[str, object]:
        return {"heartbeat_ms": heartbeat or now_ms(), "stopped": stopped, "spool": {"state": "idle"}}

    def shared_health() -> dict[str, dict[str, object]]:
        return {k.decode(): json.loads(v) for k, v in sync_redis.hgetall(keys.health).items()}

    def shared_state() -> dict[str, object]:
        return json.loads(sync_redis.hget(keys.collector, "state") or b"{}")

    await a.open()
    await b.open()
    try:
        t = now_ms()
        for first, second in ((a, b), (b, a)):  # whichever publishes last, the same view
            await first.publish(
                {"binance": snap(True, t), "okx": snap(False, t - 90_000)} if first is a else {}, state()
            )
            await second.publish(
                {"binance": snap(False, t - 60_000), "okx": snap(False, t - 5_000)} if second is b else {}, state()
            )
        await a.publish({"binance": snap(True, t), "okx": snap(False, t - 90_000)}, state())
        await b.publish({"binance": snap(False, t - 60_000), "okx": snap(False, t - 5_000)}, state())
        health = shared_health()
        assert health["binance"]["connected"] is True and health["binance"]["reconnects"] == 0
        assert (health["binance"]["collectors"], health["binance"]["collectors_connected"]) == (2, 1)
        assert health["okx"]["connected"] is False and health["okx"]["last_message_ms"] == t - 5_000
        listed = shared_state()["collectors"]
        assert [c["instance"] for c in listed] == ["host-a:1", "host-b:2"]  # type: ignore[union-attr,index]
        # a stops: the shared state stays the running one's
        await a.publish({"binance": snap(False, t)}, state(stopped=True))
        assert shared_state()["instance"] == "host-b:2"
        # a is gone (its heartbeat stale): only b's view counts
        await a.publish({"binance": snap(True, t)}, state(heartbeat=now_ms() - 60_000))
        await b.publish({"binance": snap(False, t - 60_000)}, state())
        assert shared_health()["binance"]["connected"] is False
        assert shared_health()["binance"]["collectors"] == 1
    finally:
        await a.close()
        await b.close()
