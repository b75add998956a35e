# The C twin of common/live_scripts.py `python_write_argv` (common/_live_native.c); the Python function is the rule.
from collections.abc import Callable, Iterable
from decimal import Decimal

from common.events import Liquidation, Side

def bind(
    cls: type[Liquidation],
    field_names: tuple[str, ...],
    side: type[Side],
    decimal: type[Decimal],
    python_write_argv: Callable[[Iterable[Liquidation], int, int], tuple[list[str], int]],
    bucket_ms: int,
    keep_ms: int,
    plain: str,
) -> None: ...
def write_argv(events: Iterable[Liquidation], cutoff_ms: int, now_ms: int) -> tuple[list[str], int]: ...
