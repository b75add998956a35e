from decimal import Decimal
from pathlib import Path

import pytest

from collector.storage.spool import Batch, Spool, SpoolFull, decode_batch, encode_batch
from common.events import Cascade, Side
from tests.storage.factories import T0, candle, liq, status


def _batch(i: int, n: int = 3) -> Batch:
    return Batch(liquidations=[liq(time_ms=T0 + i * 1000 + k, qty=f"0.{k + 1}") for k in range(n)])


def test_batch_codec_round_trips_every_field() -> None:
    ev = liq("binance", qty="0.014", price="97354.60")
    ev.cascade_id = 42
    cascade = Cascade(7, "BTCUSDT", Side.SHORT, T0, T0 + 5, 3, Decimal("1.5"), Decimal("75000.5"), {"bybit": 3})
    batch = Batch(
        [ev], [candle(closed=True)], [status("disconnected", reason="server closed 1006")], [cascade], [(7, 11, T0)]
    )
    assert decode_batch(encode_batch(batch)) == batch


def test_append_then_replay_in_order_then_clear(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    for i in range(5):
        spool.append(_batch(i))
    assert spool.pending_events == 15 and spool.state()["state"] == "pending"
    got: list[int] = []
    offset = 0
    while offset < spool.bytes:
        chunk, offset = spool.read_chunk(offset, 4)  # merges up to ~4 events: batches of 3 -> 2 per chunk
        got.extend(e.time_ms for e in chunk.liquidations)
    assert got == [T0 + i * 1000 + k for i in range(5) for k in range(3)]
    # a new process finds the same content
    again = Spool(tmp_path, 1 << 20)
    assert (again.pending_events, again.bytes) == (15, spool.bytes)
    again.clear()
    assert again.empty and Spool(tmp_path, 1 << 20).empty


def test_bound_refuses_instead_of_dropping(tmp_path: Path) -> None:
    one = len(encode_batch(_batch(0))) + 1
    spool = Spool(tmp_path, one * 2 + 10)
    spool.append(_batch(0))
    spool.append(_batch(1))
    with pytest.raises(SpoolFull):
        spool.append(_batch(2))
    assert spool.pending_events == 6 and spool.full_refusals == 1
    assert Spool(tmp_path, one * 2 + 10).pending_events == 6


def test_torn_last_line_after_a_crash_is_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(_batch(0))
    spool.append(_batch(1))
    good = spool.bytes
    with spool.path.open("ab") as f:
        f.write(encode_batch(_batch(2)).encode()[:57])  # killed in the middle of a write
    recovered = Spool(tmp_path, 1 << 20)
    assert recovered.bytes == good == spool.path.stat().st_size
    assert recovered.pending_events == 6
    chunk, _ = recovered.read_chunk(0, 100)
    assert [e.time_ms for e in chunk.liquidations] == [T0 + i * 1000 + k for i in range(2) for k in range(3)]
    recovered.append(_batch(3))  # appends continue on a clean line boundary
    chunk, end = recovered.read_chunk(0, 100)
    assert len(chunk.liquidations) == 9 and end == recovered.bytes
