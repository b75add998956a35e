# The C twins of collector/validation.py (collector/_validation_native.c); the Python functions are the rule.
from collections.abc import Callable
from decimal import Decimal

def bind(
    decimal: type[Decimal],
    prices: dict[str, tuple[str, Decimal]],
    prices_max: int,
    amount_text: Callable[[str], tuple[str, Decimal]],
    price_text: Callable[[str], tuple[str, Decimal]],
    check_time: Callable[[int, int, int | None], int],
    check_ms_text: Callable[[str, str, int, int | None], int],
) -> None: ...
def amount_text(text: str) -> tuple[str, Decimal]: ...
def price_text(text: str) -> tuple[str, Decimal]: ...
def check_time(time_ms: int, received_ms: int, max_age_ms: int | None) -> int: ...
def check_ms_text(text: str, name: str, received_ms: int, max_age_ms: int | None) -> int: ...
