"""Live page: the exact 60-minute window from real Redis, pipeline states, banners, health;
bounded reads whatever the window holds, and a deadline on every Redis call."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import pandas as pd
import pytest
import redis
from streamlit.testing.v1 import AppTest

from app import cli
from app.data.live import MAX_SCAN, snapshot
from app.format import fmt_count, fmt_datetime, fmt_pct, fmt_qty, fmt_usd, share_pct
from common.config import Settings
from common.events import Liquidation
from common.live_view import BEHIND_WARN_S, BUCKET_MS, Keys
from tests import services
from tests.app.seed import (
    all_text,
    app_env,
    cascade_of,
    expected_totals,
    fq,
    health_snapshot,
    instrument_state,
    liq,
    metric,
    no_exceptions,
    now_ms,
    open_app,
    redis_cascades,
    redis_health,
    redis_heartbeat,
    redis_liquidations,
)
from tests.e2e.tcp_proxy import TcpProxy

WINDOW = 3_600_000


class CountingProxy:
    """Forwards loopback TCP to Redis and counts the bytes Redis sends back: what a reader fetched."""

    def __init__(self, upstream_url: str) -> None:
        parsed = redis.connection.parse_url(upstream_url)
        self._upstream = (parsed.get("host", "127.0.0.1"), int(parsed.get("port", 6379)))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/{parsed.get('db', 0)}"
        self.bytes_down = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
                if down:
                    with self._lock:
                        self.bytes_down += len(data)
        for sock in (src, dst):
            sock.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


@pytest.fixture
def counting() -> Iterator[CountingProxy]:
    proxy = CountingProxy(services.service_env()["REDIS_URL"])
    yield proxy
    proxy.close()


@pytest.fixture
def hanging() -> Iterator[TcpProxy]:
    """tests/e2e/tcp_proxy.py in front of the shared Redis, hanging: accepts, never answers."""
    parsed = redis.connection.parse_url(services.service_env()["REDIS_URL"])
    with TcpProxy((parsed.get("host", "127.0.0.1"), int(parsed.get("port", 6379)))) as proxy:
        proxy.set_mode("hang")
        yield proxy


def frame(at: AppTest, column: str) -> pd.DataFrame:
    """The one table on the page that has this column."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, (column, [list(d.value.columns) for d in at.dataframe])
    return found[0]


def test_snapshot_window_is_exact_at_both_ends(sync_redis: redis.Redis, redis_prefix: str) -> None:
    now = 1_767_225_600_000
    inside = [
        liq("bybit", "LONG", "1.5", "100", now - WINDOW),  # oldest included: [now - 3_600_000, now]
        liq("binance", "SHORT", "0.25", "200", now),
        liq("bybit", "SHORT", "2", "50.5", now - 1000),
    ]
    outside = [
        liq("bybit", "LONG", "9", "100", now - WINDOW - 1),
        liq("bybit", "LONG", "9", "100", now + 1),
        liq("bybit", "LONG", "9", "100", now - 1000, symbol="ETHUSDT"),
    ]
    redis_liquidations(sync_redis, redis_prefix, inside + outside)
    snap = snapshot(sync_redis, Keys(redis_prefix), fq("BTCUSDT", ("binance", "bybit")), now=now)
    want = expected_totals(inside)
    assert (snap.totals.total.events, snap.totals.total.quantity, snap.totals.total.usd) == (3, want.quantity, want.usd)
    assert snap.totals.by_side["SHORT"].usd == want.by_side["SHORT"].usd
    assert list(snap.events["time_ms"]) == [now, now - 1000, now - WINDOW]  # newest first

    only_bybit = snapshot(sync_redis, Keys(redis_prefix), fq("BTCUSDT", ("bybit",)), now=now)
    assert only_bybit.totals.total.events == 2
    all_symbols = snapshot(sync_redis, Keys(redis_prefix), fq(None, ("binance", "bybit")), now=now)
    assert all_symbols.totals.total.events == 4
    assert snap.collector_state() == "missing"


