"""The whole market's universe for `bench.gen_dataset --market`: coins, venue listings, market factor, coverage.

Everything derives from the seed. BTC, ETH and 28 other well-known coins, then synthetic names down
a long tail, each with a start price (BTC about 95,000, the tail from 0.0004 to 300, PEPE and SHIB
at their real 0.00001), listed on a realistic subset of binance, bybit, okx, gate and bitget (BTC
and ETH on all five) and spelt as each venue does: `BTCUSDT` and `1000PEPEUSDT` (binance, bitget),
`BTCUSDT`, `1000PEPEUSDT` and `SHIB1000USDT` (bybit), `BTC-USDT-SWAP` (okx, contracts of `ctVal`),
`BTC_USDT` (gate, contracts of `quanto_multiplier`). Each listing becomes an `instruments` row.

Activity: a heavy-tailed share of the liquidations (BTC 16 %, ETH 10 %, SOL 4 % of the events, the
rest Zipf over the tail) with sizes that shrink down the tail (bench.market_synth), so BTC and ETH
hold most of the USD. A market factor moves every coin, with hourly volatility regimes; a few
market-wide burst days, one of them like 10 October 2025 (hours of crash at up to 40 times the
normal intensity, billions liquidated). Each venue's connections (`stream_coverage`) drop now and
then, and now and then stay down for minutes to hours.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from common.instruments import BASE_UNIT, CONTRACTS

DAY_MS = 86_400_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
VENUES = ("binance", "bybit", "okx", "gate", "bitget")
SAMPLED = {"binance": True, "bybit": False, "okx": True, "gate": True, "bitget": True}
# The venue's own side field for (venue, long liquidated): order side on binance and okx, position
# side on bybit and bitget, the sign of the order size on gate.
RAW_SIDE = {
    ("binance", True): "SELL", ("binance", False): "BUY",
    ("bybit", True): "Buy", ("bybit", False): "Sell",
    ("okx", True): "sell", ("okx", False): "buy",
    ("gate", True): "size<0", ("gate", False): "size>0",
    ("bitget", True): "buy", ("bitget", False): "sell",
}  # fmt: skip
_VENUE_SHARE = {"binance": 0.34, "bybit": 0.24, "okx": 0.16, "gate": 0.12, "bitget": 0.14}
_TAIL_LISTED = {"binance": 0.88, "bybit": 0.82, "okx": 0.35, "gate": 0.6, "bitget": 0.55}
_MAJORS: tuple[tuple[str, float], ...] = (
    ("BTC", 95_000), ("ETH", 3_300), ("SOL", 180), ("XRP", 2.3), ("DOGE", 0.32), ("BNB", 650),
    ("ADA", 0.9), ("LINK", 20), ("AVAX", 35), ("SUI", 3.5), ("PEPE", 0.000012), ("SHIB", 0.000022),
    ("BONK", 0.00003), ("WIF", 2.0), ("LTC", 100), ("TRX", 0.25), ("DOT", 6), ("NEAR", 5), ("APT", 9),
    ("ARB", 0.8), ("OP", 1.8), ("FLOKI", 0.00015), ("TON", 5), ("HYPE", 25), ("ENA", 0.8), ("WLD", 2),
    ("TIA", 5), ("INJ", 20), ("FIL", 5), ("AAVE", 300),
)  # fmt: skip
_EVENTS_PER_DAY = 215_000  # every venue, before sampling, at scale 1: about 60 million stored a year
_HEAD_SHARE = (0.16, 0.10, 0.04)  # BTC, ETH, SOL; the rest is Zipf over the tail
_DROP_REASONS = ("silence watchdog", "connection reset by peer", "server closed (1006)", "ping timeout")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Listing:
    """One venue's contract of a coin: how the venue spells it and counts it."""

    exchange: str
    symbol: str
    multiplier: int  # coins per unit of the venue's quantity (1000 for 1000PEPEUSDT)
    size_unit: str  # BASE_UNIT | CONTRACTS (okx, gate)
    contract_decimals: int  # contracts: one contract is 10**-contract_decimals base units (may be negative)
    price_decimals: int  # tick of the venue price (per venue unit)
    qty_decimals: int  # lot of the stored quantity (venue base units)
    share: float  # this venue's share of the coin's liquidations

    @property
    def contract_size(self) -> Decimal:
        return Decimal(1).scaleb(-self.contract_decimals) if self.size_unit == CONTRACTS else Decimal(1)


@dataclass(frozen=True)
class Coin:
    rank: int  # 1 = BTC
    base: str
    price: float  # at the start of the period, in USD per coin
    annual_vol: float
    beta: float  # to the market factor
    events_per_day: float  # every venue, before sampling
    median_usd: float
    bursts_per_day: float
    listings: tuple[Listing, ...]

    @property
    def canonical(self) -> str:
        return f"{self.base}-USDT-PERP"


