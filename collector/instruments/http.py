"""One GET of a public JSON endpoint, under a deadline, with the standard library only.

`get_json(url, timeout_s)` runs `urllib.request` in a daemon thread of its own: the instrument
lists are fetched a few times an hour, so a thread per request costs nothing and keeps the project
free of another HTTP dependency. The deadline covers the whole request (connect, TLS,
headers and every byte of the body): the socket timeout is the time left at the start, and the
body is read in chunks that check the clock, so a server that never answers and one that trickles
a byte a second both end in `FetchError` at the deadline (the caller stops waiting one second
after it in any case; a thread blocked in a read ends within one socket timeout). Bodies are capped
(`MAX_BODY_BYTES`, also after gzip) and decoded with orjson.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson

from collector.health import one_line
from collector.instruments.base import FetchError, ResponseError

MAX_BODY_BYTES = 64 << 20  # Binance's exchangeInfo is a few MB; anything near this is not a list
USER_AGENT = "liquidation-aggregator/0.1 (+instrument discovery)"
_CHUNK = 1 << 16
_SNIPPET = 200  # characters of an error body quoted in the message
_GRACE_S = 1.0

T = TypeVar("T")


def _same(data: Any) -> Any:
    return data


async def get_json(url: str, timeout_s: float, then: Callable[[Any], T] = _same) -> T:
    """`then(the decoded JSON at url)`, both in the request's thread (a list of a thousand items
    takes tens of milliseconds to decode and normalise: not on the event loop). Failures are
    `FetchError` or `ResponseError`, and whatever `then` raises."""
    deadline = time.monotonic() + timeout_s
    try:
        # The thread ends by itself soon after the deadline; past it plus a grace, stop waiting for it.
        return await asyncio.wait_for(_in_thread(url, deadline, timeout_s, then), timeout_s + _GRACE_S)
    except TimeoutError:
        raise FetchError(f"no complete answer within {timeout_s:g} s") from None


async def _in_thread(url: str, deadline: float, timeout_s: float, then: Callable[[Any], T]) -> T:
    """`_get`, the decode and `then` in a daemon thread of its own: one still blocked in a read at
    shutdown holds nothing up (a thread of the default executor is waited for when the loop closes)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the caller stopped waiting
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result: Any = then(_decode(_get(url, deadline, timeout_s)))
            error: BaseException | None = None
        except BaseException as exc:  # handed to the awaiting task, raised there
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="instruments-http", daemon=True).start()
    return await future


def _decode(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseError(f"not JSON ({exc}): {one_line(body[:_SNIPPET].decode('utf-8', 'replace'))}") from None


def _get(url: str, deadline: float, timeout: float) -> bytes:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": USER_AGENT}
    )
    try:
        with urllib.request.urlopen(request, timeout=max(0.05, deadline - time.monotonic())) as response:
            body = _read(response, deadline, timeout)
            encoding = (response.headers.get("Content-Encoding") or "").strip().lower()
    except urllib.error.HTTPError as exc:
        raise FetchError(f"HTTP {exc.code} {exc.reason}: {_error_body(exc)}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot reach {_host(url)}: {one_line(str(exc.reason))}") from None
    except TimeoutError:
        raise FetchError(f"no complete answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise FetchError(f"{type(exc).__name__}: {one_line(str(exc))}") from None
    if encoding == "gzip":
        body = _gunzip(body)
    elif encoding not in ("", "identity"):
        raise ResponseError(f"unexpected Content-Encoding {one_line(encoding)!r}")
    return body


def _read(response: http.client.HTTPResponse, deadline: float, timeout: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() >= deadline:
            raise TimeoutError
        chunk = response.read(_CHUNK)
        if not chunk:
            if response.length:  # http.client returns short when the server closes before Content-Length
                raise FetchError(f"incomplete answer: the connection closed {response.length} bytes short")
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise FetchError(f"answer larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)


def _gunzip(body: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise ResponseError(f"bad gzip body: {exc}") from None
    if len(out) > MAX_BODY_BYTES:
        raise ResponseError(f"answer larger than {MAX_BODY_BYTES} bytes once unzipped")
    return out


def _error_body(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read(1 << 16)
        if (exc.headers.get("Content-Encoding") or "").strip().lower() == "gzip":
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, _SNIPPET)
    except (OSError, http.client.HTTPException, zlib.error):
        return ""
    return one_line(raw[:_SNIPPET].decode("utf-8", "replace"), _SNIPPET)


def _host(url: str) -> str:
    return urlsplit(url).netloc
