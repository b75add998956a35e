"""bench.bench_db: it writes through the real writer, folds what it wrote, and prints the figures."""

import re
import subprocess
import sys

from tests import services


def test_it_writes_both_cases_and_prints_the_database_cost() -> None:
    env = {**services.service_env(), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_db", *"--events 3000 --batch 500 --runs 1".split()],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env=env,
    ).stdout
    [(open_cpu, hours)] = re.findall(r"open hours: writer ([\d.]+) us/liq of database CPU.*fold of (\d+) hours", out)
    [closed_cpu] = re.findall(r"closed hours: writer ([\d.]+) us/liq of database CPU", out)
    assert float(open_cpu) > 0 and float(closed_cpu) > 0  # the server's backends were found and did work
    assert int(hours) >= 1  # the open hours were folded
