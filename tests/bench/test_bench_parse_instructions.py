"""bench.bench_parse_instructions: callgrind's totals read right, and one real count on a small case."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench import bench_parse_instructions as bench


def test_the_callgrind_total_is_read_from_its_last_line() -> None:
    stderr = "==12== Callgrind, a call-graph generating cache profiler\n==12== Events    : Ir\n==12== Collected : 1300774232\n"
    assert bench.collected(stderr) == 1_300_774_232
    with pytest.raises(RuntimeError, match="no callgrind total"):
        bench.collected("==12== exited early\n")


def test_the_worker_handles_every_measured_frame() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_parse_instructions", "--worker", "market gate liquidates"]
        + ["--warm", "5", "--frames", "40", "--measured", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    events = int(done.stdout.split()[-1])
    assert events >= 40  # Gate frames carry one to three liquidations


def test_one_case_is_counted_under_callgrind(capsys: pytest.CaptureFixture[str]) -> None:
    """valgrind is a test package (scripts/install-system-packages.sh): missing, this fails."""
    assert bench.main(["--case", "okx", "--warm", "200", "--frames", "100"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"market okx liquidation\s+([\d,]+)", out)
    assert found, out
    # One liquidation is tens of thousands of instructions; start-up (hundreds of millions) is not in it.
    assert 5_000 < int(found.group(1).replace(",", "")) < 200_000, out
