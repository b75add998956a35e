"""A TCP proxy in front of a real server, for fault tests: it passes, refuses, cuts or hangs.

    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = proxy.url_for(database_url)    # the same database, through the proxy
        proxy.set_mode("hang")              # accept, never forward: a server that never answers
        proxy.set_mode("refuse")            # nothing listens: connection refused
        proxy.cut()                         # reset every open connection
        proxy.set_mode("pass")              # forward again; stalled connections resume

It runs its own event loop in a thread, so a test may block (a synchronous query, a subprocess
wait) without stalling it. In "hang", connections accepted stay open and silent, and bytes on
connections already open stop flowing both ways (they are held, not dropped); back in "pass",
they flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.e2e.own_servers import free_port

MODES = ("pass", "refuse", "hang")


class TcpProxy:
    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.mode = "pass"
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._listener: socket.socket | None = None
        self._flowing: asyncio.Event | None = None
        self._sockets: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # --- control, from the test's thread ---------------------------------------------------
    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self._call(self._set_mode(mode))

    def cut(self) -> None:
        """Reset every open connection (RST, as a crashed server or a broken network does)."""
        self._call(self._cut())

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=(f"{auth}@" if auth else "") + f"{self.host}:{self.port}"))

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # --- the proxy itself, in its own loop ---------------------------------------------------
    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        # A listening socket and an accept loop of our own (not asyncio.start_server): closing it
        # never races with a connection being wrapped, so no accepted socket is ever left behind.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self._listener = sock
        self._loop.add_reader(sock, self._accept, sock)

    async def _stop_listening(self) -> None:
        if self._listener is not None:
            self._loop.remove_reader(self._listener)
            self._listener.close()  # connection attempts are refused from now on
            self._listener = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            task = asyncio.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        await self._client(reader, writer)

    async def _set_mode(self, mode: str) -> None:
        assert self._flowing is not None
        if mode == "refuse":
            await self._stop_listening()
        elif self._listener is None:
            await self._listen()
        if mode == "hang":
            self._flowing.clear()
        else:
            self._flowing.set()
        self.mode = mode

    async def _cut(self) -> None:
        for writer in list(self._sockets):
            _reset(writer)
        self._sockets.clear()

    async def _close(self) -> None:
        self._closing = True
        await self._stop_listening()
        await self._cut()
        if self._flowing is not None:
            self._flowing.set()  # held connections wake up and find their sockets closed
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=5)
            for task in pending:
                task.cancel()
        await asyncio.sleep(0.2)  # closed transports release their sockets in callbacks still queued

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.accepted += 1
        self._sockets.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # in "hang": accepted, and then nothing
            if self._closing:
                return
            up_reader, upstream = await asyncio.open_connection(*self.target)
            self._sockets.add(upstream)
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._sockets.discard(w)
                    w.transport.abort()  # close() would wait for a peer that may never read

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # held while hanging
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