@dataclass(frozen=True)
class MarketConfig:
    coins: int  # 400
    days: int
    seed: int
    start_ms: int  # 00:00 UTC of the first day
    end_ms: int  # exclusive, on a minute boundary
    source: str
    scale: float  # multiplies every event rate: 1 gives about 60 million liquidations a year
    candle_coins: int  # 1-minute candles for the first N coins (every venue); hourly for all


@dataclass(frozen=True)
class MarketBurst:
    """A market-wide flush: liquidation intensity up to `1 + peak` times normal over a bump."""

    start_minute: int
    minutes: int
    peak: float
    long: bool  # a crash liquidates longs


@dataclass
class Market:
    cfg: MarketConfig
    coins: list[Coin]
    market_z: FloatArray  # the market factor's minute moves (unit variance)
    regime: FloatArray  # the market's hourly volatility multiplier, per minute
    burst: FloatArray  # the market-wide burst envelope per minute (0 outside bursts)
    bursts: list[MarketBurst]
    gap_starts: dict[str, IntArray]  # per venue, sorted: no data in [start, end)
    gap_ends: dict[str, IntArray]
    coverage: list[tuple[object, ...]]  # stream_coverage rows


def rng_for(cfg: MarketConfig, *keys: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *keys])


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _decimals_for(price: float, digits: int = 5) -> int:
    return int(np.clip(digits - np.floor(np.log10(price)), 0, 10))


def _names(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    letters = np.array(list(string.ascii_uppercase))
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(letters, int(rng.integers(3, 6))).tolist())
        if name not in taken and not name.endswith("PERP") and not name.endswith("USDT"):
            taken.add(name)
            out.append(name)
    return out


def _listings(rng: np.random.Generator, rank: int, base: str, price: float) -> tuple[Listing, ...]:
    if rank <= 2:
        venues = list(VENUES)
    else:
        odds = {v: (0.92 if rank <= 30 else p) for v, p in _TAIL_LISTED.items()}
        venues = [v for v in VENUES if rng.random() < odds[v]] or ["binance"]
    total = sum(_VENUE_SHARE[v] for v in venues)
    out = []
    for venue in venues:
        share = _VENUE_SHARE[venue] / total
        if venue in ("okx", "gate"):  # contracts worth about $100 (okx) and $5 (gate)
            k = int(np.round(np.log10((100 if venue == "okx" else 5) / price)))
            symbol = f"{base}-USDT-SWAP" if venue == "okx" else f"{base}_USDT"
            out.append(Listing(venue, symbol, 1, CONTRACTS, -k, _decimals_for(price), max(0, -k), share))
            continue
        multiplier = 1000 if price < 0.001 else 1
        if multiplier > 1:
            symbol = f"{base}1000USDT" if venue == "bybit" and base == "SHIB" else f"1000{base}USDT"
        else:
            symbol = f"{base}USDT"
        unit_price = price * multiplier
        qty_decimals = int(np.clip(np.floor(np.log10(unit_price)) - 1, 0, 3))
        out.append(Listing(venue, symbol, multiplier, BASE_UNIT, 0, _decimals_for(unit_price), qty_decimals, share))
    return tuple(out)


def build_coins(cfg: MarketConfig) -> list[Coin]:
    rng = rng_for(cfg, 1)
    names = [b for b, _ in _MAJORS[: cfg.coins]]
    names += _names(rng, cfg.coins - len(names), set(names))
    tail = np.arange(4, max(cfg.coins, 4) + 1, dtype=np.float64) ** -1.1
    tail *= (1 - sum(_HEAD_SHARE)) / tail.sum()
    coins = []
    for index, base in enumerate(names):
        rank = index + 1
        if rank <= len(_MAJORS):
            price = _MAJORS[index][1]
        else:
            price = float(10 ** rng.uniform(-3.4, 2.5))
        share = _HEAD_SHARE[index] if rank <= 3 else float(tail[rank - 4])
        median = {1: 2_000.0, 2: 1_500.0, 3: 1_000.0}.get(rank, float(max(150.0, 800 * (rank / 4) ** -0.3)))
        coins.append(
            Coin(
                rank=rank,
                base=base,
                price=price,
                annual_vol=0.55 if rank == 1 else 0.75 if rank == 2 else float(rng.uniform(0.9, 1.6)),
                beta=1.0 if rank == 1 else float(rng.uniform(0.6, 1.4)),
                events_per_day=_EVENTS_PER_DAY * cfg.scale * share,
                median_usd=median,
                bursts_per_day=3.0 if rank <= 3 else 1.0 if rank <= 30 else 0.25,
                listings=_listings(rng, rank, base, price),
            )
        )
    return coins


