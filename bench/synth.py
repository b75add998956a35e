"""The synthetic market behind bench.gen_dataset: prices, candles, liquidations, cascades, coverage.

Everything derives from the config's seed. First a plan for the whole period: per symbol a
heavy-tailed random walk with volatility regimes and a daily cycle, kept inside a realistic price
band; per exchange the connected intervals with reconnects and now and then a gap of minutes to
hours. Then, day by day and symbol by symbol (each with its own random stream, so the result does
not depend on how the days are split among workers): candles along the path, a liquidation tape
whose intensity follows volatility and whose side follows the price move, lognormal sizes with a
Pareto tail, and bursts that form cascades. Binance is sampled like the real stream (the last
liquidation per symbol and second); Bybit keeps the complete tape. Gaps hold no data at all.
Output is COPY text (and cascade rows), ready for bench.gen_dataset to load.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg.types.json import Jsonb

from collector.cascades import SAMPLED_WEIGHT, cascade_id, risk_score

DAY_MS = 86_400_000
MINUTE_MS = 60_000
EXCHANGES = ("binance", "bybit")
_MINUTES_PER_YEAR = 525_600
_HOUR_MS = 3_600_000
# The venues' own side field: Binance sends the liquidation ORDER side (a long is closed by a
# SELL), Bybit the liquidated POSITION side (Buy = a long was liquidated). Keys: (exchange, long).
_RAW_SIDE = {("binance", True): "SELL", ("binance", False): "BUY", ("bybit", True): "Buy", ("bybit", False): "Sell"}
_DROP_REASONS = ("silence watchdog", "connection reset by peer", "server closed (1006)", "ping timeout")
_CASCADE_MIN_EVENTS = 5  # the collector's defaults (LIQ_CASCADE_MIN_EVENTS, LIQ_CASCADE_MIN_USD)
_CASCADE_MIN_USD = 100_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Profile:
    """What one symbol looks like: price band, tick and lot sizes, activity levels."""

    low: float  # the price path stays inside [low, high]
    high: float
    price_decimals: int  # tick 10**-price_decimals
    qty_decimals: int  # lot 10**-qty_decimals
    annual_vol: float
    bybit_per_day: float  # the complete tape
    binance_per_day: float  # before Binance's one-per-second sampling
    cascades_per_day: float
    median_usd: float
    volume_per_min: float  # Binance base volume per minute; Bybit trades about half of it


PROFILES = {
    "BTCUSDT": Profile(60_000, 110_000, 1, 3, 0.55, 7_000, 6_000, 3.0, 1_500, 150.0),
    "ETHUSDT": Profile(2_000, 4_000, 2, 3, 0.75, 4_500, 4_000, 2.5, 1_000, 2_800.0),
    "SOLUSDT": Profile(100, 250, 2, 1, 0.90, 2_500, 2_200, 2.0, 800, 20_000.0),
}
_OTHER = Profile(1.0, 3.0, 4, 0, 1.0, 1_200, 1_000, 1.0, 600, 200_000.0)


def profile_for(symbol: str) -> Profile:
    return PROFILES.get(symbol, _OTHER)


@dataclass(frozen=True)
class GenConfig:
    symbols: tuple[str, ...]
    days: int
    seed: int
    start_ms: int  # 00:00 UTC of the first day
    end_ms: int  # exclusive, on a minute boundary
    source: str


@dataclass
class SymbolPath:
    """One symbol's market over the whole period, minute by minute."""

    closes: FloatArray  # price at each minute boundary: minute m opens at closes[m], closes at closes[m + 1]
    sigma: FloatArray  # standard deviation of each minute's log return
    z: FloatArray  # each minute's move in units of sigma: liquidation side and intensity follow it
    weight: FloatArray  # liquidation intensity multiplier, mean 1
    activity: FloatArray  # volume multiplier, mean 1


@dataclass
class Plan:
    cfg: GenConfig
    paths: list[SymbolPath]
    gap_starts: dict[str, IntArray]  # per exchange, sorted: no data in [start, end): last message .. reconnect
    gap_ends: dict[str, IntArray]
    coverage: list[tuple[object, ...]]  # stream_coverage rows


