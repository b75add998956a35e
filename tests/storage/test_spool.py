import errno
import os
from decimal import Decimal
from pathlib import Path

import pytest

from collector.storage.spool import Batch, Spool, SpoolError, SpoolFull, decode_batch, encode_batch
from common.events import Cascade, Side
from tests.e2e.small_fs import small_filesystem
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
        chunk, offset, bad = spool.read_chunk(offset, 4)
        assert bad == []  # merges up to ~4 events: batches of 3 -> 2 per chunk
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
    chunk, _, _ = recovered.read_chunk(0, 100)
    assert [e.time_ms for e in chunk.liquidations] == [T0 + i * 1000 + k for i in range(2) for k in range(3)]
    recovered.append(_batch(3))  # appends continue on a clean line boundary
    chunk, end, _ = recovered.read_chunk(0, 100)
    assert len(chunk.liquidations) == 9 and end == recovered.bytes


def _lines_decode(spool: Spool) -> int:
    """Every line of the file decodes; returns the events they hold (the file is consistent)."""
    data = spool.path.read_bytes()
    assert len(data) == spool.bytes and (not data or data.endswith(b"\n"))
    return sum(len(decode_batch(line)) for line in data.splitlines())


def test_a_full_disk_refuses_the_append_and_leaves_the_file_consistent(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", "64k") as fs:
        filler = fs / "filler"
        filler.write_bytes(b"\0" * 24_576)  # 24 KiB taken, freed later
        spool = Spool(fs, 1 << 30)
        appended = 0
        with pytest.raises(SpoolError) as refused:
            for i in range(10_000):
                spool.append(_batch(i, n=20))
                appended += 1
        assert refused.value.errno == errno.ENOSPC and appended > 10
        assert "ENOSPC" in spool.error and spool.state()["error"] == spool.error
        assert _lines_decode(spool) == spool.pending_events == appended * 20
        with pytest.raises(SpoolError):  # still full: still consistent
            spool.append(_batch(0, n=20))
        assert _lines_decode(spool) == appended * 20
        filler.unlink()  # space comes back: appends resume where they stopped
        spool.append(_batch(appended, n=20))
        assert spool.error == "" and _lines_decode(spool) == (appended + 1) * 20
        again = Spool(fs, 1 << 30)
        assert (again.pending_events, again.bytes) == (spool.pending_events, spool.bytes)
        chunk, _, bad = again.read_chunk(0, 1 << 30)
        assert bad == [] and len(chunk.liquidations) == (appended + 1) * 20


def test_whatever_a_failed_append_left_behind_is_overwritten(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(_batch(0))
    with spool.path.open("ab") as f:  # a torn append the truncation could not remove
        f.write(b'{"n":3,"l":[["bybit"')
    spool.append(_batch(1))
    assert _lines_decode(spool) == 6


def test_a_line_that_no_longer_decodes_is_handed_back_not_raised(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(_batch(0))
    with spool.path.open("ab") as f:
        f.write(b'{"n":1,"l":[["bybit","BTCUSDT","SIDEWAYS"]],"c":[],"s":[],"x":[],"f":[]}\n')
    reopened = Spool(tmp_path, 1 << 20)  # a whole JSON line: recovery keeps it
    reopened.append(_batch(2))
    chunk, end, bad = reopened.read_chunk(0, 100)
    assert len(chunk.liquidations) == 6 and end == reopened.bytes
    assert len(bad) == 1 and "SIDEWAYS" in bad[0]


@pytest.mark.parametrize("case", ["under a file", "read-only filesystem"])
def test_a_spool_directory_that_cannot_be_used_fails_at_start(tmp_path: Path, case: str) -> None:
    if case == "under a file":
        (tmp_path / "file").write_text("x")
        with pytest.raises(OSError):
            Spool(tmp_path / "file" / "spool", 1 << 20)
        return
    with small_filesystem(tmp_path / "ro", "64k", read_only=True) as fs:
        with pytest.raises(OSError) as refused:
            Spool(fs / "spool", 1 << 20)
        assert refused.value.errno == errno.EROFS
        assert not os.access(fs, os.W_OK) or refused.value.errno == errno.EROFS
