"""The whole market's tape for `bench.gen_dataset --market`: liquidations, cascades and candles per coin.

The universe (coins, listings, the market factor, burst days, coverage) is bench.market_universe.
Per coin: a price path along the market factor (beta 0.6-1.4) with its own regimes and a daily
cycle; a liquidation intensity that follows volatility and the market-wide bursts; per-coin
bursts (a few a day on the majors, one every few days down the tail) where the price moves
hardest. The side follows the coin's minute move; sizes are lognormal with a Pareto tail. Each
venue samples as its stream does: binance, okx and gate keep the last liquidation per symbol and
second, bitget the largest long and largest short per second, bybit the complete tape. Gaps in a
venue's `stream_coverage` hold no liquidations and no candles.

Work is split by coin, not by day: a coin's tape for the whole period goes through one
`collector.cascades.CascadeDetector` (the collector's defaults, rule `relative`), fed as the
collector is fed (by receive time, one event per `process()`), so cascades and each row's
`cascade_id` are what the collector finds, cross-venue cascades joined on the canonical
instrument included. Each coin's random streams are its own (workers can take any coins). The
output is COPY text and cascade rows, for bench.market_dataset to load.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.market_universe import (
    HOUR_MS,
    MINUTE_MS,
    RAW_SIDE,
    SAMPLED,
    BoolArray,
    Coin,
    FloatArray,
    IntArray,
    Listing,
    Market,
    MarketConfig,
    rng_for,
)
from collector.cascades import CascadeDetector
from collector.storage.timescale_sql import cascade_row
from common.events import Cascade, Liquidation, Side, dedup_key_of_texts
from common.instruments import CONTRACTS


@dataclass
class CoinChunk:
    """What one coin produced over some days: COPY text and its row counts, finished cascades."""

    liquidation_text: str = ""
    liquidation_rows: int = 0
    candle_text: str = ""
    candle_rows: int = 0
    hour_text: str = ""
    hour_rows: int = 0
    cascades: list[tuple[Any, ...]] = field(default_factory=list)


# --- one coin ----------------------------------------------------------------------------------


@dataclass
class CoinPath:
    closes: FloatArray  # USD per coin at each minute boundary (n + 1)
    sigma: FloatArray
    z: FloatArray  # the coin's minute move in units of sigma
    weight: FloatArray  # liquidation intensity multiplier (mean 1 outside market bursts)
    size_boost: FloatArray  # liquidation size multiplier (1 outside market bursts)
    activity: FloatArray


def coin_path(market: Market, index: int) -> CoinPath:
    cfg, coin = market.cfg, market.coins[index]
    n = cfg.days * 1440
    rng = rng_for(cfg, 4, index)
    abs_minute = cfg.start_ms // MINUTE_MS + np.arange(n)
    hour = (abs_minute % 1440) / 60
    cycle = 0.75 + 0.5 * np.exp(-(((hour - 14.5) / 2.5) ** 2)) + 0.2 * np.exp(-(((hour - 1.5) / 2.0) ** 2))
    own = np.exp(np.repeat(rng.normal(0, 0.25, n // 60 + 1), 60)[:n])
    activity = market.regime * cycle * own
    activity /= activity.mean()
    idio = rng.standard_t(4, n) / np.sqrt(2.0)
    z = (coin.beta * market.market_z + np.sqrt(max(0.1, 2 - coin.beta**2)) * idio) / np.sqrt(2.0)
    sigma = coin.annual_vol / np.sqrt(525_600) * activity
    log_price = np.log(coin.price) + np.concatenate(([0.0], np.cumsum(sigma * z)))
    log_price = np.clip(log_price, np.log(coin.price / 4), np.log(coin.price * 3))
    weight = activity**1.5 * (0.4 + 0.6 * np.minimum(z * z, 25.0))
    weight /= weight.mean()
    weight *= 1 + market.burst
    return CoinPath(np.exp(log_price), sigma, z, weight, 1 + 0.08 * market.burst, activity)


def _outside_gaps(t: IntArray, starts: IntArray, ends: IntArray) -> BoolArray:
    if not starts.size:
        return np.ones(t.size, dtype=bool)
    idx = np.searchsorted(starts, t, side="right") - 1
    return ~((idx >= 0) & (t < ends[np.maximum(idx, 0)]))


def _minutes_clear(minute_ms: IntArray, starts: IntArray, ends: IntArray) -> BoolArray:
    long = (ends - starts) >= MINUTE_MS
    starts, ends = starts[long], ends[long]
    if not starts.size:
        return np.ones(minute_ms.size, dtype=bool)
    idx = np.searchsorted(starts, minute_ms + MINUTE_MS, side="left") - 1
    return ~((idx >= 0) & (ends[np.maximum(idx, 0)] > minute_ms))


def _sizes(rng: np.random.Generator, n: int, median_usd: float) -> FloatArray:
    usd = rng.lognormal(np.log(median_usd), 1.5, n)
    tail = rng.random(n) < 0.01
    usd[tail] = 20 * median_usd * (1 + rng.pareto(1.3, int(tail.sum())))
    huge = usd > 25e6
    usd[huge] = rng.uniform(5e6, 25e6, int(huge.sum()))
    return np.maximum(usd, 5.0)


def _fixed(values: IntArray, decimals: int) -> list[str]:
    """Scaled integers as exact decimal text: 97210 with 1 decimal is '9721.0' (negative decimals: zeros)."""
    if decimals <= 0:
        return [str(v * 10**-decimals) for v in values.tolist()]
    unit = 10**decimals
    return [f"{v // unit}.{v % unit:0{decimals}d}" for v in values.tolist()]


def _plain(text: str) -> str:
    """common.events.canonical_text of a fixed-point text: trailing zeros stripped."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def _timestamps(ms: IntArray) -> list[str]:
    return np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms", timezone="UTC").tolist()


