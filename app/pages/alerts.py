"""Alerts: the alerter's rules (LIQ_ALERTS_FILE) and the history of what fired, was delivered or failed.

UI only: data from app.data.alerts (the rules through the alerter's own parser, the history from the
`alerts` table) through app/cache.py. Page controls live in the URL (`status`, `rule`);
the sidebar's time range applies, its symbol, exchanges, side and non-live toggle do not (rules
name their own). Messages and errors hold venue text: always shown as plain text.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from app.cache import db
from app.data import alerts
from app.data.connections import DataUnavailable
from app.downloads import download_buttons
from app.exports import stream_download_buttons
from app.format import fmt_count, fmt_date, fmt_datetime, fmt_time, plain_md
from app.gate import require_access
from app.query import now_ms, param_choice
from app.state import current_query

require_access()

ALL = "all"
_STATUS_LABELS = {ALL: "all", "fired": "fired (delivery pending)", "delivered": "delivered", "failed": "failed"}


def _first_ms() -> int | None:
    first = db(alerts.first_fired_at)
    return None if first is None else int(first.timestamp() * 1000)


def _mirror(name: str, value: str | None) -> None:
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != value:
        st.query_params[name] = value


def _rules_section() -> alerts.RulesRead:
    st.subheader("Rules")
    read = alerts.read_rules(alerts.rules_path())
    if read.error and not read.path.exists():
        st.info(plain_md(read.error), icon=":material/rule:")
        return read
    if read.error:
        st.error(f"The rules file cannot be used: {plain_md(read.error)}", icon=":material/error:")
        return read
    st.dataframe(alerts.rules_table(read.rules), hide_index=True, key="a_rules")
    st.caption(
        f"{fmt_count(len(read.rules))} rules from {plain_md(read.path.resolve())} (LIQ_ALERTS_FILE), read with the "
        "alerter's parser · the alerter reads the file when it starts: restart it after an edit"
    )
    return read


def _controls(rule_names: list[str]) -> tuple[str, str]:
    warnings: list[str] = []
    statuses = [ALL, *alerts.STATUSES]
    url_status = param_choice(st.query_params, "status", statuses, ALL, warnings)
    rules = [ALL, *rule_names]
    url_rule = param_choice(st.query_params, "rule", rules, ALL, warnings)
    for warning in warnings:
        st.warning(plain_md(warning), icon=":material/warning:")
    left, right = st.columns(2)
    status = left.selectbox(
        "Status", statuses, index=statuses.index(url_status), format_func=_STATUS_LABELS.__getitem__, key="a_status"
    )
    rule = right.selectbox("Rule", rules, index=rules.index(url_rule), key="a_rule")
    _mirror("status", None if status == ALL else status)
    _mirror("rule", None if rule == ALL else rule)
    return str(status), str(rule)


def _shown(history: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Date": [fmt_date(t) for t in history["fired_at"]],
            "Time (UTC)": [fmt_time(t) for t in history["fired_at"]],
            "Rule": history["rule"],
            "Kind": history["kind"],
            "Channel": history["channel"],
            "Status": history["status"],
            "Attempts": history["attempts"],
            "Message": [" ".join(str(m).split()) for m in history["message"]],  # table cells are plain text
            "Last error": history["last_error"],
        },
        columns=["Date", "Time (UTC)", "Rule", "Kind", "Channel", "Status", "Attempts", "Message", "Last error"],
    )


def _message_reader(history: pd.DataFrame) -> None:
    ids = [int(i) for i in history["id"]]
    by_id = {int(r["id"]): r for _, r in history.iterrows()}

    def label(i: int) -> str:
        r = by_id[i]
        return f"{fmt_datetime(r['fired_at'])} · {r['rule']} · {r['channel']} · {r['status']}"

    chosen = st.selectbox("Read a message", ids, format_func=label, key="a_message")
    if chosen is None:
        return
    row = by_id[int(chosen)]
    with st.container(border=True):
        for line in str(row["message"]).splitlines():
            if line.strip():
                st.markdown(plain_md(line))
        if row["last_error"]:
            st.caption(f"Last error (attempt {int(row['attempts'])}): {plain_md(row['last_error'])}")


def _history_section(rule_names: list[str]) -> None:
    st.subheader("History")
    view = current_query()
    try:
        stored = db(alerts.stored_rule_names)
        first_ms = _first_ms()
    except DataUnavailable as exc:
        st.error(f"Cannot read the alerts: {plain_md(exc)}")
        return
    status, rule = _controls([*rule_names, *sorted(n for n in stored if n not in rule_names)])
    start_ms, end_ms = view.time_range(now_ms(), first_ms)
    f = alerts.AlertFilter(
        datetime.fromtimestamp(start_ms / 1000, tz=UTC),
        datetime.fromtimestamp(end_ms / 1000, tz=UTC),
        None if status == ALL else status,
        None if rule == ALL else rule,
    )
    try:
        counts = db(alerts.status_counts, f)
        history = db(alerts.alert_history, f)
    except DataUnavailable as exc:
        st.error(f"Cannot read the alerts: {plain_md(exc)}")
        return
    st.caption(
        f"Fired {fmt_datetime(start_ms)} .. {fmt_datetime(end_ms)} ({plain_md(view.range_label())}) · the sidebar's "
        "time range applies (whole history: from the first alert); its coin or contract, exchanges, side, sources "
        "and minimum size do not (each rule names its own) · "
        "one row per alert and channel"
    )
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Alerts fired", fmt_count(sum(counts.values())))
    m2.metric("Delivered", fmt_count(counts["delivered"]))
    m3.metric("Failed", fmt_count(counts["failed"]))
    m4.metric("Pending delivery", fmt_count(counts["fired"]))
    if history.empty:
        st.info(
            "No alert matches this filter. Alerts appear here once `python -m alerter` runs with rules and fires; "
            "otherwise widen the time range or pick another status or rule.",
            icon=":material/notifications_off:",
        )
        return
    st.dataframe(_shown(history), hide_index=True, key="a_history")
    more = " (the newest; download all below)" if len(history) >= alerts.HISTORY_ROWS else ""
    st.caption(f"{fmt_count(len(history))} rows, newest first, at most {alerts.HISTORY_ROWS}{more} · times UTC")
    _message_reader(history)

    described = f.describe()
    st.markdown("**Download these rows**")
    download_buttons(history, name="alerts", filter_description=described, key="a_dl")
    st.markdown("**Download every alert this filter selects** (streamed from the database)")
    query, params = alerts.history_query(f)
    stream_download_buttons(query, params, name="alerts_all", filter_description=described, key="a_all_dl")


def main() -> None:
    st.title("Alerts")
    read = _rules_section()
    _history_section([r.name for r in read.rules])


main()
