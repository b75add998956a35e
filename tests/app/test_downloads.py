"""Downloads: CSV and Parquet of tables and of streamed queries hold exactly the filtered rows."""

from __future__ import annotations

import csv
import gc
import io
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import sync_playwright
from psycopg import sql
from psycopg_pool import ConnectionPool

from app import exports
from app.data import explorer
from app.data import export as downloads
from app.data.connections import open_pool
from app.query import Query
from common.config import Settings
from common.events import Liquidation
from tests.app.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    app_server,
    assert_no_errors,
    wait_idle,
    wait_until_done,
)
from tests.app.browser import app_env as app_env_for_browser
from tests.app.seed import (
    HISTORY_DAYS,
    HISTORY_RANGE,
    HISTORY_START_MS,
    app_env,
    fq,
    history_select,
    no_exceptions,
    open_app,
    seed_history,
)

END_MS = HISTORY_START_MS + HISTORY_DAYS * 86_400_000
FILTER_TEXT = "BTCUSDT; bybit; SHORT; minimum 1000 USD"


@pytest.fixture
def seeded(settings: Settings) -> list[Liquidation]:
    return seed_history(settings.database_url)


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    p = open_pool(str(settings.app_database_url))
    yield p
    p.close()


def _filter() -> tuple[Query, int, int]:
    q = fq("BTCUSDT", ("bybit",), side="SHORT", min_usd=Decimal(1000))
    return q, HISTORY_START_MS + 3_600_000, END_MS - 3_600_000


def _expected(seeded: list[Liquidation]) -> list[Liquidation]:
    rows = history_select(seeded, HISTORY_START_MS + 3_600_000, END_MS - 3_600_000, exchanges=("bybit",), side="SHORT")
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
    query, params = explorer.explorer_export_query(*_filter())
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
    query, params = explorer.explorer_export_query(*_filter())
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


def test_prepared_export_is_a_file_that_goes_with_its_object(
    seeded: list[Liquidation], pool: ConnectionPool, tmp_path: Path
) -> None:
    # What Explorer's Prepare button runs: the rows streamed into a file on disk.
    query, params = explorer.explorer_export_query(*_filter())
    prepared = exports.prepare_export(pool, query, params, "csv", filter_description=FILTER_TEXT, directory=tmp_path)
    assert prepared.path.parent == tmp_path and prepared.available()
    assert prepared.rows == len(_expected(seeded)) and prepared.size == prepared.path.stat().st_size
    header, rows = _parse_csv(prepared.read())  # what the Download button hands Streamlit on click
    assert [int(r["event_key"]) for r in rows] == [e.key for e in _expected(seeded)]
    path = prepared.path
    del prepared
    gc.collect()
    assert not path.exists() and not list(tmp_path.iterdir())  # no file outlives its session's object

    stale = exports.prepare_export(pool, query, params, "parquet", filter_description="", directory=tmp_path)
    os.utime(stale.path, (time.time() - 7200, time.time() - 7200))
    fresh = exports.prepare_export(pool, query, params, "csv", filter_description="", directory=tmp_path)
    assert not stale.available() and fresh.available()  # files older than EXPORT_MAX_AGE_S are swept


def test_export_to_path_and_empty_results(pool: ConnectionPool, clean_db: str, tmp_path: Path) -> None:
    query, params = explorer.explorer_export_query(*_filter())
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
    for page, minimum in (("heatmap", 4), ("cascades", 4), ("analyses", 10), ("explorer", 2)):
        at = open_app(page, HISTORY_RANGE)
        no_exceptions(at)
        labels = [b.proto.label for b in at.get("download_button")]
        assert len(labels) >= minimum, (page, labels)
        assert sum("CSV" in label for label in labels) == sum("Parquet" in label for label in labels), (page, labels)


def _explorer_expected(seeded: list[Liquidation]) -> list[Liquidation]:
    """What Explorer's default view of HISTORY_RANGE selects (BTCUSDT, both venues, live only), oldest first."""
    return sorted(history_select(seeded), key=lambda e: (e.time_ms, e.key))


def test_explorer_exports_everything_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, seeded: list[Liquidation], tmp_path: Path
) -> None:
    app_env(monkeypatch, settings)
    monkeypatch.setattr(exports, "_export_dir_path", tmp_path)
    at = open_app("explorer", HISTORY_RANGE)
    at.button(key="x_next").click().run()  # reruns of every kind: no export runs
    at.button(key="x_prev").click().run()
    no_exceptions(at)
    assert not list(tmp_path.iterdir())
    assert [b.label for b in at.button if b.label.startswith("Prepare")] == [
        "Prepare all as CSV",
        "Prepare all as Parquet",
    ]

    at.button(key="x_all_dl-csv-prepare").click().run()
    no_exceptions(at)
    assert len(list(tmp_path.iterdir())) == 1
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download all as CSV" in labels and "Prepare all as CSV" not in [b.label for b in at.button]
    prepared = at.session_state["x_all_dl-csv-prepared"]
    _, rows = _parse_csv(prepared.read())
    assert [int(r["event_key"]) for r in rows] == [e.key for e in _explorer_expected(seeded)]
    del prepared
    at.run()
    assert len(list(tmp_path.iterdir())) == 1  # prepared once, offered on every rerun

    at.number_input(key="f_min_usd").set_value(100_000).run()  # another filter: prepare again
    no_exceptions(at)
    assert "Prepare all as CSV" in [b.label for b in at.button]
    assert not list(tmp_path.iterdir())  # the old file went with its filter


@pytest.mark.browser
def test_explorer_full_download_works_in_chromium(
    settings: Settings, seeded: list[Liquidation], tmp_path: Path
) -> None:
    assert CHROMIUM.is_file(), "Debian's chromium is required: apt-get install chromium"
    server_tmp = tmp_path / "server-tmp"
    server_tmp.mkdir()
    expected = _explorer_expected(seeded)
    query = "&".join(f"{k}={v}" for k, v in HISTORY_RANGE.items())
    with (
        app_server(app_env_for_browser(settings, TMPDIR=str(server_tmp)), log_name="download-server.log") as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1400}).new_page()
            page.goto(f"{url}/explorer?{query}", wait_until="domcontentloaded")
            wait_until_done(page, "Explorer")
            for label, fmt in (("CSV", "csv"), ("Parquet", "parquet")):
                page.get_by_role("button", name=f"Prepare all as {label}").click()
                download_button = page.get_by_role("button", name=f"Download all as {label}")
                download_button.wait_for(timeout=60_000)
                wait_idle(page)
                exports = [f for d in server_tmp.glob("liq-exports-*") for f in d.iterdir()]
                assert len(exports) == (1 if fmt == "csv" else 2), exports  # on disk, not in a session's memory
                with page.expect_download(timeout=60_000) as info:
                    download_button.click()
                saved = tmp_path / f"all.{fmt}"
                info.value.save_as(saved)
                assert info.value.suggested_filename == f"liquidations.{fmt}"
                if fmt == "csv":
                    header, rows = _parse_csv(saved.read_bytes())
                    assert header.startswith("# liquidation-aggregator export | filter: target BTCUSDT")
                    assert [int(r["event_key"]) for r in rows] == [e.key for e in expected]
                else:
                    table = pq.read_table(saved)
                    assert table.column("event_key").to_pylist() == [e.key for e in expected]
                assert_no_errors(page, f"explorer {fmt}")
            page.screenshot(path=str(ARTIFACTS / "explorer-prepared-downloads.png"), full_page=True)
        finally:
            browser.close()
    assert not list(server_tmp.iterdir())  # the server removed its export directory on exit
