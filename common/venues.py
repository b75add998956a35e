"""The one registry of venues: what the collector, the app and the CLI know of each exchange.

Everything outside a venue's own files (`collector/exchanges/<name>.py`, `collector/instruments/<name>.py`)
reads venue facts from here: the names LIQ_EXCHANGES accepts, the real endpoints (the only hosts
whose events are labelled `live`), whether the venue's liquidation feed is complete or sampled,
its price basis and size unit (the README's table of venues says the same, with sources), and the
colour and label the pages use. A sixth venue is its two files plus one entry here and one line in
each of the two collector registries (`collector.exchanges.ADAPTERS`, `collector.instruments.VENUES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Venue:
    name: str  # lower case, as LIQ_EXCHANGES and the stored rows spell it
    label: str  # as users read it
    color: str  # chart colour
    ws_url: str  # the real public WebSocket endpoint (LIQ_<NAME>_WS_URL overrides it)
    rest_url: str  # the real public REST base URL, for the instrument list (LIQ_<NAME>_REST_URL)
    sampled: bool  # True: the venue pushes a sample of its liquidations, so its figures are a lower bound
    sampling: str  # how the feed samples, in the venue's terms (empty for a complete tape)
    price_basis: str  # which price the USD value uses
    size_unit: str  # what the venue's size counts, and how it becomes base units

    @property
    def ws_host(self) -> str:
        return urlsplit(self.ws_url).hostname or ""

    @property
    def env_prefix(self) -> str:
        return f"LIQ_{self.name.upper()}"


VENUES: dict[str, Venue] = {
    v.name: v
    for v in (
        Venue(
            name="binance",
            label="Binance",
            color="#f0b90b",
            ws_url="wss://fstream.binance.com/market",
            rest_url="https://fapi.binance.com",
            sampled=True,
            sampling="at most one liquidation per symbol per second",
            price_basis="average fill price `ap` (else the order price `p`)",
            size_unit="base asset (filled quantity `z`)",
        ),
        Venue(
            name="bybit",
            label="Bybit",
            color="#4b5cc4",
            ws_url="wss://stream.bybit.com/v5/public/linear",
            rest_url="https://api.bybit.com",
            sampled=False,
            sampling="",
            price_basis="bankruptcy price `p`",
            size_unit="base asset (`v`)",
        ),
        Venue(
            name="okx",
            label="OKX",
            color="#8c8c8c",
            ws_url="wss://ws.okx.com/ws/v5/public",  # port 8443 is retired (OKX changelog, 20261031)
            rest_url="https://www.okx.com",
            sampled=True,
            sampling="at most one liquidation per contract per second",
            price_basis="bankruptcy price `bkPx`",
            size_unit="contracts (`sz`) x contract value `ctVal`",
        ),
        Venue(
            name="gate",
            label="Gate",
            color="#17b57f",
            ws_url="wss://fx-ws.gateio.ws/v4/ws/usdt",
            rest_url="https://api.gateio.ws",
            sampled=True,
            sampling="at most one liquidation per contract per second",
            price_basis="liquidation order price `price` (the average fill `fill_price` when an item carries it)",
            size_unit="contracts (`size`, signed: negative = a long liquidated) x `quanto_multiplier`",
        ),
        Venue(
            name="bitget",
            label="Bitget",
            color="#00c6d7",
            ws_url="wss://ws.bitget.com/v3/ws/public",
            rest_url="https://api.bitget.com",
            sampled=True,
            sampling="the largest long and the largest short liquidation per pair per second",
            price_basis="liquidation price `price`",
            size_unit="quote amount (`amount`, USDT or USDC): base quantity = amount / price",
        ),
    )
}

NAMES: tuple[str, ...] = tuple(VENUES)
# WebSocket hosts only: events from them are `live`. REST hosts never label events.
LIVE_HOSTS = frozenset(v.ws_host for v in VENUES.values())


def label(name: str) -> str:
    v = VENUES.get(name)
    return v.label if v is not None else name


def color(name: str) -> str:
    v = VENUES.get(name)
    return v.color if v is not None else "#999999"


def is_sampled(name: str) -> bool:
    v = VENUES.get(name)
    return v.sampled if v is not None else False


def sampled_among(names: tuple[str, ...] | list[str]) -> list[str]:
    """The sampled venues among `names`, in registry order."""
    return [n for n in NAMES if n in names and VENUES[n].sampled]


def lower_bound_note(names: tuple[str, ...] | list[str]) -> str:
    """The caption every figure that includes a sampled venue carries; empty when none is sampled.

    `Binance and OKX figures are lower bounds: Binance sends at most one liquidation per symbol
    per second; OKX at most one liquidation per contract per second.`"""
    sampled = sampled_among(names)
    if not sampled:
        return ""
    labels = [VENUES[n].label for n in sampled]
    who = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
    noun = "a lower bound" if len(labels) == 1 else "lower bounds"
    rules = "; ".join(f"{VENUES[n].label} sends {VENUES[n].sampling}" for n in sampled)
    return f"{who} figures are {noun}: {rules}."