@dataclass
class DayOutput:
    liquidation_text: str = ""  # COPY text rows
    liquidation_rows: int = 0
    candle_text: str = ""
    candle_rows: int = 0
    cascades: list[tuple[object, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class _Burst:
    start_ms: int
    end_ms: int
    long: bool
    size: int  # Bybit events
    cross: bool  # Binance takes part too


def _rng(cfg: GenConfig, *keys: int) -> np.random.Generator:
    """An independent random stream per purpose (and symbol, day): workers can split days freely."""
    return np.random.default_rng([cfg.seed, *keys])


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def build_plan(cfg: GenConfig) -> Plan:
    n_minutes = cfg.days * 1440  # whole days, so cutting the end at "now" leaves the path alone
    paths = [_price_path(cfg, index, n_minutes) for index in range(len(cfg.symbols))]
    plan = Plan(cfg=cfg, paths=paths, gap_starts={}, gap_ends={}, coverage=[])
    for ex_index, exchange in enumerate(EXCHANGES):
        rows, starts, ends = _connections(cfg, ex_index, exchange)
        plan.coverage += rows
        plan.gap_starts[exchange] = np.array(starts, dtype=np.int64)
        plan.gap_ends[exchange] = np.array(ends, dtype=np.int64)
    return plan


def _price_path(cfg: GenConfig, index: int, n: int) -> SymbolPath:
    """Heavy-tailed minute returns, hourly volatility regimes (AR(1) in log), a daily cycle."""
    profile = profile_for(cfg.symbols[index])
    rng = _rng(cfg, 1, index)
    shocks = rng.normal(0.0, 0.12, n // 60)
    regime = np.empty(n // 60)
    level = shocks[0] * 3
    for i, shock in enumerate(shocks.tolist()):
        level = 0.98 * level + shock
        regime[i] = level
    abs_minute = cfg.start_ms // MINUTE_MS + np.arange(n)
    hour = (abs_minute % 1440) / 60
    cycle = 0.75 + 0.5 * np.exp(-(((hour - 14.5) / 2.5) ** 2)) + 0.2 * np.exp(-(((hour - 1.5) / 2.0) ** 2))
    weekday = (abs_minute // 1440 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    activity = np.exp(regime)[np.arange(n) // 60] * cycle * np.where(weekday >= 5, 0.7, 1.0)
    activity /= activity.mean()
    z = rng.standard_t(4, n) / np.sqrt(2.0)  # unit variance, fat tails
    sigma = profile.annual_vol / np.sqrt(_MINUTES_PER_YEAR) * activity
    walk = np.concatenate(([0.0], np.cumsum(sigma * z)))
    low, high = np.log(profile.low), np.log(profile.high)
    span = float(walk.max() - walk.min())
    scale = min(1.0, 0.9 * (high - low) / span) if span > 0 else 1.0  # a long walk is squeezed into the band
    log_price = (low + high) / 2 + (walk - (walk.max() + walk.min()) / 2) * scale
    weight = activity**1.5 * (0.4 + 0.6 * np.minimum(z * z, 25.0))
    return SymbolPath(np.exp(log_price), sigma * scale, z, weight / weight.mean(), activity)


def _connections(cfg: GenConfig, ex_index: int, exchange: str) -> tuple[list[tuple[object, ...]], list[int], list[int]]:
    """Connected intervals: Binance rotates daily at the latest, drops happen, now and then a long outage."""
    rng = _rng(cfg, 2, ex_index)
    rows: list[tuple[object, ...]] = []
    starts: list[int] = []
    ends: list[int] = []
    symbols = list(cfg.symbols)
    t = cfg.start_ms
    while t < cfg.end_ms:
        life = max(5 * MINUTE_MS, int(rng.exponential((14 if exchange == "binance" else 9) * _HOUR_MS)))
        reason = _DROP_REASONS[int(rng.integers(0, len(_DROP_REASONS)))]
        if exchange == "binance" and life >= DAY_MS:
            life, reason = DAY_MS, "24h connection limit"
        long_outage = rng.random() < 0.07
        outage = int(np.clip(rng.lognormal(np.log(25 * MINUTE_MS), 1.0), 3 * MINUTE_MS, 6 * _HOUR_MS))
        pause = outage if long_outage else int(rng.integers(800, 6_000))
        lag = 30_000 if reason == "silence watchdog" else int(rng.integers(0, 1_500))
        connection_id = f"gen{cfg.seed}-{exchange}-{t}"
        closed = t + life
        if closed >= cfg.end_ms:
            rows.append((connection_id, exchange, symbols, cfg.source, _dt(t), _dt(cfg.end_ms), None, ""))
            break
        rows.append((connection_id, exchange, symbols, cfg.source, _dt(t), _dt(closed - lag), _dt(closed), reason))
        starts.append(closed - lag)
        ends.append(closed + pause)
        t = closed + pause
    return rows, starts, ends


def _outside_gaps(t: IntArray, starts: IntArray, ends: IntArray) -> BoolArray:
    idx = np.searchsorted(starts, t, side="right") - 1
    return ~((idx >= 0) & (t < ends[np.maximum(idx, 0)])) if starts.size else np.ones(t.size, dtype=bool)


def _minutes_clear(minute_ms: IntArray, starts: IntArray, ends: IntArray) -> BoolArray:
    """Minutes that overlap no outage of a minute or more (a reconnect of seconds still gets the candle)."""
    long = (ends - starts) >= MINUTE_MS
    starts, ends = starts[long], ends[long]
    if not starts.size:
        return np.ones(minute_ms.size, dtype=bool)
    idx = np.searchsorted(starts, minute_ms + MINUTE_MS, side="left") - 1
    return ~((idx >= 0) & (ends[np.maximum(idx, 0)] > minute_ms))


def _sizes(rng: np.random.Generator, n: int, median_usd: float) -> FloatArray:
    """Mostly $100-$10k, a Pareto tail that now and then passes $1M."""
    usd = rng.lognormal(np.log(median_usd), 1.5, n)
    tail = rng.random(n) < 0.01
    usd[tail] = 20_000 * (1 + rng.pareto(1.3, int(tail.sum())))
    huge = usd > 25e6  # the largest single liquidations on record are tens of millions: no pile-up at a cap
    usd[huge] = rng.uniform(5e6, 25e6, int(huge.sum()))
    return np.maximum(usd, 5.0)


def _bursts(
    rng: np.random.Generator, profile: Profile, path: SymbolPath, m0: int, m1: int, base_ms: int
) -> list[_Burst]:
    """Cascades start where the price moves hardest; the move's direction picks the liquidated side."""
    if m1 - m0 < 4:
        return []
    wanted = int(rng.poisson(profile.cascades_per_day * float(path.weight[m0:m1].mean()) * (m1 - m0) / 1440))
    candidates = np.arange(m0 + 1, m1 - 2)
    odds = np.abs(path.z[candidates]) ** 3 + 1e-9
    chosen = np.sort(rng.choice(candidates, size=min(wanted, candidates.size), replace=False, p=odds / odds.sum()))
    bursts: list[_Burst] = []
    last = -10
    for minute in chosen.tolist():
        start = base_ms + minute * MINUTE_MS + int(rng.integers(0, 30_000))
        duration = int(rng.integers(8_000, 55_000))
        size = min(400, 5 + int(4 * rng.pareto(1.2)))
        cross = bool(rng.random() < 0.6)
        if minute - last >= 3:  # windows far apart: members of one burst never belong to another
            bursts.append(_Burst(start, start + duration, bool(path.z[minute] < 0), size, cross))
            last = minute
    return bursts


def _burst_events(rng: np.random.Generator, burst: _Burst, n: int) -> tuple[IntArray, FloatArray]:
    times = burst.start_ms + (rng.beta(1.0, 2.5, n) * (burst.end_ms - burst.start_ms)).astype(np.int64)
    usd = rng.lognormal(np.log(5_000), 1.3, n)
    total = float(usd.sum())
    if total < 150_000:
        usd *= 150_000 / total * rng.uniform(1.0, 1.6)
    return times, usd


def _exchange_tape(
    plan: Plan,
    rng: np.random.Generator,
    symbol_index: int,
    exchange: str,
    basis: float,
    m0: int,
    m1: int,
    bursts: list[_Burst],
) -> dict[str, npt.NDArray[Any]]:
    """One venue's liquidations of one symbol-day: background, bursts, venue sampling, gaps."""
    cfg, path = plan.cfg, plan.paths[symbol_index]
    profile = profile_for(cfg.symbols[symbol_index])
    per_day = profile.binance_per_day if exchange == "binance" else profile.bybit_per_day
    counts = rng.poisson(per_day / 1440 * path.weight[m0:m1])
    minute = np.repeat(np.arange(m0, m1), counts)
    times = [cfg.start_ms + minute * MINUTE_MS + rng.integers(0, MINUTE_MS, minute.size)]
    longs = [rng.random(minute.size) < 1 / (1 + np.exp(np.clip(1.5 * path.z[minute], -30, 30)))]
    usds = [_sizes(rng, minute.size, profile.median_usd)]
    for burst in bursts:
        if exchange == "binance" and not burst.cross:
            # A Bybit-only cascade: keep Binance's same-side background out of its window, or
            # nearly every cascade would come out cross-exchange.
            inside = (longs[0] == burst.long) & (times[0] >= burst.start_ms) & (times[0] <= burst.end_ms)
            times[0], longs[0], usds[0] = times[0][~inside], longs[0][~inside], usds[0][~inside]
            continue
        n = burst.size if exchange == "bybit" else max(5, int(burst.size * rng.uniform(0.6, 1.5)))
        burst_times, burst_usd = _burst_events(rng, burst, n)
        times.append(burst_times)
        longs.append(np.full(n, burst.long))
        usds.append(burst_usd)
    t, long, usd = np.concatenate(times), np.concatenate(longs), np.concatenate(usds)
    offset = (t - cfg.start_ms) / MINUTE_MS - m0
    price = np.interp(offset, np.arange(m1 - m0 + 1), path.closes[m0 : m1 + 1] * basis)
    price *= 1 + rng.normal(0, 1.5e-4, t.size)
    p_int = np.maximum(1, np.rint(price * 10**profile.price_decimals)).astype(np.int64)
    q_int = np.maximum(1, np.rint(usd / price * 10**profile.qty_decimals)).astype(np.int64)
    order = np.lexsort((q_int, p_int, long, t))
    t, long, p_int, q_int = t[order], long[order], p_int[order], q_int[order]
    if exchange == "binance":  # the stream pushes only the latest liquidation per symbol and second
        second = t // 1000
        keep = np.append(second[1:] != second[:-1], True)
    else:  # the complete tape; an exact repeat would be one event delivered twice
        keep = np.ones(t.size, dtype=bool)
        keep[1:] = (t[1:] != t[:-1]) | (long[1:] != long[:-1]) | (p_int[1:] != p_int[:-1]) | (q_int[1:] != q_int[:-1])
    keep &= _outside_gaps(t, plan.gap_starts[exchange], plan.gap_ends[exchange]) & (t < cfg.end_ms)
    t, long, p_int, q_int = t[keep], long[keep], p_int[keep], q_int[keep]
    if exchange == "binance":
        received = t + np.rint(rng.lognormal(np.log(60), 0.5, t.size)).astype(np.int64)
    else:  # pushed every 500 ms with everything since the last push
        received = (t // 500 + 1) * 500 + np.rint(rng.lognormal(np.log(40), 0.5, t.size)).astype(np.int64)
    return {"t": t, "long": long, "p": p_int, "q": q_int, "received": received}


def _fixed(values: IntArray, decimals: int) -> list[str]:
    """Scaled integers as exact decimal text: 97210 with 1 decimal is '9721.0'."""
    if decimals == 0:
        return [str(v) for v in values.tolist()]
    unit = 10**decimals
    return [f"{v // unit}.{v % unit:0{decimals}d}" for v in values.tolist()]


def _timestamps(ms: IntArray) -> list[str]:
    return np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms", timezone="UTC").tolist()


def _hash63(text: str) -> int:
    """common.events.dedup_key's hash: blake2b-64, signed, shifted to 63 bits."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True) >> 1


def _event_keys(
    exchanges: list[str], symbol: str, t: IntArray, sides: list[str], prices: list[str], quantities: list[str]
) -> list[int]:
    """Exactly common.events.dedup_key, without building a Decimal per row (Decimal.normalize() == strip zeros)."""
    keys = []
    for exchange, ms, side, price, qty in zip(exchanges, t.tolist(), sides, prices, quantities, strict=True):
        price = price.rstrip("0").rstrip(".") if "." in price else price
        qty = qty.rstrip("0").rstrip(".") if "." in qty else qty
        keys.append(_hash63(f"{exchange}|{symbol}|{ms}|{side}|{price}|{qty}"))
    return keys


def _cascade(
    cfg: GenConfig, symbol: str, burst: _Burst, tape: dict[str, npt.NDArray[Any]], keys: list[int]
) -> tuple[IntArray, tuple[object, ...]] | None:
    """The burst's window as the detector sees it: every same-side event of the symbol in it, both venues."""
    profile = profile_for(symbol)
    t, ex, p, q = tape["t"], tape["ex"], tape["p"], tape["q"]
    members = np.flatnonzero((tape["long"] == burst.long) & (t >= burst.start_ms) & (t <= burst.end_ms))
    value_decimals = profile.price_decimals + profile.qty_decimals
    values = q[members] * p[members]
    if members.size < _CASCADE_MIN_EVENTS or int(values.sum()) < _CASCADE_MIN_USD * 10**value_decimals:
        return None
    side = "LONG" if burst.long else "SHORT"
    first, last = int(members[0]), int(members[-1])
    cascade = cascade_id(symbol, side, keys[first])  # the collector's own id and score, so rows look alike
    by_exchange = {EXCHANGES[i]: int(n) for i, n in enumerate(np.bincount(ex[members], minlength=2)) if n}
    minutes, inverse = np.unique(t[members] // MINUTE_MS, return_inverse=True)
    peak = int(minutes[np.argmax(np.bincount(inverse, weights=values.astype(np.float64)))]) * MINUTE_MS
    price_start = Decimal(int(p[first])).scaleb(-profile.price_decimals)
    price_end = Decimal(int(p[last])).scaleb(-profile.price_decimals)
    move = ((price_end - price_start) / price_start * 100).quantize(Decimal("0.0001"))
    value_usd = Decimal(int(values.sum())).scaleb(-value_decimals)
    in_window = (t >= t[first]) & (t <= t[last])
    other_side = in_window & (tape["long"] != burst.long)
    opposite = q[other_side] * p[other_side]
    weighted = int(np.where(ex[members] == 0, SAMPLED_WEIGHT, 1).sum())  # a Binance event stands for one or more
    risk = risk_score(
        value_usd,
        Decimal(_CASCADE_MIN_USD),
        weighted,
        int(t[last] - t[first]),
        Decimal(int(opposite.sum())).scaleb(-value_decimals),
        len(by_exchange),
    )
    row: tuple[object, ...] = (
        cascade, symbol, side, _dt(int(t[first])), _dt(int(t[last])), int(members.size),
        Decimal(int(q[members].sum())).scaleb(-profile.qty_decimals), value_usd, sorted(by_exchange),
        Jsonb(by_exchange), len(by_exchange) >= 2, _dt(peak), price_start, price_end, move,
        risk, False, cfg.source,
    )  # fmt: skip
    return members, row


def _liquidation_lines(
    cfg: GenConfig, symbol: str, tape: dict[str, npt.NDArray[Any]], bursts: list[_Burst]
) -> DayOutput:
    """COPY text for one symbol-day of both venues, and the cascades found in it."""
    profile = profile_for(symbol)
    ex, long = tape["ex"], tape["long"]
    exchanges = [EXCHANGES[e] for e in ex.tolist()]
    sides = np.where(long, "LONG", "SHORT").tolist()
    raw_table = np.array([_RAW_SIDE[(e, is_long)] for e in EXCHANGES for is_long in (False, True)])
    raw_sides = raw_table[ex.astype(np.int64) * 2 + long].tolist()
    prices = _fixed(tape["p"], profile.price_decimals)
    quantities = _fixed(tape["q"], profile.qty_decimals)
    values = _fixed(tape["q"] * tape["p"], profile.price_decimals + profile.qty_decimals)
    keys = _event_keys(exchanges, symbol, tape["t"], sides, prices, quantities)
    cascade_ids = ["\\N"] * len(keys)
    out = DayOutput(liquidation_rows=len(keys))
    for burst in bursts:
        found = _cascade(cfg, symbol, burst, tape, keys)
        if found is not None:
            members, row = found
            for i in members.tolist():
                cascade_ids[i] = str(row[0])
            out.cascades.append(row)
    sampled = np.where(ex == 0, "t", "f").tolist()  # Binance: a lower bound, not the complete tape
    columns = (
        _timestamps(tape["t"]), exchanges, repeat(symbol), sides, quantities, prices, values, raw_sides,
        _timestamps(tape["received"]), repeat(cfg.source), sampled, cascade_ids, map(str, keys),
    )  # fmt: skip
    out.liquidation_text = "".join(map(_line, zip(*columns, strict=False)))
    return out


def _line(fields: tuple[str, ...]) -> str:
    return "\t".join(fields) + "\n"


def _candle_lines(
    plan: Plan, rng: np.random.Generator, symbol_index: int, exchange: str, basis: float, m0: int, m1: int
) -> tuple[str, int]:
    """Closed 1-minute candles along the path; none for minutes that overlap an outage."""
    cfg, path = plan.cfg, plan.paths[symbol_index]
    symbol = cfg.symbols[symbol_index]
    profile = profile_for(symbol)
    n, tick = m1 - m0, 10**profile.price_decimals
    opens = np.rint(path.closes[m0:m1] * basis * tick).astype(np.int64)
    closes = np.rint(path.closes[m0 + 1 : m1 + 1] * basis * tick).astype(np.int64)
    wicks = np.abs(rng.normal(0, 1, (2, n))) * path.sigma[m0:m1] * 0.7
    highs = np.maximum(np.rint(np.maximum(opens, closes) * (1 + wicks[0])).astype(np.int64), np.maximum(opens, closes))
    lows = np.minimum(np.rint(np.minimum(opens, closes) * (1 - wicks[1])).astype(np.int64), np.minimum(opens, closes))
    share = 1.0 if exchange == "binance" else 0.45
    volume = profile.volume_per_min * share * path.activity[m0:m1] * rng.lognormal(0, 0.35, n)
    volume *= 1 + 0.6 * np.abs(path.z[m0:m1])
    lot = 10**profile.qty_decimals
    volumes = np.maximum(1, np.rint(volume * lot)).astype(np.int64)
    typical = (opens + highs + lows + closes) / (4 * tick)
    quote = np.rint(volumes / lot * typical * 100).astype(np.int64)
    minute_ms = cfg.start_ms + np.arange(m0, m1, dtype=np.int64) * MINUTE_MS
    keep = _minutes_clear(minute_ms, plan.gap_starts[exchange], plan.gap_ends[exchange])
    keep &= minute_ms + MINUTE_MS <= cfg.end_ms
    columns = (
        _timestamps(minute_ms[keep]), repeat(exchange), repeat(symbol), _fixed(opens[keep], profile.price_decimals),
        _fixed(highs[keep], profile.price_decimals), _fixed(lows[keep], profile.price_decimals),
        _fixed(closes[keep], profile.price_decimals), _fixed(volumes[keep], profile.qty_decimals),
        _fixed(quote[keep], 2), repeat("t"), repeat(cfg.source),
    )  # fmt: skip
    return "".join(map(_line, zip(*columns, strict=False))), int(keep.sum())


def generate_symbol_day(plan: Plan, symbol_index: int, day: int) -> DayOutput:
    """Everything of one symbol on one day (day 0 is the first of the period), both venues."""
    cfg = plan.cfg
    m0 = day * 1440
    m1 = min(m0 + 1440, (cfg.end_ms - cfg.start_ms) // MINUTE_MS)
    if m1 <= m0:
        return DayOutput()
    rng = _rng(cfg, 3, symbol_index, day)
    profile = profile_for(cfg.symbols[symbol_index])
    bursts = _bursts(rng, profile, plan.paths[symbol_index], m0, m1, cfg.start_ms)
    basis = {"binance": 1.0, "bybit": 1.0 + float(rng.normal(0, 1.5e-4))}  # Bybit trades a hair off Binance
    tapes = [_exchange_tape(plan, rng, symbol_index, e, basis[e], m0, m1, bursts) for e in EXCHANGES]
    tapes[0]["ex"] = np.zeros(tapes[0]["t"].size, dtype=np.int8)
    tapes[1]["ex"] = np.ones(tapes[1]["t"].size, dtype=np.int8)
    tape = {k: np.concatenate([tapes[0][k], tapes[1][k]]) for k in tapes[0]}
    order = np.lexsort((tape["ex"], tape["t"]))
    tape = {k: v[order] for k, v in tape.items()}
    out = _liquidation_lines(cfg, cfg.symbols[symbol_index], tape, bursts)
    texts = []
    for exchange in EXCHANGES:
        text, rows = _candle_lines(plan, rng, symbol_index, exchange, basis[exchange], m0, m1)
        texts.append(text)
        out.candle_rows += rows
    out.candle_text = "".join(texts)
    return out