@dataclass
class _Burst:
    start_ms: int
    end_ms: int
    long: bool
    usd: float
    venues: tuple[int, ...]  # listing indexes taking part


def _coin_bursts(
    rng: np.random.Generator, market: Market, coin: Coin, path: CoinPath, m0: int, m1: int
) -> list[_Burst]:
    """The coin's own bursts, where its price moves hardest; the move picks the liquidated side."""
    if m1 - m0 < 4:
        return []
    wanted = int(rng.poisson(coin.bursts_per_day * (m1 - m0) / 1440))
    if not wanted:
        return []
    candidates = np.arange(m0 + 1, m1 - 2)
    odds = np.abs(path.z[candidates]) ** 3 + 1e-9
    chosen = np.sort(rng.choice(candidates, size=min(wanted, candidates.size), replace=False, p=odds / odds.sum()))
    mean_minute = coin.events_per_day / 1440 * coin.median_usd * np.exp(1.5**2 / 2)
    out = []
    for minute in chosen.tolist():
        start = market.cfg.start_ms + minute * MINUTE_MS + int(rng.integers(0, 30_000))
        usd = max(25_000.0, mean_minute * float(rng.uniform(15, 80)))
        venues = tuple(i for i in range(len(coin.listings)) if rng.random() < 0.7) or (0,)
        out.append(_Burst(start, start + int(rng.integers(8_000, 55_000)), bool(path.z[minute] < 0), usd, venues))
    return out


