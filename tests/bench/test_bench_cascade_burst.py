"""bench.bench_cascade_burst: its burst really puts the market in cascades, and it prints its figures."""

import subprocess
import sys

from bench.bench_cascade_burst import burst, run


def test_the_burst_turns_every_instrument_and_side_into_a_cascade() -> None:
    events = burst(instruments=40, rate=400, seconds=20)
    assert len(events) == 8_000 and len({e.key for e in events}) == 8_000
    cpu, active, updates, slowest = run(events, batch=50)
    assert active == 80  # 40 instruments x 2 sides, all in cascades at the end
    assert updates > 1_000 and cpu > 0
    assert len(slowest) == 3 and slowest[0][0] >= slowest[-1][0] > 0 and all(0 <= at < 20 for _, at in slowest)


def test_it_prints_one_line_per_batch_size() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_cascade_burst",
            "--instruments",
            "20",
            "--rate",
            "200",
            "--seconds",
            "5",
            "--batch",
            "10",
            "--batch",
            "100",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("batches of")]
    assert len(lines) == 2 and all("us per liquidation" in line and "slowest steps" in line for line in lines)
