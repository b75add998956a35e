"""Queries behind the Alerts page: the alerter's rules (LIQ_ALERTS_FILE, read with the alerter's own
parser, so the page and `python -m alerter` agree) and the history in the `alerts` table
(db/migrations/0013_alerts.sql: one row per alert and channel, `fired` -> `delivered` | `failed`).

No Streamlit here: plain functions over the app's read-only pool (liq_reader has SELECT on alerts);
the page caches them. Errors reaching the database surface as `connections.DataUnavailable`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from psycopg import sql
from psycopg_pool import ConnectionPool

from alerter.rules import Rule, RulesError, load_rules
from app.data.connections import fetch_all, fetch_df
from app.format import MISSING, fmt_usd

STATUSES: tuple[str, ...] = ("fired", "delivered", "failed")
HISTORY_ROWS = 500  # rows on the page at most (the downloads of "all" have no limit)
DEFAULT_RULES_FILE = "alerts.toml"
HISTORY_COLUMNS = ("id", "fired_at", "rule", "kind", "channel", "status", "attempts", "key", "message", "last_error")


def rules_path(env: Mapping[str, str] | None = None) -> Path:
    """LIQ_ALERTS_FILE as the alerter reads it (alerter/settings.py): blank means `alerts.toml`,
    relative to the working directory."""
    raw = (os.environ if env is None else env).get("LIQ_ALERTS_FILE", "").strip()
    return Path(raw or DEFAULT_RULES_FILE)


@dataclass(frozen=True)
class RulesRead:
    path: Path
    rules: tuple[Rule, ...] = ()
    error: str = ""  # "no rules file at ...", or the alerter's RulesError message (names the line)


def read_rules(path: Path) -> RulesRead:
    """The rules of `path`, or why there are none; never raises for a missing or malformed file."""
    if not path.exists():
        return RulesRead(path, error=f"no rules file at {path.resolve()}")
    try:
        return RulesRead(path, tuple(load_rules(path)))
    except RulesError as exc:
        return RulesRead(path, error=str(exc))


def _number(x: float) -> str:
    return f"{x:g}"


def rule_filters(rule: Rule) -> tuple[str, str, str]:
    """(coin / contract, venues, side) as shown; `stream` rules have no coin or side."""
    market = f"coin {rule.coin}" if rule.coin else f"contract {rule.contract}" if rule.contract else "all"
    venues = ", ".join(rule.venues) if rule.venues else "all"
    if rule.kind == "stream":
        return MISSING, venues, MISSING
    return market, venues, rule.side


def rule_condition(rule: Rule) -> str:
    """The condition in words, the way alerter/engine.py applies it (every part must hold)."""
    parts: list[str] = []
    if rule.kind == "stream":
        parts.append(f"down or silent > {_number(rule.minutes or 0)} min")
    else:
        if rule.min_usd is not None:
            parts.append(f"USD >= {fmt_usd(rule.min_usd)}")
        if rule.min_risk is not None:
            parts.append(f"risk >= {rule.min_risk}")
        if rule.kind == "volume" and rule.minutes is not None:
            parts.append(f"in {_number(rule.minutes)} min")
        if rule.cross_venue_only:
            parts.append("cross-venue only")
    return " and ".join(parts) if parts else MISSING


def rules_table(rules: Sequence[Rule]) -> pd.DataFrame:
    rows = []
    for r in rules:
        market, venues, side = rule_filters(r)
        rows.append(
            {
                "Name": r.name,
                "Kind": r.kind,
                "Coin / contract": market,
                "Venues": venues,
                "Side": side,
                "Condition": rule_condition(r),
                "Cooldown": f"{r.cooldown_s} s",
                "Sources": "all (includes non-live)" if r.include_nonlive else "live only",
            }
        )
    columns = ["Name", "Kind", "Coin / contract", "Venues", "Side", "Condition", "Cooldown", "Sources"]
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class AlertFilter:
    start: datetime  # [start, end) on fired_at
    end: datetime
    status: str | None = None  # one of STATUSES, None: all
    rule: str | None = None  # a rule name, None: all

    def describe(self) -> str:
        return (
            f"alerts fired {self.start:%Y%m%d %H:%M:%S} .. {self.end:%Y%m%d %H:%M:%S} UTC; "
            f"status {self.status or 'all'}; rule {self.rule or 'all'}"
        )


def _where(f: AlertFilter, with_status: bool = True) -> tuple[sql.Composed, list[Any]]:
    parts: list[sql.Composable] = [sql.SQL("fired_at >= %s"), sql.SQL("fired_at < %s")]
    params: list[Any] = [f.start, f.end]
    if with_status and f.status is not None:
        parts.append(sql.SQL("status = %s"))
        params.append(f.status)
    if f.rule is not None:
        parts.append(sql.SQL("rule = %s"))
        params.append(f.rule)
    return sql.SQL(" AND ").join(parts), params


def status_counts(pool: ConnectionPool, f: AlertFilter) -> dict[str, int]:
    """Rows per status in the range (the rule filter applies, the status filter does not)."""
    where, params = _where(f, with_status=False)
    query = sql.SQL("SELECT status, count(*) FROM alerts WHERE {} GROUP BY status").format(where)
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in fetch_all(pool, query, params):
        counts[str(status)] = int(n)
    return counts


def history_query(f: AlertFilter, limit: int | None = None) -> tuple[sql.Composed, list[Any]]:
    """The rows the filter selects, newest first (the page's table, and the "all" download)."""
    where, params = _where(f)
    query = sql.SQL("SELECT {}, event::text AS event FROM alerts WHERE {} ORDER BY fired_at DESC, id DESC").format(
        sql.SQL(", ").join(map(sql.Identifier, HISTORY_COLUMNS)), where
    )
    if limit is not None:
        query = sql.SQL("{} LIMIT %s").format(query)
        params.append(limit)
    return query, params


def alert_history(pool: ConnectionPool, f: AlertFilter, limit: int = HISTORY_ROWS) -> pd.DataFrame:
    query, params = history_query(f, limit)
    return fetch_df(pool, query, params)


def stored_rule_names(pool: ConnectionPool) -> list[str]:
    """Every rule name in the table (rules since removed from the file included)."""
    return [str(r[0]) for r in fetch_all(pool, "SELECT DISTINCT rule FROM alerts ORDER BY rule")]


def first_fired_at(pool: ConnectionPool) -> datetime | None:
    rows = fetch_all(pool, "SELECT min(fired_at) FROM alerts")
    return rows[0][0] if rows else None
