# The C twins of common/events.py (common/_events_native.c); the Python functions are the rule.
from collections.abc import Callable
from decimal import Decimal

from common.events import Liquidation, Side

def bind(
    cls: type[Liquidation],
    field_names: tuple[str, ...],
    key: Callable[..., int],
    constructor: Callable[..., Liquidation],
    canonical_text: Callable[[Decimal], str],
    decimal: type[Decimal],
) -> None: ...
def canonical_text(amount: Decimal) -> str: ...
def dedup_key_of_texts(
    exchange: str, symbol: str, time_ms: int, side: str, price: str, quantity: str, extra: str = ""
) -> int: ...
def new_liquidation(
    exchange: str,
    symbol: str,
    side: Side,
    quantity: object,
    price: object,
    value_usd: object,
    time_ms: int,
    received_ms: int,
    raw_side: str,
    source: str,
    sampled: bool,
    key: int,
) -> Liquidation: ...