def _seed_window(sync_redis: redis.Redis, prefix: str, now: int, source: str = "live") -> list[Liquidation]:
    events = [
        liq("bybit", "LONG", "0.5", "60000", now - 3_000_000, source=source),
        liq("bybit", "LONG", "0.125", "60010.5", now - 120_000, source=source),
        liq("binance", "SHORT", "0.014", "61000.1", now - 60_000, source=source),
        liq("binance", "LONG", "1.2345", "59999.99", now - 30_000, source=source),
    ]
    stale = [liq("bybit", "SHORT", "7", "60000", now - WINDOW - 200_000, source=source)]  # trimmed margin, not shown
    other = [liq("bybit", "SHORT", "3", "3000", now - 10_000, symbol="ETHUSDT", source=source)]
    redis_liquidations(sync_redis, prefix, events + stale + other)
    return events


def test_live_page_shows_exact_totals(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    events = _seed_window(sync_redis, settings.redis_prefix, now)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [health_snapshot("binance", now, reconnects=2, drops={"bad_json": 3}), health_snapshot("bybit", now)],
    )
    members = [m for m in events if m.exchange == "bybit"]
    redis_cascades(sync_redis, settings.redis_prefix, [cascade_of(members, 77, active=True)])
    app_env(monkeypatch, settings)

    at = open_app("live")
    no_exceptions(at)
    want = expected_totals(events)
    assert metric(at, "Liquidations") == fmt_count(want.count) == "4"
    assert metric(at, "Base quantity") == fmt_qty(want.quantity)
    assert metric(at, "USD liquidated") == fmt_usd(want.usd)
    assert metric(at, "Cascades") == "1"
    assert not at.error and not at.warning

    sides = at.dataframe[0].value
    assert list(sides["Side"]) == ["LONG", "SHORT"]
    for side in ("LONG", "SHORT"):
        row = sides[sides["Side"] == side].iloc[0]
        agg = want.by_side[side]
        assert (row["Events"], row["Base quantity"], row["USD"], row["Share of USD"]) == (
            fmt_count(agg.count),
            fmt_qty(agg.quantity),
            fmt_usd(agg.usd),
            fmt_pct(share_pct(agg.usd, want.usd)),
        )
    exchanges = at.dataframe[1].value
    assert list(exchanges["Exchange"]) == ["binance (lower bound)", "bybit"]
    assert list(exchanges["USD"]) == [fmt_usd(want.by_exchange[e].usd) for e in ("binance", "bybit")]
    assert "lower bound" in all_text(at)

    latest: pd.DataFrame = at.dataframe[2].value
    first = events[-1]
    assert list(latest.iloc[0][["Date", "Time (UTC)", "Exchange", "Side", "Amount", "USD", "Price"]]) == [
        first.date_str,
        first.time_str,
        "binance",
        "LONG",
        "1.2345",
        fmt_usd(first.value_usd),
        "$59,999.99",
    ]
    assert len(latest) == 4
    cascades = at.dataframe[3].value
    assert list(cascades[["State", "Side", "Events"]].iloc[0]) == ["active", "LONG", "2"]
    health = frame(at, "Stream")
    binance = health[health["Stream"] == "binance"].iloc[0]
    assert (binance["Connected"], binance["Reconnects"], binance["Drops"]) == ("yes", "2", "3 (bad_json: 3)")


def test_all_symbols_sum_usd(monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis) -> None:
    now = now_ms()
    events = _seed_window(sync_redis, settings.redis_prefix, now)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    app_env(monkeypatch, settings)
    at = open_app("live", {"symbol": "ALL"})
    no_exceptions(at)
    usd = expected_totals(events).usd + 3 * 3000
    assert metric(at, "USD liquidated") == fmt_usd(usd)
    assert metric(at, "Base quantity") == "n/a (mixed assets)"


