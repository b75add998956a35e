"""Extra Redis and PostgreSQL+TimescaleDB instances that a fault test may stop and start.

The shared services are never touched: each instance listens on a free loopback port with its
own data (PostgreSQL runs from the Debian 13 root that scripts/services.sh uses, as `postgres`).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import redis

PG_ROOT = Path("/var/cache/liquidation-aggregator/trixie-root")
PG_BIN = "/usr/lib/postgresql/17/bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: object, what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not become ready within {within}s")


class OwnRedis:
    """`redis-server` without persistence: a restart comes back empty, like a flushed cache."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        _wait(self._ping, "redis")

    def _ping(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_connect_timeout=0.5) as r:
                return bool(r.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


class OwnPostgres:
    """A throw-away cluster (trust auth, superuser `liq`) with TimescaleDB preloaded."""

    def __init__(self) -> None:
        self.port = free_port()
        self.name = f"liqtest-pg-{secrets.token_hex(4)}"
        self.data_in = f"/tmp/{self.name}"  # as PostgreSQL sees it inside the root
        self.data_host = PG_ROOT / self.data_in.lstrip("/")
        self.url = f"postgresql://liq@127.0.0.1:{self.port}/liq"
        owner = next(line for line in (PG_ROOT / "etc/passwd").read_text().splitlines() if line.startswith("postgres:"))
        self._uid, self._gid = owner.split(":")[2:4]

    def _run(self, *args: str) -> None:
        subprocess.run(
            [
                "chroot",
                f"--userspec={self._uid}:{self._gid}",
                str(PG_ROOT),
                "env",
                "HOME=/tmp",
                "LC_ALL=C.UTF-8",
                *args,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def init(self) -> None:
        self._run(f"{PG_BIN}/initdb", "-D", self.data_in, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (self.data_host / "postgresql.conf").open("a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '/tmp'\n"
                "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n"
                "fsync = off\nshared_buffers = 64MB\ndynamic_shared_memory_type = mmap\n"
            )
        self.start()
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE ROLE liq LOGIN SUPERUSER")
            conn.execute("CREATE DATABASE liq OWNER liq")

    def start(self) -> None:
        self._run(f"{PG_BIN}/pg_ctl", "-D", self.data_in, "-l", f"{self.data_in}/server.log", "-w", "-t", "60", "start")
        _wait(self._answers, "postgres")

    def _answers(self) -> bool:
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        self._run(f"{PG_BIN}/pg_ctl", "-D", self.data_in, "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.data_host, ignore_errors=True)
