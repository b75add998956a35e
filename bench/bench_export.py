"""Peak memory and time of the streaming export (app/downloads.py) for one million rows.

    python -m bench.bench_export [--database-url URL] [--rows 1000000] [--chunk-rows 50000] [--naive]

Uses the one-year benchmark database (`liq_bench`, see bench/bench_pages.py, which generates it
once). The newest hours holding at least `--rows` liquidations (all symbols, per the hourly
rollup) are exported with the explorer's own query, once as CSV and once as Parquet, each in a
fresh child process so that its peak resident size (ru_maxrss) belongs to that export alone.
tracemalloc reports the peak of Python allocations during the export. `--naive` adds the
baseline the streaming path avoids: the same rows fetched into one DataFrame.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from common.config import load_settings

BENCH_DB = "liq_bench"


def _bench_url(base: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{BENCH_DB}"))


def _range_for(url: str, rows: int) -> tuple[int, int, int]:
    """(start_ms, end_ms, expected rows): the newest whole hours holding at least `rows` events."""
    with psycopg.connect(url) as conn:
        end_row = conn.execute("SELECT max(time) FROM liquidations").fetchone()
        assert end_row and end_row[0] is not None, "the benchmark database holds no liquidations"
        end: datetime = end_row[0]
        row = conn.execute(
            "SELECT bucket, seen FROM (SELECT bucket, sum(sum(events)) OVER (ORDER BY bucket DESC) AS seen "
            "FROM liquidations_1h_all GROUP BY bucket) AS h WHERE seen >= %s ORDER BY bucket DESC LIMIT 1",
            (rows,),
        ).fetchone()
    assert row is not None, f"the benchmark database holds fewer than {rows:,} liquidations"
    return int(row[0].timestamp() * 1000), int(end.timestamp() * 1000) + 1, int(row[1])


def _child(args: argparse.Namespace) -> dict[str, Any]:
    from app.data import explorer
    from app.data.connections import fetch_df, open_pool
    from app.data.export import export_query
    from app.query import Query

    pool = open_pool(args.database_url)
    try:
        q = Query(include_nonlive=True)  # the whole market (every venue), every source
        query, params = explorer.explorer_export_query(q, args.start_ms, args.end_ms)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        t0 = time.perf_counter()
        if args.child == "naive":
            frame = fetch_df(pool, query, params)
            rows, size = len(frame), 0
        else:
            with tempfile.TemporaryFile() as out:
                rows = export_query(
                    pool, query, params, out, args.child, filter_description="bench", chunk_rows=args.chunk_rows
                )
                size = out.tell()
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        pool.close()
    return {
        "mode": args.child,
        "rows": rows,
        "seconds": seconds,
        "file_mb": size / 1e6,
        "traced_peak_mb": peak / 1e6,
        "rss_before_mb": rss_before / 1024,
        "rss_peak_mb": rss_after / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--database-url", default=_bench_url(str(settings.database_url)))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--naive", action="store_true", help="also measure fetching everything into a DataFrame")
    parser.add_argument("--child", choices=("csv", "parquet", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--start-ms", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--end-ms", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0

    start, end, expected = _range_for(args.database_url, args.rows)
    print(f"exporting {expected:,} liquidations (all symbols) in chunks of {args.chunk_rows:,} rows")
    print(
        f"{'mode':<8} {'rows':>10} {'seconds':>8} {'file MB':>8} {'py peak MB':>11} {'RSS before':>11} {'RSS peak':>9}"
    )
    for mode in ("csv", "parquet", *(("naive",) if args.naive else ())):
        command = [sys.executable, "-m", "bench.bench_export", "--database-url", args.database_url, "--child", mode]
        command += ["--start-ms", str(start), "--end-ms", str(end), "--chunk-rows", str(args.chunk_rows)]
        done = subprocess.run(
            command, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{r['mode']:<8} {r['rows']:>10,} {r['seconds']:>8.1f} {r['file_mb']:>8.1f} {r['traced_peak_mb']:>11.1f} "
            f"{r['rss_before_mb']:>11.1f} {r['rss_peak_mb']:>9.1f}"
        )
        assert r["rows"] == expected, f"{mode}: exported {r['rows']:,} rows, the rollup counts {expected:,}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
