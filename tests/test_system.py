"""The whole system as `make run` starts it: supervisord with the collector, the alerter and the app.

With no internet here, the collector must keep retrying the real exchanges without crashing;
the app must answer its health check; `supervisorctl status` must show all three RUNNING; SIGTERM
must stop everything cleanly well inside supervisord's stop timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import ROOT, service_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _health_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


GOOD_RULES = '[[rule]]\nname = "big"\nkind = "liquidation"\nmin_usd = 1000000\n'
BAD_RULES = '[[rule]]\nname = "big"\nkind = "liquidation"\nmin_usd = -5\n'


@pytest.mark.parametrize("rules_text", [GOOD_RULES, BAD_RULES], ids=["rules", "malformed-rules"])
def test_run_starts_every_program_and_stops_cleanly(
    database_url: str, redis_prefix: str, tmp_path: Path, rules_text: str
) -> None:
    """With a malformed rules file the alerter stops with a message naming the line; the collector
    and the app keep running."""
    port = _free_port()
    rules = tmp_path / "alerts.toml"
    rules.write_text(rules_text)
    broken = rules_text == BAD_RULES
    env = {
        **os.environ,
        **service_env(),
        "DATABASE_URL": database_url,
        "LIQ_REDIS_PREFIX": redis_prefix,
        "LIQ_APP_PORT": str(port),
        "LIQ_RUN_DIR": str(tmp_path / "run"),
        "LIQ_SPOOL_DIR": str(tmp_path / "spool"),
        # The real endpoints (the defaults) are unreachable here: the collector must keep retrying.
        "LIQ_BINANCE_WS_URL": "wss://fstream.binance.com/market",
        "LIQ_BYBIT_WS_URL": "wss://stream.bybit.com/v5/public/linear",
        "LIQ_METRICS_PORT": str(_free_port()),
        "LIQ_ALERTS_FILE": str(rules),
        "LIQ_WEBHOOK_URL": "http://127.0.0.1:9/hook",  # nothing fires: no delivery is attempted
    }
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "run.sh")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait(lambda: _health_ok(port), 90, "the app's /_stcore/health")

            def both_running() -> bool:
                out = subprocess.run(
                    [str(ROOT / ".venv" / "bin" / "supervisorctl"), "-c", str(ROOT / "supervisord.conf"), "status"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                running = [line.split()[0] for line in out.splitlines() if "RUNNING" in line]
                if broken:
                    return sorted(running) == ["app", "collector"] and "EXITED" in out
                return sorted(running) == ["alerter", "app", "collector"]

            _wait(both_running, 60, "supervisorctl status to show every program RUNNING")
            _wait(
                lambda: "retrying" in log_path.read_text(errors="replace").lower(),
                60,
                "the collector to log that it is retrying the unreachable exchanges",
            )
            assert proc.poll() is None
            assert both_running(), "a program died while retrying the exchanges"

            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=45) == 0
            assert time.monotonic() - started < 30
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    if broken:  # (the message naming the line: tests/alerter/test_rules.py; supervisord may not relay it)
        assert "exited: alerter (exit status 2; expected)" in text, text[-4000:]
