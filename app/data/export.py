"""The files the app writes: tables it holds, and streaming exports of big queries from TimescaleDB.

Two paths, one file layout (app/downloads.py draws the buttons, app/exports.py the streamed ones):

- `frame_to_csv` / `frame_to_parquet` turn a table a page already holds into file bytes.
- `export_query(...)` runs a query through a server-side cursor and writes it to a file in chunks
  (`csv` rows appended per chunk, one Parquet row group per chunk), so the query's memory stays
  bounded by one chunk however many rows it selects. app/exports.py builds Explorer's
  "Prepare" and "Download all" buttons on it.

Streamlit 1.67 keeps every download in memory: `st.download_button` accepts str, bytes,
`BytesIO`, `BufferedReader` or `RawIOBase` (not a `tempfile.TemporaryFile`, a `BufferedRandom`:
that is refused with MediaFileStorageError), or a callable returning one, run on click; it reads
any of them into one `bytes` object (`MemoryMediaFileStorage`) and serves it under /media/. So a
finished export is held once, while it is served; its rows never are. No button exists for a
session that has not passed the gate (app/gate.py), so nothing is generated for one.

Layout: CSV starts with one `# ` header line naming the filter and the generation time, then a
normal header row; timestamps are ISO 8601 UTC with a `Z`. Parquet carries the same text in the
schema metadata (`liquidation_aggregator.filter`, `...generated_utc`) and timestamps as
`timestamp[ms, tz=UTC]`. Decimal amounts stay exact (`decimal128(38, 18)`), never floats.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from app.data.connections import db_errors

Format = Literal["csv", "parquet"]

CHUNK_ROWS = 50_000
_NUMERIC_OID = 1700
_ZERO = timedelta(0)
DECIMAL_TYPE = pa.decimal128(38, 18)
_QUANTUM = Decimal(1).scaleb(-18)
META_FILTER = b"liquidation_aggregator.filter"
META_GENERATED = b"liquidation_aggregator.generated_utc"

# PostgreSQL type OIDs we meet in our tables -> Arrow types; anything else becomes a string.
_ARROW_BY_OID: dict[int, pa.DataType] = {
    16: pa.bool_(),  # boolean
    20: pa.int64(),  # bigint
    21: pa.int16(),  # smallint
    23: pa.int32(),  # integer
    700: pa.float32(),  # real
    701: pa.float64(),  # double precision
    1700: DECIMAL_TYPE,  # numeric
    1184: pa.timestamp("ms", tz="UTC"),  # timestamptz
    1114: pa.timestamp("ms", tz="UTC"),  # timestamp (our sessions run in UTC)
}


class _NumericAsText(TextLoader):
    """numeric columns as PostgreSQL's own exact text: no Decimal per value on the export path."""


def generated_stamp(now: datetime | None = None) -> str:
    """`YYYYMMDD HH:MM:SS UTC`, the users' layout."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


def header_line(filter_description: str, generated: str) -> str:
    """The first CSV line: what the file contains (one line, whatever the filter text holds)."""
    text = " ".join(filter_description.split())
    return f"# liquidation-aggregator export | filter: {text} | generated {generated} | times are UTC\n"


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, pd.Timestamp):
        return "" if pd.isna(value) else _iso_utc(value.to_pydatetime())
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _iso_utc(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _arrow_value(value: Any, typ: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_decimal(typ):
        return Decimal(value).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)
    if pa.types.is_string(typ) and not isinstance(value, str):
        return _csv_cell(value)
    return value


def _arrow_type_for_series(series: pd.Series) -> pa.DataType:
    sample = series.dropna()
    first = sample.iloc[0] if len(sample) else None
    if isinstance(first, Decimal):
        return DECIMAL_TYPE
    if isinstance(first, (list, tuple, dict)):
        return pa.string()
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series.dtype):
        return pa.timestamp("ms", tz="UTC")
    if isinstance(first, datetime):
        return pa.timestamp("ms", tz="UTC")
    inferred = pa.Array.from_pandas(series).type
    return pa.string() if pa.types.is_null(inferred) else inferred


def _frame_to_table(df: pd.DataFrame, metadata: dict[bytes, bytes]) -> pa.Table:
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name in df.columns:
        series = df[name]
        typ = _arrow_type_for_series(series)
        if pa.types.is_timestamp(typ):
            values = pd.to_datetime(series, utc=True)
            arrays.append(pa.Array.from_pandas(values).cast(typ))
        elif pa.types.is_decimal(typ) or pa.types.is_string(typ):
            arrays.append(pa.array([_arrow_value(v, typ) for v in series.tolist()], type=typ))
        else:
            arrays.append(pa.Array.from_pandas(series, type=typ))
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(metadata)


def _metadata(filter_description: str, generated: str) -> dict[bytes, bytes]:
    return {META_FILTER: filter_description.encode(), META_GENERATED: generated.encode()}


def frame_to_csv(df: pd.DataFrame, *, filter_description: str, generated: str | None = None) -> bytes:
    """A table as CSV bytes: header line, column names, exact decimals, UTC ISO timestamps."""
    out = io.StringIO()
    out.write(header_line(filter_description, generated or generated_stamp()))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([str(c) for c in df.columns])
    for row in df.itertuples(index=False, name=None):
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue().encode()


def frame_to_parquet(df: pd.DataFrame, *, filter_description: str, generated: str | None = None) -> bytes:
    """A table as Parquet bytes with the filter text in the schema metadata."""
    table = _frame_to_table(df, _metadata(filter_description, generated or generated_stamp()))
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def safe_stem(name: str) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name.strip())
    return stem.strip("_") or "export"


def _schema_for(description: Sequence[Any], metadata: dict[bytes, bytes]) -> pa.Schema:
    return pa.schema(
        [pa.field(col.name, _ARROW_BY_OID.get(col.type_code, pa.string())) for col in description],
        metadata=metadata,
    )


def _batch(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    columns = []
    for i, fld in enumerate(schema):
        values = [row[i] for row in rows]
        if pa.types.is_decimal(fld.type):
            columns.append(_decimal_array(values))
        elif pa.types.is_string(fld.type):
            try:
                columns.append(pa.array(values, type=fld.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # arrays, JSON: as their CSV text
                columns.append(pa.array([_arrow_value(v, fld.type) for v in values], type=fld.type))
        else:
            columns.append(pa.array(values, type=fld.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _decimal_array(values: list[Any]) -> pa.Array:
    # Numerics arrive as PostgreSQL's exact text (see _NumericAsText): one vectorised cast.
    try:
        return pc.cast(pa.array(values, type=pa.string()), DECIMAL_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # more than 18 decimals: round those in Python
        return pa.array([_arrow_value(v, DECIMAL_TYPE) for v in values], type=DECIMAL_TYPE)


# Column types the csv module writes correctly as they come (None becomes an empty field).
_CSV_AS_IS = frozenset({16, 20, 21, 23, 25, 700, 701, 1043, _NUMERIC_OID})


def _csv_converters(description: Sequence[Any]) -> list[Callable[[Any], Any] | None]:
    """One converter per column (None: as is), chosen once from the column type, not per value.
    Numerics arrive as PostgreSQL's exact text (see _NumericAsText)."""
    out: list[Callable[[Any], Any] | None] = []
    for col in description:
        if col.type_code in _CSV_AS_IS:
            out.append(None)
        elif col.type_code in (1184, 1114):
            out.append(_iso_utc_or_empty)
        else:
            out.append(_csv_cell)
    return out


