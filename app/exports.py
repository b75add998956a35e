"""Explorer's "download everything": prepared on request, on disk, then handed to Streamlit.

`stream_download_buttons(...)` draws a Prepare button per format. Only a click runs the export:
`prepare_export` streams the query's rows from a server-side cursor into a file on disk, chunk
by chunk (app.downloads.export_to_path), so memory stays bounded whatever the filter selects.
Then a Download button offers that file; its bytes are read only when it is clicked.

Why not hand Streamlit the file itself: Streamlit 1.67's st.download_button takes str, bytes,
BytesIO, BufferedReader, RawIOBase or a callable returning one, and reads any of them into one
bytes object it serves from memory (a `tempfile.TemporaryFile`, a BufferedRandom, is refused with
MediaFileStorageError). A callable that reads the file on click keeps that to one copy, held
while it is served, and nothing on reruns.

Files: one directory per process (removed at exit); a prepared file goes with its
`PreparedExport` (a session holds it in st.session_state; a new filter discards it), and a sweep
removes any file older than EXPORT_MAX_AGE_S.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

from app.data.export import Format, export_to_path, generated_stamp, safe_stem

EXPORT_MAX_AGE_S = 3600.0  # a prepared file older than this is deleted, used or not
_export_dir_path: Path | None = None
_export_dir_lock = threading.Lock()


def _export_dir() -> Path:
    """This process's directory for prepared exports (removed when the process exits)."""
    global _export_dir_path
    with _export_dir_lock:
        if _export_dir_path is None or not _export_dir_path.is_dir():
            _export_dir_path = Path(tempfile.mkdtemp(prefix="liq-exports-"))
            atexit.register(shutil.rmtree, _export_dir_path, True)
        return _export_dir_path


def _sweep(directory: Path, max_age_s: float) -> None:
    cutoff = time.time() - max_age_s
    for path in directory.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass  # gone already, or another process's file: not ours to fight over


@dataclass(eq=False)
class PreparedExport:
    """An export written to disk. The file lives as long as this object (a session holds it in
    st.session_state), at most EXPORT_MAX_AGE_S, and never past the process."""

    path: Path
    fmt: Format
    rows: int
    size: int
    generated: str
    token: str  # what was exported: the query, its parameters and the filter text

    def available(self) -> bool:
        return self.path.is_file()

    def read(self) -> bytes:
        """The file's bytes, read when the user clicks Download (Streamlit keeps one copy to serve)."""
        return self.path.read_bytes()

    def discard(self) -> None:
        _unlink_quietly(self.path)


def prepare_export(
    pool: ConnectionPool,
    query: sql.Composed | sql.SQL,
    params: dict[str, Any] | Sequence[Any] | None,
    fmt: Format,
    *,
    filter_description: str,
    directory: Path | None = None,
    max_age_s: float = EXPORT_MAX_AGE_S,
) -> PreparedExport:
    """Stream the query's rows into a new file on disk (bounded memory, see `export_query`)."""
    directory = directory or _export_dir()
    _sweep(directory, max_age_s)
    path = directory / f"{uuid.uuid4().hex}.{fmt}"
    rows = export_to_path(pool, query, params, path, filter_description=filter_description)
    prepared = PreparedExport(
        path=path,
        fmt=fmt,
        rows=rows,
        size=path.stat().st_size,
        generated=generated_stamp(),
        token=_export_token(query, params, filter_description),
    )
    weakref.finalize(prepared, _unlink_quietly, path)  # the file goes with the object
    return prepared


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _export_token(
    query: sql.Composed | sql.SQL, params: dict[str, Any] | Sequence[Any] | None, filter_description: str
) -> str:
    return repr((repr(query), repr(params), filter_description))


def _size_text(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:,.1f} KB"
    return f"{size / (1024 * 1024):,.1f} MB"


def stream_download_buttons(
    query: sql.Composed | sql.SQL,
    params: dict[str, Any] | Sequence[Any] | None,
    *,
    name: str,
    filter_description: str,
    key: str,
) -> None:
    """Prepare then Download buttons for every row `query` selects, as CSV and as Parquet.

    The query runs only when the user clicks Prepare: its rows stream from a server-side cursor
    into a file on disk, chunk by chunk. The Download button reads that file only when clicked
    (Streamlit 1.67 serves downloads from memory, so it holds those bytes once). A prepared file
    follows the filter: change the filter and Prepare appears again.
    """
    import streamlit as st

    from app.cache import app_pool
    from app.data.connections import DataUnavailable
    from app.format import plain_md

    stem = safe_stem(name)
    token = _export_token(query, params, filter_description)
    left, right, _ = st.columns([1, 1, 1])
    choices: tuple[tuple[Any, Format, str, str], ...] = (
        (left, "csv", "CSV", "text/csv"),
        (right, "parquet", "Parquet", "application/vnd.apache.parquet"),
    )
    for column, fmt, label, mime in choices:
        slot = f"{key}-{fmt}-prepared"
        prepared = st.session_state.get(slot)
        if isinstance(prepared, PreparedExport) and (prepared.token != token or not prepared.available()):
            prepared.discard()  # another filter (or swept already): its file is of no more use
            del st.session_state[slot]
            prepared = None
        with column:
            if not isinstance(prepared, PreparedExport):
                if st.button(
                    f"Prepare all as {label}",
                    key=f"{key}-{fmt}-prepare",
                    icon=":material/hourglass_top:",
                    help=f"writes every row the filter selects to a file, then offers it · {plain_md(filter_description)}",
                ):
                    try:
                        with st.spinner(f"Writing every selected row as {label}…"):
                            st.session_state[slot] = prepare_export(
                                app_pool(), query, params, fmt, filter_description=filter_description
                            )
                    except DataUnavailable as exc:
                        st.error(f"Export failed: {plain_md(exc)}")
                    else:
                        st.rerun()
                continue
            st.download_button(
                f"Download all as {label}",
                data=prepared.read,  # read on click, not on every rerun
                file_name=f"{stem}.{fmt}",
                mime=mime,
                key=f"{key}-{fmt}",
                on_click="ignore",
                type="primary",
                icon=":material/download:",
                help=f"{prepared.rows:,} rows · {plain_md(filter_description)}",
            )
            st.caption(f"{prepared.rows:,} rows · {_size_text(prepared.size)} · prepared {prepared.generated}")
