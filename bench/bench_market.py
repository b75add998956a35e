"""Whole-market benchmark (issues 10 and 11): the real collector process against the five fake venues
listing the whole market, with real Redis and TimescaleDB.

    PYTHONPATH=. .venv/bin/python -m bench.bench_market [--binance 600 --bybit 550 --okx 300 --gate 250
        --bitget 250 --burst-rate 5000 --burst-s 60 --quiet-s 30 --shares binance=0.3,bybit=0.2,...]
        [--quick] [--profile]

Set-up: a fresh database on the server at DATABASE_URL (migrated, dropped afterwards) and a private
Redis prefix at REDIS_URL (deleted afterwards). This process runs, per venue of
`bench.market_feed.VENUES`, the fake instrument REST server (`--binance`, `--bybit`, `--okx`,
`--gate`, `--bitget` instruments; 0 leaves the venue out, and out of LIQ_EXCHANGES) and the fake
WebSocket server, then starts `python -m collector` as a subprocess with LIQ_SYMBOLS=ALL and the
fakes' URLs, as supervisord would. OKX and Gate list contracts of contract value 1 (so the stored
base quantity is the contracts pushed), Bitget writes quote amounts (marker x price).

Pushing (one asyncio task, 10 ms ticks; `Router` writes a tick's frames to each connection in
one write): from the start, kline frames as the venues push them, Binance every 250 ms per symbol
(`--binance-kline-s`), Bybit every `--bybit-kline-s` (its docs: 1-60 s, about 1 s when trading),
OKX, Gate and Bitget every `--okx-kline-s`, `--gate-kline-s`, `--bitget-kline-s` (1 s).
Phases once every stream is subscribed: settle (`--settle-s`), quiet (`--quiet-s`, candles only),
burst (`--burst-rate` liquidations/s for `--burst-s`, split over the venues by `--shares`, even
shares by default: Binance forceOrder frames on `!forceOrder@arr` (one a frame), Bybit
allLiquidation frames of `--bybit-items` items, OKX `liquidation-orders` (SWAP) frames of
`--okx-items` details, Gate `futures.public_liquidates` (`!all`) updates of `--gate-items` items,
Bitget `liquidation` (usdt-futures) pushes of `--bitget-items` items), drain (until every pushed
liquidation is stored, or no progress for 20 s). Every liquidation's stored base quantity is its
unique sequence number (`12.345` = event 12345); OKX and Bitget (and Gate) are sampled venues, but
every pushed item is a distinct liquidation, so each must be stored exactly once.

Figures and their method:
1. subscribed: from `Popen` to the moment every expected stream/topic (Binance `!forceOrder@arr`
   and `<s>@kline_1m` per symbol, Bybit `allLiquidation.<S>` and `kline.1.<S>`, OKX
   `liquidation-orders:SWAP`/`:FUTURES` and `candle1m:<instId>`, Gate `futures.public_liquidates.!all`
   and `futures.candlesticks.1m.<contract>`, Bitget `liquidation.usdt-futures`/`.usdc-futures` and
   `kline.usdt-futures.<SYMBOL>`) is held by some open connection of the fakes (their
   `Peer.streams`), polled every 50 ms. Includes the interpreter start, migrations check,
   instrument discovery.
2. events/s: liquidations pushed (items written to a connection) over the burst's wall time;
   rows in `liquidations` (count(*), every 1 s) at the end of the burst and when all are stored;
   stored == pushed must hold (printed both; any difference is loss or duplication), and per
   venue: rows and sum(quantity) against the items and markers pushed (a wrong unit rule shows as
   a sum that differs).
3. frame-to-Redis: every `--probe-every`-th liquidation is a probe whose exchange time is a
   unique millisecond in a range no other event uses (2 minutes in the past; written in each
   venue's exchange time field: Binance/Bybit `T`, OKX `ts`, Gate `time_ms`, Bitget `ts`); the live view's
   ZSET `live:liqs` is scored by exchange time, so a poll of that score range every
   `--poll-ms` tells which probes are in Redis. Latency = first poll that sees it - the moment its
   frame was written to the socket. An upper bound by up to one poll interval (+ this loop's own
   delay; the poll gaps are printed). Split in two by the stored row's `received_at` (the
   collector's clock, same machine): written -> received, received -> visible in Redis.
4. RSS: /proc/<pid>/status of the collector: VmRSS before the burst, VmHWM (peak of the whole
   run) after the drain, VmRSS after the drain.
5. CPU between bursts: utime+stime (/proc/<pid>/stat) over the quiet phase, % of one core and per
   frame received; its run delay (/proc/<pid>/schedstat: runnable, no CPU free); the same CPU for
   this process (the fakes), the Redis server (shared with whatever else uses it) and the whole
   machine (/proc/stat), to show contention. During the burst, the collector's CPU per
   liquidation (burst start -> last row stored, minus the quiet phase's candle rate).
   Database side (quiet phase, and burst + drain): rows written per table and per second
   (pg_stat_user_tables, chunks summed per hypertable) and the CPU of the PostgreSQL backends
   serving the collector (pg_stat_activity of the bench database -> /proc/<pid>/stat).
6. candles: rows per candle minute; hypertable_size('candles') / rows as the table is (with the
   dead versions the 250 ms upserts leave) and after VACUUM FULL (what a closed minute costs
   once vacuum has run), -> a day of 1,950 symbols (the five venues' default counts) x 1,440
   minutes; the same for candles_1h.
   Pushing stops before these are read.

This process's figures (CPU, poll gaps, late ticks, socket write buffers) show whether the fakes
kept up: a fake that cannot push at the asked rate shows as pushed/s below the target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis
import redis.asyncio as aredis

from bench.bench_pipeline import create_bench_database, drop_bench_database
from bench.market_feed import VENUES, LiqItem, VenueFeed
from common.config import load_settings
from common.live_view import Keys

ROOT = Path(__file__).resolve().parents[1]
TICK_S = 0.01
CLK_TCK = os.sysconf("SC_CLK_TCK")
DAY_SYMBOLS = 1_950  # the whole market of the five venues: 600 + 550 + 300 + 250 + 250 linear contracts
DEFAULT_COUNTS = {"binance": 600, "bybit": 550, "okx": 300, "gate": 250, "bitget": 250}
DEFAULT_KLINE_S = {"binance": 0.25, "bybit": 1.0, "okx": 1.0, "gate": 1.0, "bitget": 1.0}
DEFAULT_ITEMS = {"binance": 1, "bybit": 5, "okx": 1, "gate": 1, "bitget": 5}
QUICK_COUNTS = {"binance": 40, "bybit": 30, "okx": 30, "gate": 25, "bitget": 25}
PER_VENUE = "SELECT exchange, count(*), coalesce(sum(quantity), 0) FROM liquidations GROUP BY 1"
PROBE_AGE_MS = 120_000  # probes' exchange time: this far in the past, one ms each
MAX_RUNS = 200  # ranges of pending probes read per poll
DRAIN_STALL_S = 20.0
DRAIN_MAX_S = 180.0


# -- /proc ---------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM... of a process, in kB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Vm"):
                name, _, rest = line.partition(":")
                out[name] = int(rest.split()[0])
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def run_delay_s(pid: int) -> float:
    """Time the process's main thread spent runnable but waiting for a CPU (/proc/<pid>/schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class CpuMark:
    at: float
    collector: float
    own: float
    redis: float
    busy: float
    total: float
    waited: float  # the collector's run delay

    @classmethod
    def now(cls, pid: int, redis_pid: int) -> CpuMark:
        t = os.times()
        busy, total = machine_cpu()
        redis_s = 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            redis_s = proc_cpu_s(redis_pid)
        return cls(time.perf_counter(), proc_cpu_s(pid), t.user + t.system, redis_s, busy, total, run_delay_s(pid))

    def waited_pct(self, before: CpuMark) -> float:
        """% of the wall time the collector was ready to run but had no CPU (the machine's contention)."""
        return 100 * (self.waited - before.waited) / (self.at - before.at)

    def since(self, before: CpuMark) -> tuple[float, float, float, float]:
        """(collector, this process, the Redis server: % of one core; machine busy % of all cores)."""
        wall = self.at - before.at
        machine = (self.busy - before.busy) / max(1.0, self.total - before.total)
        return (
            100 * (self.collector - before.collector) / wall,
            100 * (self.own - before.own) / wall,
            100 * (self.redis - before.redis) / wall,
            100 * machine,
        )