def _iso_utc_or_empty(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.utcoffset() == _ZERO:  # the export session runs in UTC: the common, fast case
        return value.isoformat(timespec="milliseconds")[:23] + "Z"
    return _iso_utc(value)


def _csv_rows(rows: list[tuple[Any, ...]], converters: list[Callable[[Any], Any] | None]) -> Iterable[list[Any]]:
    active = [(i, conv) for i, conv in enumerate(converters) if conv is not None]
    for row in rows:
        out = list(row)
        for i, conv in active:
            out[i] = conv(out[i])
        yield out


def _write_chunks(
    rows_chunks: Iterable[list[tuple[Any, ...]]],
    description_getter: Callable[[], Sequence[Any]],
    out: IO[bytes],
    fmt: Format,
    filter_description: str,
) -> int:
    generated = generated_stamp()
    total = 0
    if fmt == "csv":
        description = description_getter()
        out.write(header_line(filter_description, generated).encode())
        converters = _csv_converters(description)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([col.name for col in description])
        for rows in rows_chunks:
            writer.writerows(_csv_rows(rows, converters))
            out.write(buffer.getvalue().encode())  # one write per chunk
            buffer.seek(0)
            buffer.truncate()
            total += len(rows)
        out.write(buffer.getvalue().encode())
        return total
    schema = _schema_for(description_getter(), _metadata(filter_description, generated))
    with pq.ParquetWriter(out, schema) as writer_pq:
        for rows in rows_chunks:
            writer_pq.write_batch(_batch(rows, schema))
            total += len(rows)
        if total == 0:
            writer_pq.write_table(schema.empty_table())
    return total


def export_query(
    pool: ConnectionPool,
    query: sql.Composed | sql.SQL,
    params: dict[str, Any] | Sequence[Any] | None,
    out: IO[bytes],
    fmt: Format,
    *,
    filter_description: str,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Stream a query's rows into `out` as CSV or Parquet, one chunk at a time; return the row count.

    A named (server-side) cursor keeps the result on the server; we hold at most `chunk_rows`
    rows (plus one Arrow batch of them) at once.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown export format {fmt!r}; use csv or parquet")
    with db_errors(), pool.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        with conn.cursor(name=f"export_{os.getpid()}_{id(out)}") as cur:
            cur.adapters.register_loader("numeric", _NumericAsText)
            cur.itersize = chunk_rows
            cur.execute(query, params)

            def chunks() -> Iterable[list[tuple[Any, ...]]]:
                while rows := cur.fetchmany(chunk_rows):
                    yield rows

            def description() -> Sequence[Any]:
                if cur.description is None:
                    raise ValueError("the export query returns no columns")
                return cur.description

            return _write_chunks(chunks(), description, out, fmt, filter_description)


def export_to_path(
    pool: ConnectionPool,
    query: sql.Composed | sql.SQL,
    params: dict[str, Any] | Sequence[Any] | None,
    path: Path,
    *,
    filter_description: str,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """`export_query` into a file; the format follows the suffix (.csv or .parquet)."""
    fmt = format_for_path(path)
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("wb") as out:
        total = export_query(
            pool, query, params, out, fmt, filter_description=filter_description, chunk_rows=chunk_rows
        )
    tmp.replace(path)  # a reader never sees a half-written file
    return total


def format_for_path(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"{path.name}: the file name must end in .csv or .parquet")
