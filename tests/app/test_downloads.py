"""Downloads: CSV and Parquet of tables and of streamed queries hold exactly the filtered rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from app import downloads
from app.data import explorer
from app.data.connections import open_pool
from app.data.scope import Scope
from common.config import Settings
from common.events import Liquidation
from tests.app.seed import (
    APP2_DAYS,
    APP2_RANGE,
    APP2_START_MS,
    app2_select,
    app_env,
    no_exceptions,
    open_app,
    seed_app2,
)

END_MS = APP2_START_MS + APP2_DAYS * 86_400_000
FILTER_TEXT = "BTCUSDT; bybit; SHORT; minimum 1000 USD"


@pytest.fixture
def seeded(settings: Settings) -> list[Liquidation]:
    return seed_app2(settings.database_url)


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    p = open_pool(str(settings.app_database_url))
    yield p
    p.close()


def _filter() -> explorer.ExplorerFilter:
    scope = Scope(APP2_START_MS + 3_600_000, END_MS - 3_600_000, "BTCUSDT", ("bybit",), False)
    return explorer.ExplorerFilter(scope, side="SHORT", min_usd=Decimal(1000))


def _expected(seeded: list[Liquidation]) -> list[Liquidation]:
    rows = app2_select(seeded, APP2_START_MS + 3_600_000, END_MS - 3_600_000, exchanges=("bybit",), side="SHORT")
    return sorted((e for e in rows if e.value_usd >= 1000), key=lambda e: (e.time_ms, e.key))


def _parse_csv(data: bytes) -> tuple[str, list[dict[str, str]]]:
    text = data.decode()
    header, _, body = text.partition("\n")
    return header, list(csv.DictReader(io.StringIO(body)))


def _iso(ms: int) -> str:
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("chunk_rows", [7, 50_000])
def test_streamed_csv_holds_exactly_the_filtered_rows(
    seeded: list[Liquidation], pool: ConnectionPool, chunk_rows: int
) -> None:
    query, params = explorer.explorer_export_query(_filter())
    out = io.BytesIO()
    n = downloads.export_query(pool, query, params, out, "csv", filter_description=FILTER_TEXT, chunk_rows=chunk_rows)
    header, rows = _parse_csv(out.getvalue())
    expected = _expected(seeded)
    assert n == len(expected) == len(rows) > 20
    assert header.startswith("# liquidation-aggregator export | filter: " + FILTER_TEXT)
    assert header.endswith("UTC | times are UTC")
    for row, e in zip(rows, expected, strict=True):
        assert int(row["event_key"]) == e.key
        assert Decimal(row["value_usd"]) == e.value_usd
        assert Decimal(row["quantity"]) == e.quantity and Decimal(row["price"]) == e.price
        assert row["time"] == _iso(e.time_ms)
        assert row["side"] == "SHORT" and row["exchange"] == "bybit" and row["source"] == "live"


@pytest.mark.parametrize("chunk_rows", [7, 50_000])
def test_streamed_parquet_holds_exactly_the_filtered_rows(
    seeded: list[Liquidation], pool: ConnectionPool, chunk_rows: int
) -> None:
    query, params = explorer.explorer_export_query(_filter())
    out = io.BytesIO()
    n = downloads.export_query(
        pool, query, params, out, "parquet", filter_description=FILTER_TEXT, chunk_rows=chunk_rows
    )
    table = pq.read_table(io.BytesIO(out.getvalue()))
    expected = _expected(seeded)
    assert n == table.num_rows == len(expected)
    assert table.schema.metadata[downloads.META_FILTER].decode() == FILTER_TEXT
    assert table.schema.field("time").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("value_usd").type == downloads.DECIMAL_TYPE
    assert table.column("event_key").to_pylist() == [e.key for e in expected]
    assert table.column("value_usd").to_pylist() == [e.value_usd for e in expected]
    assert [int(t.timestamp() * 1000) for t in table.column("time").to_pylist()] == [e.time_ms for e in expected]
    if chunk_rows == 7:
        assert pq.ParquetFile(io.BytesIO(out.getvalue())).num_row_groups == -(-n // 7)  # one row group per chunk


def test_the_deferred_download_spools_to_a_file(seeded: list[Liquidation], pool: ConnectionPool) -> None:
    # What st.download_button calls on click: the export streamed into a temporary file.
    query, params = explorer.explorer_export_query(_filter())
    with downloads._spooled_export(pool, query, params, "csv", FILTER_TEXT) as spooled:
        header, rows = _parse_csv(spooled.read())
    assert [int(r["event_key"]) for r in rows] == [e.key for e in _expected(seeded)]


def test_export_to_path_and_empty_results(pool: ConnectionPool, clean_db: str, tmp_path: Path) -> None:
    query, params = explorer.explorer_export_query(_filter())
    assert downloads.export_to_path(pool, query, params, tmp_path / "x.csv", filter_description="nothing") == 0
    header, rows = _parse_csv((tmp_path / "x.csv").read_bytes())
    assert "filter: nothing" in header and rows == []
    assert downloads.export_to_path(pool, query, params, tmp_path / "x.parquet", filter_description="nothing") == 0
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.num_rows == 0 and "value_usd" in table.column_names
    assert not list(tmp_path.glob(".*.part"))
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        downloads.export_to_path(pool, query, params, tmp_path / "x.xlsx", filter_description="")
    with pytest.raises(ValueError, match="unknown export format"):
        downloads.export_query(pool, sql.SQL("SELECT 1"), None, io.BytesIO(), "xml", filter_description="")  # type: ignore[arg-type]


def test_table_downloads_round_trip() -> None:
    frame = pd.DataFrame(
        {
            "time": [datetime(2026, 11, 1, 12, 0, 1, 234000, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)],
            "value_usd": [Decimal("1234567.891234"), Decimal("0.000001")],
            "events": [3, 4],
            "counts": [{"bybit": 2, "binance": 1}, {"bybit": 4}],
            "exchanges": [["binance", "bybit"], ["bybit"]],
            "share": [12.5, None],
        }
    )
    header, rows = _parse_csv(
        downloads.frame_to_csv(frame, filter_description="line one\nline two", generated="20261125 00:00:00 UTC")
    )
    assert (
        header
        == "# liquidation-aggregator export | filter: line one line two | generated 20261125 00:00:00 UTC | times are UTC"
    )
    assert [r["time"] for r in rows] == ["2026-11-01T12:00:01.234Z", "2026-11-02T00:00:00.000Z"]
    assert [Decimal(r["value_usd"]) for r in rows] == list(frame["value_usd"])
    assert rows[0]["counts"] == '{"binance":1,"bybit":2}' and rows[0]["exchanges"] == "binance,bybit"

    table = pq.read_table(io.BytesIO(downloads.frame_to_parquet(frame, filter_description="f")))
    assert table.schema.metadata[downloads.META_FILTER] == b"f"
    assert table.column("value_usd").to_pylist() == list(frame["value_usd"])
    assert table.schema.field("time").type == pa.timestamp("ms", tz="UTC")
    assert table.column("time").to_pylist()[0] == datetime(2026, 11, 1, 12, 0, 1, 234000, tzinfo=UTC)
    assert table.column("events").to_pylist() == [3, 4]


def test_every_page_table_offers_csv_and_parquet(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation]
) -> None:
    app_env(monkeypatch, settings)
    for page, minimum in (("heatmap", 4), ("cascades", 4), ("analyses", 10), ("explorer", 4)):
        at = open_app(page, APP2_RANGE)
        no_exceptions(at)
        labels = [b.proto.label for b in at.get("download_button")]
        assert len(labels) >= minimum, (page, labels)
        assert sum("CSV" in label for label in labels) == sum("Parquet" in label for label in labels), (page, labels)
