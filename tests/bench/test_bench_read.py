"""bench.bench_read: the adapter really reads the fake venue's frames, and the figures are printed."""

import re
import subprocess
import sys


def test_it_reads_the_pushed_frames_and_prints_the_cost_of_one() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_read", *"--rate 400 --seconds 2 --symbols 20 --rounds 1".split()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    [(received, us)] = re.findall(r"round 1: ([\d,]+) frames/s received; .* = ([\d.]+) us per frame", out)
    assert 200 <= int(received.replace(",", "")) <= 600  # ~400 a second pushed, all of them read
    assert float(us) > 0 and "median" in out