def build_market(cfg: MarketConfig) -> Market:
    n = cfg.days * 1440
    rng = rng_for(cfg, 2)
    market_z = rng.standard_t(4, n) / np.sqrt(2.0)
    level, regime_h = 0.0, np.empty(max(n // 60, 1))
    for i, shock in enumerate(rng.normal(0.0, 0.12, regime_h.size).tolist()):
        level = 0.98 * level + shock
        regime_h[i] = level
    regime = np.exp(regime_h)[np.minimum(np.arange(n) // 60, regime_h.size - 1)]
    bursts: list[MarketBurst] = []
    burst = np.zeros(n)
    if cfg.days >= 2:
        # one 10-October day (at about two thirds of the period), and a flush every ~75 days
        days = [int(cfg.days * 0.66)] + sorted(
            rng.choice(cfg.days, size=max(1, cfg.days // 75), replace=False).tolist()
        )
        for i, day in enumerate(dict.fromkeys(days)):
            mega = i == 0
            start = day * 1440 + int(rng.integers(12 * 60, 21 * 60))
            minutes = int(rng.integers(360, 540) if mega else rng.integers(90, 240))
            peak = 40.0 if mega else float(rng.uniform(6, 14))
            long = True if mega else bool(rng.random() < 0.65)
            bursts.append(MarketBurst(start, minutes, peak, long))
            span = np.arange(start, min(start + minutes, n))
            shape = np.sin(np.pi * (span - start) / minutes) ** 2 * np.exp(-2.0 * (span - start) / minutes)
            shape /= max(float(shape.max()), 1e-9)
            burst[span] = np.maximum(burst[span], peak * shape)
            market_z[span] += (-1.0 if long else 1.0) * 1.6 * shape
    coins = build_coins(cfg)
    market = Market(cfg, coins, market_z, regime, burst, bursts, {}, {}, [])
    for v_index, venue in enumerate(VENUES):
        symbols = [li.symbol for c in coins for li in c.listings if li.exchange == venue]
        rows, starts, ends = _connections(cfg, v_index, venue, symbols)
        market.coverage += rows
        market.gap_starts[venue] = np.array(starts, dtype=np.int64)
        market.gap_ends[venue] = np.array(ends, dtype=np.int64)
    return market


def _connections(
    cfg: MarketConfig, v_index: int, venue: str, symbols: list[str]
) -> tuple[list[tuple[object, ...]], list[int], list[int]]:
    """Connected intervals: binance rotates daily, drops happen, now and then an outage of minutes to hours."""
    rng = rng_for(cfg, 3, v_index)
    rows: list[tuple[object, ...]] = []
    starts: list[int] = []
    ends: list[int] = []
    t = cfg.start_ms
    while t < cfg.end_ms:
        life = max(5 * MINUTE_MS, int(rng.exponential((14 if venue == "binance" else 20) * HOUR_MS)))
        reason = _DROP_REASONS[int(rng.integers(0, len(_DROP_REASONS)))]
        if venue == "binance" and life >= DAY_MS:
            life, reason = DAY_MS, "24h connection limit"
        outage = int(np.clip(rng.lognormal(np.log(25 * MINUTE_MS), 1.0), 3 * MINUTE_MS, 6 * HOUR_MS))
        pause = outage if rng.random() < 0.07 else int(rng.integers(800, 6_000))
        lag = 30_000 if reason == "silence watchdog" else int(rng.integers(0, 1_500))
        connection_id = f"market{cfg.seed}-{venue}-{t}"
        closed = t + life
        if closed >= cfg.end_ms:
            rows.append((connection_id, venue, symbols, cfg.source, _dt(t), _dt(cfg.end_ms), None, ""))
            break
        rows.append((connection_id, venue, symbols, cfg.source, _dt(t), _dt(closed - lag), _dt(closed), reason))
        starts.append(closed - lag)
        ends.append(closed + pause)
        t = closed + pause
    return rows, starts, ends


def instrument_rows(market: Market) -> list[tuple[object, ...]]:
    """`instruments` rows (exchange, symbol, base, quote, contract_type, multiplier, size_unit,
    contract_size, listed_at, updated_at) for every listing."""
    listed, updated = _dt(market.cfg.start_ms), _dt(market.cfg.end_ms)
    return [
        (li.exchange, li.symbol, c.base, "USDT", "perpetual", Decimal(li.multiplier), li.size_unit,
         li.contract_size, listed, updated)
        for c in market.coins
        for li in c.listings
    ]  # fmt: skip