def test_collector_missing_stale_and_quiet(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    assert "Collector not running: no heartbeat" in all_text(at)

    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now - 60_000)
    app_env(monkeypatch, settings)
    at = open_app("live")
    rendered = now_ms()
    # The page's "now" is its render's clock rounded up to the next 10 s (app.query.NOW_STEP_MS), so
    # it sees the heartbeat 60 s old at least and at most 10 s more than the render's own delay.
    text = all_text(at)
    seen = re.search(r"Collector not running: its last heartbeat was 00:(\d\d):(\d\d) ago", text)
    assert seen is not None, text
    age_s = int(seen[1]) * 60 + int(seen[2])
    assert 60 <= age_s <= 70 + -(-(rendered - now) // 1000), text
    assert "No liquidations in the last 60 minutes" not in all_text(at)

    redis_heartbeat(sync_redis, settings.redis_prefix, now_ms())
    redis_health(sync_redis, settings.redis_prefix, [health_snapshot("binance", now), health_snapshot("bybit", now)])
    app_env(monkeypatch, settings)
    at = open_app("live")
    text = all_text(at)
    assert "No liquidations in the last 60 minutes" in text and "Collector not running" not in text
    assert metric(at, "Liquidations") == "0"


def test_disconnected_stream_is_not_a_quiet_market(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot("binance", now),
            health_snapshot("bybit", now, connected=False, last_message_ms=now - 300_000, last_error="silence 30 s"),
        ],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "Stream bybit disconnected: last message 5 min ago" in warnings and "silence 30 s" in warnings
    assert "binance" not in warnings
    health = frame(at, "Connected")
    assert list(health["Connected"]) == ["yes", "no"]


def test_no_stream_connected_is_missing_data_not_a_quiet_market(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot(e, now, connected=False, last_message_ms=None, last_error="gaierror")
            for e in ("binance", "bybit")
        ],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    text = all_text(at)
    assert "missing data, not a quiet market" in text
    assert "simply been quiet" not in text
    assert not any("not live" in e.value for e in at.error), "live sources must not get the replay banner"


def test_stream_reconnected_inside_the_window_is_flagged(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [health_snapshot("binance", now), health_snapshot("bybit", now, connected_since_ms=now - 600_000)],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    infos = " ".join(i.value for i in at.info)
    assert "Stream bybit connected since" in infos and "Stream binance connected since" not in infos
    assert "simply been quiet" in infos


def test_replay_data_gets_a_banner(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    events = _seed_window(sync_redis, settings.redis_prefix, now, source="replay")
    redis_heartbeat(sync_redis, settings.redis_prefix, now, source="replay")
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    assert any("REPLAY data — not live" in e.value and "left out below" in e.value for e in at.error)
    assert metric(at, "USD liquidated") == fmt_usd(0)  # one non-live rule on every page and in the CLI
    at = open_app("live", {"nonlive": "1"})
    no_exceptions(at)
    assert any("counted below" in e.value for e in at.error)
    assert metric(at, "USD liquidated") == fmt_usd(expected_totals(events).usd)


# --- Finding 8: one canonical member, whatever text the venue used for its numbers -----------------


def test_a_resent_liquidation_counts_once_whatever_its_number_text(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = now_ms()
    one = liq("bybit", "LONG", "0.5", "100000", now - 60_000)
    resent = [
        replace(one, quantity=Decimal(q), value_usd=Decimal(q) * one.price, key=0) for q in ("0.50", "5E-1", "500E-3")
    ]
    assert len({e.key for e in [one, *resent]}) == 1 and len({str(e.quantity) for e in [one, *resent]}) == 3
    redis_liquidations(sync_redis, settings.redis_prefix, [one, *resent])
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    assert sync_redis.zcard(Keys(settings.redis_prefix).liqs) == 1
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    assert (metric(at, "Liquidations"), metric(at, "USD liquidated")) == ("1", fmt_usd(Decimal(50_000)))
    assert len(frame(at, "Amount")) == 1
    assert cli.main(["snapshot", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["total"]["events"], Decimal(data["total"]["usd"])) == (1, Decimal(50_000))


def test_non_ascii_symbols_are_counted_apart(sync_redis: redis.Redis, redis_prefix: str) -> None:
    now = 1_767_225_600_000
    events = [
        liq("binance", "LONG", "1000", "0.25", now - 5_000, symbol="币安人生USDT"),
        liq("binance", "SHORT", "10", "0.5", now - 4_000_000 + 3_000_000, symbol="龙虾USDT"),
        liq("binance", "SHORT", "1", "60000", now - 1_000),
    ]
    redis_liquidations(sync_redis, redis_prefix, events)
    keys = Keys(redis_prefix)
    one = snapshot(sync_redis, keys, fq("币安人生USDT", ("binance", "bybit")), now=now)
    assert (one.totals.total.events, one.totals.total.usd) == (1, Decimal(250))
    assert list(one.events["symbol"]) == ["币安人生USDT"]
    every = snapshot(sync_redis, keys, fq(None, ("binance", "bybit")), now=now)
    assert (every.totals.total.events, every.totals.total.usd) == (3, Decimal(60_255))


# --- Finding 10: bounded whatever the window holds ---------------------------------------------------


def _collector_state(sync_redis: redis.Redis, prefix: str, now: int, **changes: object) -> None:
    """A heartbeat at `now`, then the collector's published state with `changes` on top."""
    redis_heartbeat(sync_redis, prefix, now)
    keys = Keys(prefix)
    state = json.loads(sync_redis.hget(keys.collector, "state") or "{}")
    state.update(changes)
    sync_redis.hset(keys.collector, "state", json.dumps(state))


def _big_window(now: int, n: int) -> list[Liquidation]:
    """`n` BTCUSDT liquidations spread over the window, and 5 ETHUSDT ones among the oldest."""
    # 30 s clear of the window's start: the page's "now" is rounded up to 10 s and runs a few seconds later
    step = (WINDOW - 4 * BUCKET_MS) // n
    events = [
        liq(("bybit", "binance")[i % 2], ("LONG", "SHORT")[i % 3 == 0], f"0.{i % 97 + 1:03d}", f"{60_000 + i % 500}.5",
            now - WINDOW + 3 * BUCKET_MS + i * step)
        for i in range(n)
    ]  # fmt: skip
    events += [liq("bybit", "SHORT", "2", "3000", now - WINDOW + 40_000 + i, symbol="ETHUSDT") for i in range(5)]
    return events


def test_a_large_window_is_read_in_bounded_amounts(
    counting: CountingProxy, sync_redis: redis.Redis, redis_prefix: str
) -> None:
    """30,000 members (~3 MB) in the window: the totals stay exact while the data function fetches the
    bucket sums, the edge members and one page of rows; a rare symbol costs at most MAX_SCAN rows."""
    now = now_ms()
    events = _big_window(now, 30_000)
    redis_liquidations(sync_redis, redis_prefix, events)
    keys = Keys(redis_prefix)
    window_bytes = sum(len(m) for m in sync_redis.zrange(keys.liqs, 0, -1))
    assert window_bytes > 3_000_000
    client = redis.Redis.from_url(counting.url)
    try:
        snap = snapshot(client, keys, fq("BTCUSDT", ("binance", "bybit")), now=now)
        btc = [e for e in events if e.symbol == "BTCUSDT"]
        assert (snap.totals.total.events, snap.totals.total.usd) == (30_000, sum(e.value_usd for e in btc))
        assert snap.totals.max_usd == max(e.value_usd for e in btc)
        assert len(snap.events) == 200 and snap.latest_complete
        assert list(snap.events["time_ms"]) == sorted((e.time_ms for e in btc), reverse=True)[:200]
        assert snap.members_read <= 500 + 100  # one page of rows, the two partial buckets at the edges
        assert counting.bytes_down < 600_000, counting.bytes_down

        before = counting.bytes_down
        rare = snapshot(client, keys, fq("ETHUSDT", ("binance", "bybit")), now=now)
        assert (rare.totals.total.events, rare.totals.total.usd) == (5, Decimal(30_000))
        assert len(rare.events) == 0 and not rare.latest_complete  # its rows are beyond MAX_SCAN
        assert rare.members_read <= MAX_SCAN + 100
        assert counting.bytes_down - before < 2_000_000
    finally:
        client.close()


def test_the_live_page_on_a_large_window_stays_bounded(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, counting: CountingProxy, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    events = _big_window(now, 30_000)
    redis_liquidations(sync_redis, settings.redis_prefix, events)
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    app_env(monkeypatch, settings, REDIS_URL=counting.url)
    at = open_app("live")
    no_exceptions(at)
    assert metric(at, "Liquidations") == "30,000"
    assert len(frame(at, "Amount")) == 200
    assert "The latest 200 of 30,000" in all_text(at)
    assert counting.bytes_down < 1_000_000, counting.bytes_down  # the window's members weigh > 3 MB


# --- Deadlines: a Redis that hangs ------------------------------------------------------------------


def test_a_hanging_redis_shows_unavailable_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, hanging: TcpProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    url = hanging.url_for(str(settings.redis_url))  # accepts connections, never answers
    app_env(monkeypatch, settings, REDIS_URL=url, LIQ_REDIS_TIMEOUT_S="1")
    started = time.monotonic()
    at = open_app("live", timeout=30)
    elapsed = time.monotonic() - started
    no_exceptions(at)
    errors = " ".join(e.value for e in at.error)
    assert "Redis unavailable" in errors and "Redis is not reachable" in errors, errors
    assert elapsed < 10, elapsed  # a 1 s deadline, never a hung page
    started = time.monotonic()
    assert cli.main(["snapshot"]) == 1
    assert time.monotonic() - started < 6
    assert "Redis is not reachable" in capsys.readouterr().err


# --- Health: what the collector and the streams report, escaped --------------------------------------

HOSTILE = "[Session expired - log in again](http://evil.example/login) ![x](http://evil.example/p.png)\n# big"


def _unescaped_link(text: str) -> bool:
    return re.search(r"(?<!\\)\]\((?:http|//)", text) is not None


def test_collector_and_stream_health_are_shown_as_text(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = now_ms()
    redis_liquidations(sync_redis, settings.redis_prefix, [liq("bybit", "LONG", "1", "60000", now - 5_000)])
    _collector_state(
        sync_redis,
        settings.redis_prefix,
        now,
        database="timeout",
        database_error=f"statement timeout {HOSTILE}",
        quarantined_rows=3,
        quarantine_file="/var/lib/liq/spool/quarantine.ndjson",
        last_quarantine_reason=f"54000 index row size {HOSTILE}",
        spool={"pending_events": 1200, "bytes": 45_000, "state": "full", "error": f"[Errno 28] {HOSTILE}"},
        backpressure=True,
        backpressure_s=12.5,
        invalid_events=4,
        queue=100_000,
        queue_max=100_000,
        behind_s=12.3,
    )
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot("binance", now, drops={"bad_symbol": 2, "bad_number": 1}),
            health_snapshot("bybit", now, connected=False, last_error=f"refused: {HOSTILE}"),
        ],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    alerts = [e.value for e in (*at.error, *at.warning)]
    needles = (
        "TimescaleDB timeout",
        "spool cannot write to disk",
        "Backpressure",
        "3 rows refused",
        "12.3 s or more behind",
    )
    for needle in needles:
        assert any(needle in a for a in alerts), (needle, alerts)
    assert any("Stream bybit disconnected" in a and "Session expired" in a for a in alerts)
    markdown = "\n".join([*alerts, *(str(m.value) for m in at.markdown), *(str(c.value) for c in at.caption)])
    assert "Session expired" in markdown and not _unescaped_link(markdown), markdown
    assert "\n#" not in markdown and "\\[Session expired" in markdown
    storage = frame(at, "Collector")
    assert dict(zip(storage["Collector"], storage["State"], strict=True)) == {
        "TimescaleDB": f"timeout — statement timeout {HOSTILE.replace(chr(10), ' ')}",
        "Spool": f"full, 1,200 events, 45,000 bytes — [Errno 28] {HOSTILE.replace(chr(10), ' ')}",
        "Behind the venues": "12.3 s (100,000 events queued of at most 100,000)",
        "Backpressure": "yes (12.5 s in all)",
        "Quarantined rows": f"3 — last reason: 54000 index row size {HOSTILE.replace(chr(10), ' ')} "
        "(/var/lib/liq/spool/quarantine.ndjson)",
        "Invalid events dropped": "4",
    }
    streams = frame(at, "Drops")
    assert list(streams["Drops"]) == ["3 (bad_symbol: 2, bad_number: 1)", "0"]

    assert cli.main(["snapshot", "--json"]) == 0
    health = json.loads(capsys.readouterr().out)["health"]
    assert health["collector"]["quarantined_rows"] == 3 and health["collector"]["backpressure"] is True
    assert health["collector"]["database_error"] == f"statement timeout {HOSTILE}"
    assert health["streams"]["binance"]["drops"] == {"bad_symbol": 2, "bad_number": 1}
    assert cli.main(["snapshot"]) == 0
    text = capsys.readouterr().out
    assert "TimescaleDB timeout" in text and "quarantined rows 3" in text and "backpressure yes" in text
    assert "BEHIND 12.3 s, queue 100000" in text
    assert "stream binance: connected, reconnects 0, drops 3 (bad_symbol: 2, bad_number: 1)" in text
    assert "stream bybit: DISCONNECTED" in text and "\n# big" not in text  # one line per record


def test_a_healthy_collector_raises_no_alarm(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    _collector_state(
        sync_redis,
        settings.redis_prefix,
        now,
        database="ok",
        database_error="",
        quarantined_rows=0,
        backpressure=False,
        invalid_events=0,
        queue=40,
        queue_max=100_000,
        behind_s=BEHIND_WARN_S - 0.1,  # a moment's queue is no alarm
    )
    redis_health(sync_redis, settings.redis_prefix, [health_snapshot(e, now) for e in ("binance", "bybit")])
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    assert not at.error and not at.warning
    storage = frame(at, "Collector")
    assert list(storage["State"])[:2] == ["ok", "idle, 0 events, 0 bytes"]


def test_two_collectors_are_listed_and_a_venue_counts_who_holds_it(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis
) -> None:
    now = now_ms()
    collectors = [
        {"instance": "host-a:11", "leader": True, "heartbeat_ms": now - 1_000, "database": "ok", "spool": "idle"},
        {"instance": f"host-b:22 {HOSTILE}", "leader": False, "heartbeat_ms": now - 2_000, "database": "timeout"},
    ]
    _collector_state(sync_redis, settings.redis_prefix, now, collectors=collectors)
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot("binance", now, collectors=2, collectors_connected=1),
            health_snapshot("bybit", now, collectors=1, collectors_connected=1),
        ],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    streams = frame(at, "Drops")
    assert list(streams["Connected"]) == ["yes (1 of 2 collectors)", "yes"]
    listed = frame(at, "Role")
    assert list(listed["Role"]) == ["leader", "follower"]
    assert list(listed["TimescaleDB"]) == ["ok", "timeout"]
    assert list(listed["Collector"])[1] == f"host-b:22 {HOSTILE.replace(chr(10), ' ')}"


# --- Issue #10 item 8: instruments, topics and connections per venue ---------------------------------

REFUSAL = "[x](http://evil.example)"


def test_instruments_refusals_and_missing_symbols_per_venue(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Binance on its REST list; Bybit on the stored list, one topic refused with a hostile reason and
    one configured symbol it does not list: the page and the CLI say so, the reason as text."""
    now = now_ms()
    refreshed, stored = now - 600_000, now - 86_400_000
    redis_heartbeat(
        sync_redis,
        settings.redis_prefix,
        now,
        instruments={
            "binance": instrument_state(now, last_refresh_ms=refreshed, skipped={"bad_symbol": 2}),
            "bybit": instrument_state(
                now, source="database", tracked=540, instruments=541, candles=100, stored_ms=stored,
                error=f"timeout {HOSTILE}", unlisted=["BTCUSDT_251226"],
            ),
        },
    )  # fmt: skip
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot("binance", now, connections=3, topics=611, refused_topics={}, instruments=610),
            health_snapshot(
                "bybit", now, connections=2, topics=1080,
                refused_topics={"allLiquidation.BADUSDT": REFUSAL, "kline.1.BADUSDT": f"line\n# {REFUSAL}"},
                instruments=540,
            ),
        ],
    )  # fmt: skip
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    assert not at.error
    warnings = [w.value for w in at.warning]
    stamp = fmt_datetime(stored)
    assert any(f"Instruments bybit: REST unreachable: running on the stored list of {stamp}" in w for w in warnings)
    assert not any("Instruments binance" in w for w in warnings)
    refused = [w for w in warnings if "topics refused" in w]
    assert len(refused) == 1 and refused[0].startswith("Stream bybit: 2 topics refused"), warnings
    assert "allLiquidation\\.BADUSDT \\(\\[x\\]\\(http" in refused[0], refused
    assert "bybit does not list BTCUSDT\\_251226 (configured in LIQ_SYMBOLS): not collected there." in warnings
    markdown = "\n".join([*warnings, *(str(m.value) for m in at.markdown), *(str(c.value) for c in at.caption)])
    assert not _unescaped_link(markdown) and "\\[x\\]" in markdown and "\n#" not in markdown, markdown

    table = frame(at, "Venue")
    rows = {r["Venue"]: r for r in table.to_dict("records")}
    assert list(rows) == ["binance", "bybit"]
    assert {k: rows["binance"][k] for k in ("Tracked", "Listed", "Connections", "Topics", "Refused", "Missing")} == {
        "Tracked": "610", "Listed": "612", "Connections": "3", "Topics": "611", "Refused": "0", "Missing": "0",
    }  # fmt: skip
    assert rows["binance"]["Last refresh (UTC)"] == fmt_datetime(refreshed)
    assert rows["binance"]["List source"] == "rest" and rows["binance"]["Skipped"] == "bad_symbol: 2"
    assert rows["bybit"]["Refused"] == f"2 (allLiquidation.BADUSDT: {REFUSAL}, kline.1.BADUSDT: line # {REFUSAL})"
    assert rows["bybit"]["Missing"] == "1 (BTCUSDT_251226)"
    assert rows["bybit"]["List source"] == f"database — REST unreachable: running on the stored list of {stamp}"
    assert rows["bybit"]["Last refresh (UTC)"] == "never"
    assert (rows["bybit"]["Connections"], rows["bybit"]["Topics"], rows["bybit"]["Candles"]) == ("2", "1,080", "100")

    assert cli.main(["snapshot", "--json"]) == 0
    venues = json.loads(capsys.readouterr().out)["health"]["instruments"]
    assert venues["bybit"]["refused_topics"]["allLiquidation.BADUSDT"] == REFUSAL
    assert (venues["bybit"]["source"], venues["bybit"]["stored"], venues["bybit"]["unlisted"]) == (
        "database", stamp, ["BTCUSDT_251226"],
    )  # fmt: skip
    assert venues["bybit"]["warning"] == f"REST unreachable: running on the stored list of {stamp}"
    assert (venues["binance"]["tracked"], venues["binance"]["connections"], venues["binance"]["topics"]) == (
        610,
        3,
        611,
    )
    assert venues["binance"]["last_refresh"] == fmt_datetime(refreshed) and venues["binance"]["problem"] is None
    assert cli.main(["snapshot"]) == 0
    text = capsys.readouterr().out
    assert f"  WARNING: instruments bybit: REST unreachable: running on the stored list of {stamp}" in text
    assert (
        f"  instruments binance: 610 tracked; 612 listed; candles 610; list from rest, last refresh "
        f"{fmt_datetime(refreshed)}; connections 3; topics 611; refused 0; missing 0; skipped bad_symbol: 2"
    ) in text
    assert f"refused 2 (allLiquidation.BADUSDT: {REFUSAL}, kline.1.BADUSDT: line # {REFUSAL})" in text
    assert "missing 1 (BTCUSDT_251226)" in text and "\n# " not in text


def test_no_instrument_list_is_a_problem(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = now_ms()
    redis_heartbeat(
        sync_redis,
        settings.redis_prefix,
        now,
        instruments={
            "binance": instrument_state(now),
            "bybit": instrument_state(now, source="none", tracked=0, instruments=0, candles=0),
        },
    )
    many = {f"kline_1m.BAD{i:03d}USDT": "Invalid symbol" for i in range(300)}  # bounded however many
    redis_health(
        sync_redis,
        settings.redis_prefix,
        [
            health_snapshot("binance", now, connections=4, topics=900, refused_topics=many),
            health_snapshot("bybit", now),
        ],
    )
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    refused = [w.value for w in at.warning if "topics refused" in w.value]
    assert len(refused) == 1 and refused[0].startswith("Stream binance: 300 topics refused") and len(refused[0]) < 600
    assert refused[0].count("Invalid symbol") == 5 and " and 295 more." in refused[0]
    binance = frame(at, "Venue").iloc[0]
    assert binance["Refused"].startswith("300 (kline_1m.BAD000USDT: Invalid symbol, ")
    assert binance["Refused"].count("Invalid symbol") == 10 and binance["Refused"].endswith(" and 290 more)")
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith("Instruments bybit: no instrument list: collecting nothing for ALL.")
    assert "connection refused" in errors[0] and "Retrying in 40 s" in errors[0]
    rows = {r["Venue"]: r for r in frame(at, "Venue").to_dict("records")}
    assert rows["bybit"]["List source"] == "none — no instrument list: collecting nothing for ALL"
    assert (rows["bybit"]["Tracked"], rows["bybit"]["Connections"], rows["bybit"]["Refused"]) == ("0", "", "")

    assert cli.main(["snapshot", "--json"]) == 0
    venues = json.loads(capsys.readouterr().out)["health"]["instruments"]
    assert venues["bybit"]["problem"] == "no instrument list: collecting nothing for ALL"
    assert "connections" not in venues["bybit"]  # the stream did not report topic counts
    assert cli.main(["snapshot"]) == 0
    text = capsys.readouterr().out
    assert "  PROBLEM: instruments bybit: no instrument list: collecting nothing for ALL (last REST error:" in text


def test_an_older_collector_shows_no_instrument_section(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sync_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = now_ms()
    redis_heartbeat(sync_redis, settings.redis_prefix, now)
    redis_health(sync_redis, settings.redis_prefix, [health_snapshot(e, now) for e in ("binance", "bybit")])
    app_env(monkeypatch, settings)
    at = open_app("live")
    no_exceptions(at)
    assert not at.error and not at.warning
    assert not [d for d in at.dataframe if "Venue" in d.value.columns]
    assert "Instruments" not in [s.value for s in at.subheader]
    assert cli.main(["snapshot", "--json"]) == 0
    assert "instruments" not in json.loads(capsys.readouterr().out)["health"]
    assert cli.main(["snapshot"]) == 0
    assert "instruments " not in capsys.readouterr().out