def _venue_tape(
    market: Market,
    rng: np.random.Generator,
    coin: Coin,
    path: CoinPath,
    listing_index: int,
    m0: int,
    m1: int,
    bursts: list[_Burst],
) -> dict[str, npt.NDArray[Any]]:
    """One venue's liquidations of one coin-day: background and bursts, the venue's sampling, gaps."""
    cfg = market.cfg
    listing = coin.listings[listing_index]
    counts = rng.poisson(coin.events_per_day * listing.share / 1440 * path.weight[m0:m1])
    minute = np.repeat(np.arange(m0, m1), counts)
    times = [cfg.start_ms + minute * MINUTE_MS + rng.integers(0, MINUTE_MS, minute.size)]
    longs = [rng.random(minute.size) < 1 / (1 + np.exp(np.clip(1.5 * path.z[minute], -30, 30)))]
    usds = [_sizes(rng, minute.size, coin.median_usd) * path.size_boost[minute]]
    for burst in bursts:
        if listing_index not in burst.venues:
            continue
        share = listing.share / sum(coin.listings[i].share for i in burst.venues)
        n = int(np.clip(burst.usd * share / (coin.median_usd * 3), 3, 300))
        b_t = burst.start_ms + (rng.beta(1.0, 2.5, n) * (burst.end_ms - burst.start_ms)).astype(np.int64)
        b_usd = rng.lognormal(0, 0.8, n)
        times.append(b_t)
        longs.append(np.full(n, burst.long))
        usds.append(b_usd * (burst.usd * share / float(b_usd.sum())))
    t, long, usd = np.concatenate(times), np.concatenate(longs), np.concatenate(usds)
    offset = (t - cfg.start_ms) / MINUTE_MS - m0
    price = np.interp(offset, np.arange(m1 - m0 + 1), path.closes[m0 : m1 + 1])
    price *= (1 + rng.normal(0, 2e-4)) * (1 + rng.normal(0, 1.5e-4, t.size))  # the venue's basis, each fill
    unit_price = price * listing.multiplier
    p_int = np.maximum(1, np.rint(unit_price * 10**listing.price_decimals)).astype(np.int64)
    units = usd / unit_price  # venue base units
    if listing.size_unit == CONTRACTS:  # whole contracts, stored in base units
        contracts = np.maximum(1, np.rint(units * 10**listing.contract_decimals)).astype(np.int64)
        q_int = contracts * 10 ** max(0, listing.qty_decimals - listing.contract_decimals)
    else:
        q_int = np.maximum(1, np.rint(units * 10**listing.qty_decimals)).astype(np.int64)
    value = q_int.astype(np.float64) * p_int  # for sampling by size only
    order = np.lexsort((q_int, p_int, long, t))
    t, long, p_int, q_int, value = t[order], long[order], p_int[order], q_int[order], value[order]
    second = t // 1000
    if not t.size:
        keep = np.ones(0, dtype=bool)
    elif listing.exchange == "bybit":  # the complete tape; an exact repeat would be one event delivered twice
        keep = np.ones(t.size, dtype=bool)
        keep[1:] = (t[1:] != t[:-1]) | (long[1:] != long[:-1]) | (p_int[1:] != p_int[:-1]) | (q_int[1:] != q_int[:-1])
    elif listing.exchange == "bitget":  # the largest long and the largest short per second
        by_size = np.lexsort((value, long, second))
        last = np.append(
            (second[by_size][1:] != second[by_size][:-1]) | (long[by_size][1:] != long[by_size][:-1]), True
        )
        keep = np.zeros(t.size, dtype=bool)
        keep[by_size[last]] = True
    else:  # the latest liquidation per symbol and second
        keep = np.append(second[1:] != second[:-1], True)
    gap_s, gap_e = market.gap_starts[listing.exchange], market.gap_ends[listing.exchange]
    keep &= _outside_gaps(t, gap_s, gap_e) & (t < cfg.end_ms)
    t, long, p_int, q_int = t[keep], long[keep], p_int[keep], q_int[keep]
    if listing.exchange == "bybit":  # pushed every 500 ms with everything since the last push
        received = (t // 500 + 1) * 500 + np.rint(rng.lognormal(np.log(40), 0.5, t.size)).astype(np.int64)
    else:
        received = t + np.rint(rng.lognormal(np.log(60), 0.5, t.size)).astype(np.int64)
    return {"t": t, "long": long, "p": p_int, "q": q_int, "received": received}


class _Pending:
    """Events formatted but not written yet: a later event may still make them cascade members."""

    def __init__(self) -> None:
        self.events: list[Liquidation] = []
        self.lines: list[str] = []

    def flush(self, before_ms: int | None) -> tuple[str, int]:
        cut = len(self.events)
        if before_ms is not None:
            cut = next((i for i, ev in enumerate(self.events) if ev.time_ms >= before_ms), cut)
        parts = [
            f"{line}\t{ev.cascade_id}\n" if ev.cascade_id is not None else f"{line}\t\\N\n"
            for ev, line in zip(self.events[:cut], self.lines[:cut], strict=True)
        ]
        del self.events[:cut], self.lines[:cut]
        return "".join(parts), cut


def _day_events(market: Market, index: int, path: CoinPath, day: int) -> tuple[list[Liquidation], list[str]]:
    """One coin-day on every venue: Liquidation objects and their COPY lines (without cascade_id)
    in the order the collector would receive them (receive time, then exchange time)."""
    cfg, coin = market.cfg, market.coins[index]
    m0 = day * 1440
    m1 = min(m0 + 1440, (cfg.end_ms - cfg.start_ms) // MINUTE_MS)
    rng = rng_for(cfg, 5, index, day)
    bursts = _coin_bursts(rng, market, coin, path, m0, m1)
    rows: list[tuple[int, int, int, Liquidation, str]] = []
    for li_index, listing in enumerate(coin.listings):
        tape = _venue_tape(market, rng, coin, path, li_index, m0, m1, bursts)
        rows += _format(cfg, listing, li_index, tape)
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [r[3] for r in rows], [r[4] for r in rows]


def _format(
    cfg: MarketConfig, listing: Listing, li_index: int, tape: dict[str, npt.NDArray[Any]]
) -> list[tuple[int, int, int, Liquidation, str]]:
    exchange, symbol = listing.exchange, listing.symbol
    sampled = SAMPLED[exchange]
    prices = _fixed(tape["p"], listing.price_decimals)
    quantities = _fixed(tape["q"], listing.qty_decimals)
    values = _fixed(tape["q"] * tape["p"], listing.price_decimals + listing.qty_decimals)
    times = _timestamps(tape["t"])
    received = _timestamps(tape["received"])
    raw = {True: RAW_SIDE[(exchange, True)], False: RAW_SIDE[(exchange, False)]}
    head = f"\t{exchange}\t{symbol}\t"
    tail = f"\t{cfg.source}\t{'t' if sampled else 'f'}\t"
    out = []
    for i, (ms, rec, is_long) in enumerate(
        zip(tape["t"].tolist(), tape["received"].tolist(), tape["long"].tolist(), strict=True)
    ):
        side = Side.LONG if is_long else Side.SHORT
        price, qty, value = prices[i], quantities[i], values[i]
        if exchange == "bitget":  # the adapter's key: the quote amount, tagged
            key = dedup_key_of_texts(exchange, symbol, ms, side, _plain(price), _plain(value), "quote")
        else:
            key = dedup_key_of_texts(exchange, symbol, ms, side, _plain(price), _plain(qty))
        ev = Liquidation(
            exchange, symbol, side, Decimal(qty), Decimal(price), Decimal(value), ms, rec, raw[is_long],
            cfg.source, sampled, key,
        )  # fmt: skip
        line = f"{times[i]}{head}{side}\t{qty}\t{price}\t{value}\t{raw[is_long]}\t{received[i]}{tail}{key}"
        out.append((rec, ms, li_index, ev, line))
    return out


def feed(detector: CascadeDetector, events: list[Liquidation], finished: dict[int, Cascade]) -> None:
    """The collector's way: each event as it is received, `now` its receive time. Ended cascades
    land in `finished`."""
    for ev in events:
        for c in detector.process([ev], ev.received_ms).cascades:
            if not c.active:
                finished[c.id] = c


def new_detector() -> CascadeDetector:
    """The collector's detector with its defaults (LIQ_CASCADE_RULE=relative: window 60 s, 5 events,
    floor $20,000, 10x / 3x the trailing 24-hour baseline, at most 900 s)."""
    return CascadeDetector(60, 5, Decimal(20_000))


# --- candles ---------------------------------------------------------------------------------


def _candles(
    market: Market, rng: np.random.Generator, coin: Coin, listing: Listing, path: CoinPath, m0: int, m1: int
) -> tuple[dict[str, IntArray], IntArray]:
    cfg = market.cfg
    n, tick = m1 - m0, 10**listing.price_decimals
    basis = listing.multiplier * (1 + float(rng.normal(0, 2e-4))) * tick
    opens = np.maximum(1, np.rint(path.closes[m0:m1] * basis)).astype(np.int64)
    closes = np.maximum(1, np.rint(path.closes[m0 + 1 : m1 + 1] * basis)).astype(np.int64)
    wicks = np.abs(rng.normal(0, 1, (2, n))) * path.sigma[m0:m1] * 0.7
    top, bottom = np.maximum(opens, closes), np.minimum(opens, closes)
    highs = np.maximum(np.rint(top * (1 + wicks[0])).astype(np.int64), top)
    lows = np.maximum(1, np.minimum(np.rint(bottom * (1 - wicks[1])).astype(np.int64), bottom))
    per_minute = coin.events_per_day * coin.median_usd * 400 / 1440 * listing.share / max(market.cfg.scale, 1e-9)
    quote_usd = per_minute * (path.activity[m0:m1] * rng.lognormal(0, 0.35, n) * (1 + 0.6 * np.abs(path.z[m0:m1])))
    lot = 10**listing.qty_decimals
    typical = (opens + highs + lows + closes) / (4 * tick)
    volumes = np.maximum(1, np.rint(quote_usd / typical * lot)).astype(np.int64)
    quote = np.rint(volumes / lot * typical * 100).astype(np.int64)
    minute_ms = cfg.start_ms + np.arange(m0, m1, dtype=np.int64) * MINUTE_MS
    keep = _minutes_clear(minute_ms, market.gap_starts[listing.exchange], market.gap_ends[listing.exchange])
    keep &= minute_ms + MINUTE_MS <= cfg.end_ms
    cols = {"open": opens, "high": highs, "low": lows, "close": closes, "volume": volumes, "quote": quote}
    return {k: v[keep] for k, v in cols.items()}, minute_ms[keep]


def _candle_text(cfg: MarketConfig, listing: Listing, cols: dict[str, IntArray], times: IntArray, hourly: bool) -> str:
    pd, qd = listing.price_decimals, listing.qty_decimals
    columns: list[Any] = [_timestamps(times), [listing.exchange] * times.size, [listing.symbol] * times.size]
    columns += [_fixed(cols[k], pd) for k in ("open", "high", "low", "close")]
    columns += [_fixed(cols["volume"], qd), _fixed(cols["quote"], 2)]
    columns += [[str(m) for m in cols["minutes"].tolist()]] if hourly else [["t"] * times.size]
    columns += [[cfg.source] * times.size]
    return "".join("\t".join(row) + "\n" for row in zip(*columns, strict=True))


def _hours(cols: dict[str, IntArray], times: IntArray) -> tuple[dict[str, IntArray], IntArray]:
    """Each hour from its minutes, as candles_1h computes it (first open, max high, min low, last close, sums)."""
    hour = times // HOUR_MS
    starts = np.flatnonzero(np.append(True, hour[1:] != hour[:-1]))
    ends = np.append(starts[1:], hour.size) - 1
    out = {
        "open": cols["open"][starts],
        "high": np.maximum.reduceat(cols["high"], starts),
        "low": np.minimum.reduceat(cols["low"], starts),
        "close": cols["close"][ends],
        "volume": np.add.reduceat(cols["volume"], starts),
        "quote": np.add.reduceat(cols["quote"], starts),
        "minutes": ends - starts + 1,
    }
    return out, hour[starts] * HOUR_MS


# --- a coin over days ------------------------------------------------------------------------


class CoinRun:
    """One coin through the period, day by day, with its own detector (one canonical instrument)."""

    def __init__(self, market: Market, index: int) -> None:
        self.market = market
        self.index = index
        self.coin = market.coins[index]
        self.path = coin_path(market, index)
        self.detector = new_detector()
        self.pending = _Pending()
        self.finished: dict[int, Cascade] = {}

    def days(self, days: list[int], last: bool) -> CoinChunk:
        """Generate and detect `days` (consecutive, in order); `last` flushes everything and closes
        the open cascades."""
        out = CoinChunk()
        cfg = self.market.cfg
        texts: list[str] = []
        candle_texts: list[str] = []
        hour_texts: list[str] = []
        for day in days:
            m0 = day * 1440
            m1 = min(m0 + 1440, (cfg.end_ms - cfg.start_ms) // MINUTE_MS)
            if m1 <= m0:
                continue
            events, lines = _day_events(self.market, self.index, self.path, day)
            feed(self.detector, events, self.finished)
            self.pending.events += events
            self.pending.lines += lines
            # a member is never older than the detector's clock minus two windows: 5 minutes is safe
            text, rows = self.pending.flush(cfg.start_ms + m1 * MINUTE_MS - 5 * MINUTE_MS)
            texts.append(text)
            out.liquidation_rows += rows
            rng = rng_for(cfg, 6, self.index, day)
            for listing in self.coin.listings:
                cols, times = _candles(self.market, rng, self.coin, listing, self.path, m0, m1)
                if not times.size:
                    continue
                if self.index < cfg.candle_coins:
                    candle_texts.append(_candle_text(cfg, listing, cols, times, hourly=False))
                    out.candle_rows += times.size
                hours, hour_ms = _hours(cols, times)
                hour_texts.append(_candle_text(cfg, listing, hours, hour_ms, hourly=True))
                out.hour_rows += hour_ms.size
        if last:
            for c in self.detector.close_all():
                self.finished[c.id] = c
            text, rows = self.pending.flush(None)
            texts.append(text)
            out.liquidation_rows += rows
        out.cascades = [cascade_row(c) for c in self.finished.values()]
        self.finished.clear()
        out.liquidation_text = "".join(texts)
        out.candle_text = "".join(candle_texts)
        out.hour_text = "".join(hour_texts)
        return out


def coin_chunks(market: Market, index: int, chunk_days: int = 7) -> Iterator[CoinChunk]:
    run = CoinRun(market, index)
    n_days = market.cfg.days
    for first in range(0, n_days, chunk_days):
        days = list(range(first, min(first + chunk_days, n_days)))
        yield run.days(days, last=days[-1] == n_days - 1)