# -- TimescaleDB ---------------------------------------------------------------------------------


class Db:
    """One autocommit connection, used from worker threads one query at a time."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.lock = threading.Lock()

    def one(self, query: str, *params: Any) -> Any:
        with self.lock:
            row = self.conn.execute(query.encode(), params or None).fetchone()
        return None if row is None else row[0] if len(row) == 1 else row

    def run(self, query: str) -> None:
        with self.lock:
            self.conn.execute(query.encode())

    def all(self, query: str) -> list[Any]:
        with self.lock:
            return list(self.conn.execute(query.encode()).fetchall())

    def all_params(self, query: str, *params: Any) -> list[Any]:
        with self.lock:
            return list(self.conn.execute(query.encode(), params).fetchall())

    def close(self) -> None:
        self.conn.close()


COUNT_LIQUIDATIONS = "SELECT count(*) FROM liquidations"
PROBE_RECEIVED = """
SELECT (extract(epoch FROM time) * 1000)::bigint, extract(epoch FROM received_at) * 1000
FROM liquidations WHERE time >= to_timestamp(%s / 1000.0) AND time < to_timestamp(%s / 1000.0)
"""
TABLE_WRITES = """
SELECT coalesce(c.hypertable_name, s.relname), sum(s.n_tup_ins)::bigint, sum(s.n_tup_upd)::bigint
FROM pg_stat_user_tables AS s
LEFT JOIN timescaledb_information.chunks AS c ON s.schemaname = c.chunk_schema AND s.relname = c.chunk_name
WHERE s.schemaname IN ('public', '_timescaledb_internal')
GROUP BY 1
"""
BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
CANDLE_SIZE = "SELECT count(*), hypertable_size('candles') FROM candles"
CANDLES_PER_MINUTE = "SELECT time, count(*) FROM candles GROUP BY time ORDER BY time"


@dataclass
class DbMark:
    """Row writes per table (pg_stat_user_tables, chunks summed per hypertable) and the CPU time of
    the PostgreSQL backends serving the collector (its connections to the bench database)."""

    at: float
    writes: dict[str, tuple[int, int]]
    backend_cpu: dict[int, float]

    @classmethod
    def now(cls, db: Db) -> DbMark:
        writes = {str(r[0]): (int(r[1]), int(r[2])) for r in db.all(TABLE_WRITES)}
        cpu: dict[int, float] = {}
        for (pid,) in db.all(BACKENDS):
            with contextlib.suppress(OSError, ValueError, IndexError):
                cpu[int(pid)] = proc_cpu_s(int(pid))
        return cls(time.perf_counter(), writes, cpu)

    def since(self, before: DbMark) -> str:
        wall = self.at - before.at
        cpu = sum(t - before.backend_cpu.get(pid, 0.0) for pid, t in self.backend_cpu.items())
        parts = []
        for name, (ins, upd) in sorted(self.writes.items()):
            i0, u0 = before.writes.get(name, (0, 0))
            if ins - i0 or upd - u0:
                parts.append(f"{name} {(ins - i0) / wall:,.0f} ins + {(upd - u0) / wall:,.0f} upd")
        return (
            f"PostgreSQL backends of the collector {100 * cpu / wall:.0f} % of one core "
            f"({len(self.backend_cpu)} connections); rows/s: {'; '.join(parts) or 'none'}"
        )


# -- pushing -------------------------------------------------------------------------------------


@dataclass
class Burst:
    feeds: list[VenueFeed]
    rate: float
    seconds: float
    shares: list[float]
    probe_every: int
    probe_base_ms: int
    seq: int = 0
    started: float | None = None
    ended: float | None = None
    generated: list[int] = field(default_factory=list)
    rr: list[int] = field(default_factory=list)
    probes: dict[int, float] = field(default_factory=dict)  # probe score -> time written (perf_counter)
    probes_epoch_ms: dict[int, float] = field(default_factory=dict)  # the same as wall-clock ms
    new_probes: list[int] = field(default_factory=list)
    _tick_probes: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.generated = [0] * len(self.feeds)
        self.rr = [0] * len(self.feeds)

    def step(self, now: float, now_ms: int) -> None:
        if self.started is None:
            self.started = now
        elapsed = min(now - self.started, self.seconds)
        target = int(self.rate * elapsed)
        bounds = [sum(self.shares[: v + 1]) for v in range(len(self.feeds))]
        bounds[-1] = 1.0
        for v, feed in enumerate(self.feeds):
            mine = int(target * bounds[v]) - (int(target * bounds[v - 1]) if v else 0)
            todo = mine - self.generated[v]
            while todo > 0:
                k = min(feed.items_per_frame, todo)
                symbol = feed.symbols[self.rr[v] % len(feed.symbols)]
                self.rr[v] += 1
                items, probes = [], []
                for _ in range(k):
                    self.seq += 1
                    if self.seq % self.probe_every == 0:
                        score = self.probe_base_ms + self.seq // self.probe_every
                        probes.append(score)
                        items.append(LiqItem(symbol, self.seq, score))
                    else:
                        items.append(LiqItem(symbol, self.seq, now_ms))
                if feed.push_liquidations(symbol, items, now_ms):
                    self._tick_probes += probes
                self.generated[v] += k
                todo -= k
        if elapsed >= self.seconds and self.ended is None:
            self.ended = now
            self.done.set()

    def stamp(self, written: float, written_epoch_ms: float) -> None:
        for score in self._tick_probes:
            self.probes[score] = written
            self.probes_epoch_ms[score] = written_epoch_ms
        self.new_probes += self._tick_probes
        self._tick_probes = []


class Pusher:
    """Klines all along (each venue at its cadence, symbols round robin) and the burst when set."""

    def __init__(self, feeds: list[VenueFeed]) -> None:
        self.feeds = feeds
        self.burst: Burst | None = None
        self._carry = [0.0] * len(feeds)
        self._next = [0] * len(feeds)
        self.ticks = 0
        self.late_ticks = 0  # ticks that started more than one tick late
        self.max_late_s = 0.0
        self.busy_s = 0.0  # time spent building and writing frames

    async def run(self, stop: asyncio.Event) -> None:
        start = last = time.perf_counter()
        n = 0
        while not stop.is_set():
            now = time.perf_counter()
            dt, last = now - last, now
            now_ms = time.time_ns() // 1_000_000
            for feed in self.feeds:
                feed.router.refresh(now)
            for v, feed in enumerate(self.feeds):
                due = len(feed.symbols) * dt / feed.kline_period_s + self._carry[v]
                count = int(due)
                self._carry[v] = due - count
                for _ in range(count):
                    i = self._next[v]
                    self._next[v] += 1
                    feed.push_kline(feed.symbols[i % len(feed.symbols)], now_ms, i // len(feed.symbols))
            burst = self.burst
            if burst is not None and burst.ended is None:
                burst.step(now, now_ms)
            for feed in self.feeds:
                feed.router.flush()
            written = time.perf_counter()
            if burst is not None:
                burst.stamp(written, time.time_ns() / 1e6)
            self.busy_s += written - now
            self.ticks += 1
            n += 1
            delay = start + n * TICK_S - time.perf_counter()
            if delay < -TICK_S:
                self.late_ticks += 1
                self.max_late_s = max(self.max_late_s, -delay)
                if delay < -0.5:  # far behind: do not try to catch up tick by tick
                    start, n = time.perf_counter(), 0
            await asyncio.sleep(max(0.0, delay))


# -- measuring -----------------------------------------------------------------------------------


class ProbePoller:
    """Polls the live ZSET for the probes' score range; records when each first shows up."""

    def __init__(self, client: aredis.Redis, key: str, burst: Burst, interval_s: float) -> None:
        self.client = client
        self.key = key
        self.burst = burst
        self.interval_s = interval_s
        self.pending: dict[int, float] = {}
        self.latencies_ms: dict[int, float] = {}  # probe score -> ms from written to seen in Redis
        self.lost = 0
        self.polls = 0
        self.poll_gaps: list[float] = []

    def runs(self) -> list[tuple[int, int]]:
        """The pending scores as ranges of consecutive values (a poll reads only pending members)."""
        out: list[tuple[int, int]] = []
        for score in sorted(self.pending):
            if out and score == out[-1][1] + 1:
                out[-1] = (out[-1][0], score)
            else:
                out.append((score, score))
        return out[:MAX_RUNS]

    async def poll(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for lo, hi in self.runs():
                pipe.zrangebyscore(self.key, lo, hi, withscores=True)
            results = await pipe.execute()
        seen = time.perf_counter()
        for found in results:
            for _member, value in found:
                written = self.pending.pop(int(value), None)
                if written is not None:
                    self.latencies_ms[int(value)] = (seen - written) * 1000

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` (set once every pushed liquidation is stored); what is pending then was never seen."""
        last = time.perf_counter()
        while True:
            if self.burst.new_probes:
                for score in self.burst.new_probes:
                    self.pending[score] = self.burst.probes[score]
                self.burst.new_probes = []
            stopping = stop.is_set()
            if self.pending:
                await self.poll()
                now = time.perf_counter()
                self.polls += 1
                self.poll_gaps.append(now - last)
                last = now
            if stopping:
                self.lost = len(self.pending)
                return
            await asyncio.sleep(self.interval_s)


@dataclass
class Sample:
    at: float
    pushed: int
    stored: int
    state: dict[str, Any]


class Sampler:
    """Every second: rows stored, the collector's published state; RSS every 0.5 s."""

    def __init__(self, db: Db, client: redis.Redis, keys: Keys, pid: int, feeds: list[VenueFeed]) -> None:
        self.db = db
        self.client = client
        self.keys = keys
        self.pid = pid
        self.feeds = feeds
        self.samples: list[Sample] = []
        self.max_rss_kb = 0

    def state(self) -> dict[str, Any]:
        raw = self.client.hget(self.keys.collector, "state")
        return dict(json.loads(raw)) if raw else {}

    def health(self) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self.keys.health)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            self.max_rss_kb = max(self.max_rss_kb, proc_status(self.pid).get("VmRSS", 0))
            if n % 2 == 0:
                stored = await asyncio.to_thread(self.db.one, COUNT_LIQUIDATIONS)
                state = await asyncio.to_thread(self.state)
                pushed = sum(f.liquidations for f in self.feeds)
                self.samples.append(Sample(time.perf_counter(), pushed, int(stored), state))
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


def burst_shares(names: list[str], spec: str) -> list[float]:
    """Each venue's share of the burst, in `names`' order. `spec` is "binance=0.3,okx=0.2,...": the
    venues it names get theirs, the others present split what is left equally; the whole is then
    scaled to 1. An empty spec: even shares."""
    given: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in names:
            raise SystemExit(f"--shares: {part!r} is not <venue present>=<share> (venues: {', '.join(names)})")
        given[name.strip()] = float(value)
    if any(v < 0 for v in given.values()):
        raise SystemExit("--shares: a share is negative")
    others = [n for n in names if n not in given]
    left = max(0.0, 1.0 - sum(given.values()))
    raw = [given[n] if n in given else left / len(others) for n in names]
    total = sum(raw)
    if total <= 0:
        raise SystemExit("--shares: the shares sum to 0")
    return [r / total for r in raw]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def start_collector(env: dict[str, str], log: Path, profile: Path | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "collector"]
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "collector"]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the run -------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, database_url: str, redis_url: str, prefix: str, tmp: Path) -> None:
    feeds = [
        VENUES[name](
            getattr(args, name),
            kline_period_s=getattr(args, f"{name}_kline_s"),
            items_per_frame=1 if name == "binance" else getattr(args, f"{name}_items"),
        )
        for name in VENUES
        if getattr(args, name) > 0
    ]
    if not feeds:
        raise SystemExit("no venue: every instrument count is 0")
    shares = burst_shares([f.name for f in feeds], args.shares)
    n_symbols = sum(len(f.symbols) for f in feeds)
    print(
        f"whole market: {', '.join(f'{f.name} {len(f.symbols)}' for f in feeds)} instruments "
        f"({n_symbols}); klines every {', '.join(f'{f.name} {f.kline_period_s:g} s' for f in feeds)}; "
        f"burst {args.burst_rate:,.0f}/s for {args.burst_s:g} s, shares "
        f"{', '.join(f'{f.name} {s:.2f}' for f, s in zip(feeds, shares, strict=True))}, items a frame "
        f"{', '.join(f'{f.name} {f.items_per_frame}' for f in feeds)}; machine: {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    for feed in feeds:
        await feed.start()
    keys = Keys(prefix)
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LIQ_REDIS_PREFIX": prefix,
        "LIQ_SPOOL_DIR": str(tmp / "spool"),
        "LIQ_NONLIVE_SOURCE": "bench",
        "LIQ_SYMBOLS": "ALL",
        "LIQ_EXCHANGES": ",".join(f.name for f in feeds),
        "LIQ_LOG_LEVEL": "INFO",
    }
    for feed in feeds:
        env.update(feed.env())
    log = tmp / "collector.log"
    profile = tmp / "collector.prof" if args.profile else None
    db = Db(database_url)
    sync_redis = redis.Redis.from_url(redis_url)
    async_redis = aredis.Redis.from_url(redis_url)
    stop_push = asyncio.Event()
    pusher = Pusher(feeds)
    push_task = asyncio.create_task(pusher.run(stop_push))
    redis_pid = int(sync_redis.info("server")["process_id"])
    t0 = time.perf_counter()
    proc = start_collector(env, log, profile)
    stop_sampler = asyncio.Event()
    sampler = Sampler(db, sync_redis, keys, proc.pid, feeds)
    sample_task: asyncio.Task[None] | None = None
    try:
        # 1. Every stream subscribed.
        subscribed_at: dict[str, float] = {}
        while len(subscribed_at) < len(feeds):
            if proc.poll() is not None:
                raise RuntimeError(f"the collector exited with {proc.returncode}:\n{tail(log)}")
            if time.perf_counter() - t0 > 120:
                missing = {f.name: f.missing() for f in feeds}
                raise RuntimeError(f"not subscribed after 120 s (missing {missing}):\n{tail(log)}")
            for feed in feeds:
                if feed.name not in subscribed_at and feed.missing() == 0:
                    subscribed_at[feed.name] = time.perf_counter() - t0
            await asyncio.sleep(0.05)
        total = max(subscribed_at.values())
        per_venue = ", ".join(f"{name} {s:.1f} s" for name, s in subscribed_at.items())
        print(
            f"(1) start -> every stream subscribed: {total:.1f} s ({per_venue}; "
            f"{sum(len(f.expected_streams()) for f in feeds):,} streams)  [target <= 30 s]",
            flush=True,
        )
        for feed in feeds:
            extra = feed.unexpected()
            if extra:
                print(f"    {feed.name} also holds {len(extra)} streams not expected: {sorted(extra)[:5]}", flush=True)
        sample_task = asyncio.create_task(sampler.run(stop_sampler))
        await asyncio.sleep(args.settle_s)

        # 5/6. Quiet phase: candles only.
        candle_mark = await asyncio.to_thread(db.one, CANDLE_SIZE)
        frames0 = [f.kline_frames for f in feeds]
        health0 = await asyncio.to_thread(sampler.health)
        dbm0 = await asyncio.to_thread(DbMark.now, db)
        cpu0 = CpuMark.now(proc.pid, redis_pid)
        await asyncio.sleep(args.quiet_s)
        cpu1 = CpuMark.now(proc.pid, redis_pid)
        dbm1 = await asyncio.to_thread(DbMark.now, db)
        health1 = await asyncio.to_thread(sampler.health)
        quiet_wall = cpu1.at - cpu0.at
        frames = sum(f.kline_frames for f in feeds) - sum(frames0)
        received = sum(
            int(health1.get(f.name, {}).get("messages", 0)) - int(health0.get(f.name, {}).get("messages", 0))
            for f in feeds
        )
        collector_cpu, own_cpu, redis_cpu, machine = cpu1.since(cpu0)
        rss_before = proc_status(proc.pid).get("VmRSS", 0)
        print(
            f"(5) quiet phase ({quiet_wall:.0f} s, candles only): kline frames pushed {frames / quiet_wall:,.0f}/s, "
            f"received by the collector {received / quiet_wall:,.0f}/s; collector CPU {collector_cpu:.0f} % of one "
            f"core = {10_000 * collector_cpu / max(1.0, received / quiet_wall):.0f} us per frame (+ "
            f"{cpu1.waited_pct(cpu0):.0f} % of the time runnable but waiting for a CPU); this process (fakes) "
            f"{own_cpu:.0f} %; Redis server {redis_cpu:.0f} % (shared); machine busy {machine:.0f} % of "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        kline_cpu_per_s = (cpu1.collector - cpu0.collector) / quiet_wall
        print(f"    database: {dbm1.since(dbm0)}", flush=True)

        # 2/3/4. The burst.
        burst = Burst(
            feeds,
            args.burst_rate,
            args.burst_s,
            shares,
            args.probe_every,
            time.time_ns() // 1_000_000 - PROBE_AGE_MS,
        )
        poller = ProbePoller(async_redis, keys.liqs, burst, args.poll_ms / 1000)
        stop_poll = asyncio.Event()
        poll_task = asyncio.create_task(poller.run(stop_poll))
        liq_frames0 = [f.liquidation_frames for f in feeds]
        per_venue0 = {str(r[0]): (int(r[1]), r[2]) for r in await asyncio.to_thread(db.all, PER_VENUE)}
        kline_frames0 = [f.kline_frames for f in feeds]
        busy0, late0 = pusher.busy_s, pusher.late_ticks
        cpu_b0 = CpuMark.now(proc.pid, redis_pid)
        dbm_b0 = await asyncio.to_thread(DbMark.now, db)
        stored0 = int(await asyncio.to_thread(db.one, COUNT_LIQUIDATIONS))
        pusher.burst = burst
        await burst.done.wait()
        assert burst.started is not None and burst.ended is not None
        cpu_b1 = CpuMark.now(proc.pid, redis_pid)
        pushed_by_venue = [f.liquidations for f in feeds]
        burst_wall = burst.ended - burst.started
        pushed = sum(f.liquidations for f in feeds)
        stored_at_end = int(await asyncio.to_thread(db.one, COUNT_LIQUIDATIONS)) - stored0
        liq_frames = sum(f.liquidation_frames for f in feeds) - sum(liq_frames0)
        kline_frames = sum(f.kline_frames for f in feeds) - sum(kline_frames0)
        b_collector, b_own, b_redis, b_machine = cpu_b1.since(cpu_b0)

        # Drain: until every pushed liquidation is stored (or no progress).
        stored, last_change, stored_all_at = stored_at_end, time.perf_counter(), None
        drain_start = time.perf_counter()
        while time.perf_counter() - drain_start < DRAIN_MAX_S:
            now_stored = int(await asyncio.to_thread(db.one, COUNT_LIQUIDATIONS)) - stored0
            now = time.perf_counter()
            if now_stored != stored:
                stored, last_change = now_stored, now
            if stored >= pushed:
                stored_all_at = now
                break
            if now - last_change > DRAIN_STALL_S:
                break
            await asyncio.sleep(0.25)
        dbm_b1 = await asyncio.to_thread(DbMark.now, db)
        cpu_d1 = CpuMark.now(proc.pid, redis_pid)
        stop_poll.set()
        await poll_task

        print(
            f"(2) burst: {pushed:,} liquidations pushed in {burst_wall:.1f} s = {pushed / burst_wall:,.0f}/s "
            f"(target {args.burst_rate:,.0f}/s; {liq_frames / burst_wall:,.0f} liquidation frames/s + "
            f"{kline_frames / burst_wall:,.0f} kline frames/s = {(liq_frames + kline_frames) / burst_wall:,.0f} "
            f"frames/s written by the fakes)",
            flush=True,
        )
        print(
            f"    stored by the end of the burst: {stored_at_end:,} ({stored_at_end / burst_wall:,.0f}/s); "
            f"stored in all: {stored:,} of {pushed:,} pushed -> "
            + ("stored == pushed" if stored == pushed else f"MISMATCH: {stored - pushed:+,}"),
            flush=True,
        )
        venue_rows = {str(r[0]): (int(r[1]), r[2]) for r in await asyncio.to_thread(db.all, PER_VENUE)}
        health_d = await asyncio.to_thread(sampler.health)
        for feed, n_pushed in zip(feeds, pushed_by_venue, strict=True):
            n0, q0 = per_venue0.get(feed.name, (0, 0))
            n_rows, qty = venue_rows.get(feed.name, (0, 0))
            n_rows -= n0
            qty_sum, want = qty - q0, Decimal(feed.marker_sum) / 1000
            verdict = "ok" if n_rows == n_pushed and qty_sum == want else "MISMATCH"
            reconnects = int(health_d.get(feed.name, {}).get("reconnects", 0)) - int(
                health1.get(feed.name, {}).get("reconnects", 0)
            )
            print(
                f"    {feed.name:>7}: pushed {n_pushed:>8,} in {feed.liquidation_frames:,} frames, stored "
                f"{n_rows:>8,} ({n_rows - n_pushed:+,}); sum(quantity) {qty_sum} vs markers {want} -> {verdict}"
                + (
                    f" ({reconnects} reconnects since the quiet phase: what was in flight on a dropped "
                    "connection is lost, the fakes do not replay)"
                    if reconnects
                    else ""
                ),
                flush=True,
            )
        liq_cpu = (cpu_d1.collector - cpu_b0.collector) - kline_cpu_per_s * (cpu_d1.at - cpu_b0.at)
        print(
            f"    collector CPU per liquidation: {1e6 * liq_cpu / max(1, pushed):.0f} us (its CPU from the burst's "
            f"start to the last row stored, minus the quiet phase's candle rate) -> one core would carry about "
            f"{max(0.0, 1 - kline_cpu_per_s) * pushed / max(1e-9, liq_cpu):,.0f} liquidations/s beside the candles",
            flush=True,
        )
        if stored_all_at is not None:
            e2e = pushed / (stored_all_at - burst.started)
            print(
                f"    end to end: {e2e:,.0f} events/s sustained (first push -> last row stored, "
                f"{stored_all_at - burst.ended:.1f} s after the last push)",
                flush=True,
            )
        lat = list(poller.latencies_ms.values())
        gaps = [g * 1000 for g in poller.poll_gaps] or [0.0]
        if lat:
            print(
                f"(3) frame-to-Redis (probes, 1 in {args.probe_every}): p50 {statistics.median(lat):.1f} ms, "
                f"p99 {percentile(lat, 0.99):.1f} ms, max {max(lat):.1f} ms ({len(lat):,} probes, "
                f"{poller.lost} never seen)  [target p99 <= 100 ms]",
                flush=True,
            )
            print(
                f"    poll gaps (the measurement's resolution): mean {statistics.mean(gaps):.1f} ms, "
                f"p99 {percentile(gaps, 0.99):.1f} ms, max {max(gaps):.1f} ms",
                flush=True,
            )
            probe_rows = await asyncio.to_thread(
                db.all_params,
                PROBE_RECEIVED,
                burst.probe_base_ms,
                burst.probe_base_ms + PROBE_AGE_MS // 2,
            )
            to_receive, after_receive = [], []
            for score, received_ms in probe_rows:
                written_ms = burst.probes_epoch_ms.get(int(score))
                redis_ms = poller.latencies_ms.get(int(score))
                if written_ms is not None and redis_ms is not None:
                    to_receive.append(float(received_ms) - written_ms)
                    after_receive.append(redis_ms - (float(received_ms) - written_ms))
            if to_receive:
                print(
                    f"    split by the row's received_at (collector clock, ms): written -> received "
                    f"p50 {statistics.median(to_receive):.1f} / p99 {percentile(to_receive, 0.99):.1f} ms; "
                    f"received -> seen in Redis p50 {statistics.median(after_receive):.1f} / "
                    f"p99 {percentile(after_receive, 0.99):.1f} ms",
                    flush=True,
                )
        else:
            print(f"(3) frame-to-Redis: no probe seen ({poller.lost} lost)", flush=True)
        await asyncio.sleep(2.0)
        status = proc_status(proc.pid)
        print(
            f"(4) collector RSS: {rss_before / 1024:.0f} MB before the burst, peak {status.get('VmHWM', 0) / 1024:.0f} MB "
            f"(VmHWM), {status.get('VmRSS', 0) / 1024:.0f} MB after the drain  [target <= 400 MB]",
            flush=True,
        )
        print(
            f"    during the burst: collector CPU {b_collector:.0f} % of one core (+ {cpu_b1.waited_pct(cpu_b0):.0f} % "
            f"of the time waiting for a CPU); this process (fakes + probes) "
            f"{b_own:.0f} %; Redis server {b_redis:.0f} % (shared); machine busy {b_machine:.0f} %; pusher busy {pusher.busy_s - busy0:.1f} s of "
            f"{burst_wall:.0f} s, ticks late by > {TICK_S * 1000:.0f} ms: {pusher.late_ticks - late0} "
            f"(worst {pusher.max_late_s * 1000:.0f} ms); largest socket write buffer (collector reading behind): "
            + ", ".join(f"{f.name} {f.router.max_buffer / 1024:.0f} kB" for f in feeds),
            flush=True,
        )
        print(f"    database, burst + drain: {dbm_b1.since(dbm_b0)}", flush=True)
        timeline = [s for s in sampler.samples if s.at >= burst.started - 1]
        if timeline:
            print(
                "    timeline (s from burst start: pushed / stored / collector queue, inbox (the most in the window) / "
                "p99 ms of the probes written in the window / the most behind_s the collector published in it):"
            )
            step = max(1, len(timeline) // 12)
            since = burst.started - 1
            # UTC minute turns in the burst: every closed candle is written then, every cascade re-checked
            wall0 = time.time() - (time.perf_counter() - burst.started)
            turns = [m - wall0 for m in range(int(wall0 // 60 + 1) * 60, int(wall0 + burst.seconds) + 1, 60)]
            print("      (UTC minute turns at " + ", ".join(f"+{t:.1f} s" for t in turns) + ")")
            for i in range(step - 1, len(timeline), step):
                s = timeline[i]
                window = timeline[max(0, i - step + 1) : i + 1]
                inbox = max(int(w.state.get("inbox", 0)) for w in window)
                queue = max(int(w.state.get("queue", 0)) for w in window)
                behind = max(float(w.state.get("behind_s", 0.0)) for w in window)
                lats = [ms for score, ms in poller.latencies_ms.items() if since < burst.probes.get(score, 0.0) <= s.at]
                since = s.at
                p99 = f"{percentile(lats, 0.99):,.0f}" if lats else "-"
                print(
                    f"      {s.at - burst.started:6.1f}: {s.pushed:>9,} / {s.stored - stored0:>9,} / "
                    f"{queue:>7,} {inbox:>7,} / {p99:>7} / {behind:5.1f} s"
                )
        health = await asyncio.to_thread(sampler.health)
        for name, h in health.items():
            print(
                f"    health {name}: messages {h.get('messages'):,}, events {h.get('events'):,}, "
                f"connections {h.get('connections')}, topics {h.get('topics')}, reconnects {h.get('reconnects')}, "
                f"drops {h.get('drops')}"
            )
        state = await asyncio.to_thread(sampler.state)
        print(
            f"    collector state: database {state.get('database')}, spool {state.get('spool', {}).get('state')}, "
            f"backpressure_s {state.get('backpressure_s')}, quarantined {state.get('quarantined_rows')}, "
            f"invalid {state.get('invalid_events')}"
        )

        # 6. Candles on disk: pushing stops first, so that the sizes below are of a still table.
        stop_push.set()
        await push_task
        await asyncio.sleep(1.0)
        per_minute = await asyncio.to_thread(db.all, CANDLES_PER_MINUTE)
        rows = sum(int(r[1]) for r in per_minute)
        size = int(await asyncio.to_thread(db.one, "SELECT hypertable_size('candles')"))
        rows_1h = int(await asyncio.to_thread(db.one, "SELECT count(*) FROM candles_1h"))
        size_1h = int(await asyncio.to_thread(db.one, "SELECT hypertable_size('candles_1h')"))
        per_row = size / max(1, rows)
        per_row_1h = size_1h / max(1, rows_1h)
        day_rows = DAY_SYMBOLS * 1_440
        print(
            f"(6) candle rows per minute: {', '.join(str(int(r[1])) for r in per_minute)} "
            f"(minutes {per_minute[0][0]:%H:%M}-{per_minute[-1][0]:%H:%M}; {n_symbols} symbols followed)"
            if per_minute
            else "(6) no candle rows",
            flush=True,
        )
        print(
            f"    candles: {rows:,} rows, hypertable_size {size / 1e6:.2f} MB = {per_row:,.0f} B/row (indexes, "
            f"chunk overhead and dead versions of the upserts included) -> a day of {DAY_SYMBOLS:,} x 1,440 = "
            f"{day_rows:,} rows ~ {day_rows * per_row / 1e9:.2f} GB/day",
            flush=True,
        )
        d_rows, d_size = rows - int(candle_mark[0]), size - int(candle_mark[1])
        if d_rows > 0:
            print(
                f"    marginal (since the quiet phase began): +{d_rows:,} rows, +{d_size / 1e6:.2f} MB = "
                f"{d_size / d_rows:,.0f} B/row -> {day_rows * d_size / d_rows / 1e9:.2f} GB/day",
                flush=True,
            )
        print(
            f"    candles_1h: {rows_1h:,} rows, {size_1h / 1e6:.2f} MB = {per_row_1h:,.0f} B/row -> "
            f"{DAY_SYMBOLS * 24:,} rows/day ~ {DAY_SYMBOLS * 24 * per_row_1h / 1e6:.1f} MB/day",
            flush=True,
        )
        # A closed minute is never written again: once vacuum reclaims its dead versions, what a day
        # leaves on disk is the compact size. VACUUM FULL shows it (a fresh, private database).
        await asyncio.to_thread(db.run, "VACUUM FULL candles")
        await asyncio.to_thread(db.run, "VACUUM FULL candles_1h")
        compact = int(await asyncio.to_thread(db.one, "SELECT hypertable_size('candles')"))
        compact_1h = int(await asyncio.to_thread(db.one, "SELECT hypertable_size('candles_1h')"))
        tuple_bytes = float(await asyncio.to_thread(db.one, "SELECT avg(pg_column_size(c.*)) FROM candles AS c"))
        print(
            f"    compacted (VACUUM FULL: no dead versions): candles {compact / 1e6:.2f} MB = "
            f"{compact / max(1, rows):,.0f} B/row -> {day_rows * compact / max(1, rows) / 1e9:.2f} GB/day; candles_1h "
            f"{compact_1h / max(1, rows_1h):,.0f} B/row -> {DAY_SYMBOLS * 24 * compact_1h / max(1, rows_1h) / 1e6:.1f} "
            f"MB/day (small tables: the fixed size of a chunk's heap and indexes is in there); a candles row's "
            f"data alone is {tuple_bytes:.0f} B (+ ~28 B tuple header and line pointer, + its 2 index entries)",
            flush=True,
        )
    finally:
        stop_sampler.set()
        if sample_task is not None:
            await sample_task
        stop_push.set()
        await asyncio.gather(push_task, return_exceptions=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(
            f"collector exit code {proc.returncode}; machine load average at the end "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        for feed in feeds:
            await feed.stop()
        db.close()
        sync_redis.close()
        await async_redis.aclose()  # type: ignore[attr-defined]
        if args.show_log:
            print(tail(log, 60))
        if profile is not None and profile.exists():
            import pstats

            print("collector profile (cProfile: its overhead slows the collector; top functions by own time):")
            pstats.Stats(str(profile)).sort_stats("tottime").print_stats(30)
            pstats.Stats(str(profile)).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in VENUES:
        parser.add_argument(
            f"--{name}", type=int, default=DEFAULT_COUNTS[name], help=f"{name} instruments listed (0: left out)"
        )
    for name in VENUES:
        parser.add_argument(
            f"--{name}-kline-s", type=float, default=DEFAULT_KLINE_S[name], help=f"{name} kline period per symbol"
        )
    for name in VENUES:
        if name != "binance":  # one forceOrder a frame
            parser.add_argument(
                f"--{name}-items", type=int, default=DEFAULT_ITEMS[name], help=f"liquidations per {name} frame"
            )
    parser.add_argument("--burst-rate", type=float, default=5000, help="liquidations per second")
    parser.add_argument("--burst-s", type=float, default=60)
    parser.add_argument("--quiet-s", type=float, default=30)
    parser.add_argument("--settle-s", type=float, default=5)
    parser.add_argument(
        "--shares",
        default="",
        help="burst share per venue, e.g. binance=0.3,bybit=0.2,okx=0.2,gate=0.15,bitget=0.15 (default: even)",
    )
    parser.add_argument("--probe-every", type=int, default=20, help="1 in N liquidations is a latency probe")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="Redis poll period for the probes")
    parser.add_argument("--quick", action="store_true", help="150 instruments (5 venues), 10 s at 1,000/s, 10 s quiet")
    parser.add_argument("--profile", action="store_true", help="run the collector under cProfile, print the top")
    parser.add_argument("--show-log", action="store_true", help="print the end of the collector's log")
    args = parser.parse_args()
    if args.quick:
        for name, n in QUICK_COUNTS.items():
            if getattr(args, name) > 0:  # a venue left out stays out
                setattr(args, name, n)
        args.burst_rate, args.burst_s, args.quiet_s, args.settle_s = 1000, 10, 10, 2
    base = load_settings()
    prefix = f"liqbench:{secrets.token_hex(4)}:"
    url = create_bench_database(base.database_url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(bench(args, url, base.redis_url, prefix, Path(tmp)))
    finally:
        drop_bench_database(base.database_url, url)
        client = redis.Redis.from_url(base.redis_url)
        found = list(client.scan_iter(match=f"{prefix}*"))
        if found:
            client.delete(*found)
        client.close()


if __name__ == "__main__":
    main()
