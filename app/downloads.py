"""Download buttons for every table in the app: CSV and Parquet, built only when clicked.

The file layout (a `# ` header line naming the filter, ISO UTC times, exact decimals) is
app/data/export.py's, shared with the streamed exports of app/exports.py.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.data.export import frame_to_csv, frame_to_parquet, safe_stem
from app.format import plain_md


def download_buttons(df: pd.DataFrame, *, name: str, filter_description: str, key: str) -> None:
    """CSV and Parquet download buttons for a table; the bytes are built only on click."""
    frame = df.copy()
    stem = safe_stem(name)
    tooltip = f"{len(frame):,} rows · {plain_md(filter_description)}"  # tooltips render Markdown
    left, right, _ = st.columns([1, 1, 3])
    with left:
        st.download_button(
            "Download CSV",
            data=lambda: frame_to_csv(frame, filter_description=filter_description),
            file_name=f"{stem}.csv",
            mime="text/csv",
            key=f"{key}-csv",
            on_click="ignore",
            help=tooltip,
        )
    with right:
        st.download_button(
            "Download Parquet",
            data=lambda: frame_to_parquet(frame, filter_description=filter_description),
            file_name=f"{stem}.parquet",
            mime="application/vnd.apache.parquet",
            key=f"{key}-parquet",
            on_click="ignore",
            help=tooltip,
        )
