"""Fake venue REST APIs: real HTTP servers on 127.0.0.1 serving the instrument lists.

`FakeBinanceRest` serves `GET /fapi/v1/exchangeInfo`, `FakeBybitRest` serves
`GET /v5/market/instruments-info?category=linear` with cursor pagination (`page_size` items a page at
most, whatever `limit` asks). Both are shaped like the real responses (Binance's developer docs and
bybit-exchange/docs `v5/market/instrument.mdx`), built item by item with `binance_symbol()` and
`bybit_instrument()`; `market()` makes several hundred plausible instruments. Change `symbols` /
`instruments` between two requests to list and delist. `mode` makes them fail:

- "ok": the list; "error": HTTP 500; "hang": accept the request and never answer (until stopped);
  "garbage": an HTML error page with status 200; "truncated": a Content-Length promising more than
  is sent; "venue_error": the venue's own error shape (Binance `{"code", "msg"}` with HTTP 400,
  Bybit `retCode` 10001 with HTTP 200).
- `fail_from`: only requests from this (1-based) number on fail, to break a pagination midway.

Each server runs in a thread of its own (`http.server`), so it answers whatever the test's event
loop is doing. `requests` records the path and query of every request.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit

PERPETUAL_DELIVERY_MS = 4133404800000  # Binance's "no delivery" date for perpetuals (2100-12-25 08:00 UTC)
SERVER_TIME_MS = 1732400000000


class FakeRest:
    """The HTTP machinery shared by both venues; subclasses implement `answer()`."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.fail_from = 1
        self.gzip = True  # answer gzip when asked, as the venues do
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._release = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        raise NotImplementedError

    def venue_error(self) -> tuple[int, Any]:
        raise NotImplementedError

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            self.requests.append((parts.path, query))
            number = len(self.requests)
        mode = self.mode if number >= self.fail_from else "ok"
        if mode == "hang":
            self._release.wait(120)
            req.close_connection = True  # then close without a word
            return
        if mode == "error":
            self._send(req, 500, b'{"code":-1001,"msg":"Internal error; unable to process your request."}')
            return
        if mode == "garbage":
            self._send(req, 200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return
        status, data = self.venue_error() if mode == "venue_error" else self.answer(parts.path, query)
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        if mode == "truncated":
            req.send_response(200)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body[: len(body) // 2])
            req.wfile.flush()
            req.close_connection = True
            return
        self._send(req, status, body, zipped="gzip" in (req.headers.get("Accept-Encoding") or ""))

    def _send(
        self,
        req: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        kind: str = "application/json",
        zipped: bool = False,
    ) -> None:
        req.send_response(status)
        req.send_header("Content-Type", kind)
        if zipped and self.gzip:
            body = gzip.compress(body)
            req.send_header("Content-Encoding", "gzip")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)


class FakeBinanceRest(FakeRest):
    def __init__(self, symbols: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.symbols: list[Any] = list(symbols or [])

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path != "/fapi/v1/exchangeInfo":
            return 404, {"code": -1, "msg": "Not Found"}
        return 200, exchange_info(self.symbols)

    def venue_error(self) -> tuple[int, Any]:
        return 400, {"code": -1104, "msg": "Not all sent parameters were read; read '0' parameter(s) but was sent '1'."}


class FakeBybitRest(FakeRest):
    def __init__(self, instruments: list[dict[str, Any]] | None = None, page_size: int = 500) -> None:
        super().__init__()
        self.instruments: list[Any] = list(instruments or [])
        self.page_size = page_size
        # Bybit may hand out a cursor with the last page; the page after it is empty.
        self.cursor_on_last_page = True
        self._cursors: dict[str, int] = {}

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path != "/v5/market/instruments-info":
            return 404, {
                "retCode": 10001,
                "retMsg": "Not Found",
                "result": {},
                "retExtInfo": {},
                "time": SERVER_TIME_MS,
            }
        if query.get("category") != "linear":
            return 200, _bybit_error("params error: category only support linear here")
        try:
            limit = int(query.get("limit", "500"))
        except ValueError:
            return 200, _bybit_error("params error: limit")
        if not 1 <= limit <= 1000:
            return 200, _bybit_error("params error: limit must be in [1, 1000]")
        start = 0
        if query.get("cursor"):
            with self._lock:
                found = self._cursors.get(query["cursor"])
            if found is None:
                return 200, _bybit_error("params error: cursor invalid")
            start = found
        items = self.instruments[start : start + min(limit, self.page_size)]
        end = start + len(items)
        cursor = ""
        if items and (end < len(self.instruments) or self.cursor_on_last_page):
            first, last = (_name(items[0]), _name(items[-1]))
            cursor = quote(f"first={first}&last={last}", safe="")  # "first%3DBTCUSDT%26last%3DETHUSDT"
            with self._lock:
                self._cursors[cursor] = end
        return 200, {
            "retCode": 0,
            "retMsg": "OK",
            "result": {"category": "linear", "list": items, "nextPageCursor": cursor},
            "retExtInfo": {},
            "time": SERVER_TIME_MS,
        }

    def venue_error(self) -> tuple[int, Any]:
        return 200, _bybit_error("Too many visits. Exceeded the API Rate Limit.", code=10006)


def _name(item: Any) -> str:
    return str(item.get("symbol")) if isinstance(item, dict) else "?"


def _bybit_error(message: str, code: int = 10001) -> dict[str, Any]:
    return {"retCode": code, "retMsg": message, "result": {}, "retExtInfo": {}, "time": SERVER_TIME_MS}


def exchange_info(symbols: list[Any]) -> dict[str, Any]:
    """A whole `GET /fapi/v1/exchangeInfo` answer around `symbols`."""
    return {
        "timezone": "UTC",
        "serverTime": SERVER_TIME_MS,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [
            {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
            {"asset": "USDC", "marginAvailable": True, "autoAssetExchange": "-10000"},
            {"asset": "BTC", "marginAvailable": True, "autoAssetExchange": "-0.10000000"},
        ],
        "symbols": symbols,
    }


def binance_symbol(
    symbol: str,
    base: str,
    quote: str = "USDT",
    *,
    contract_type: str = "PERPETUAL",
    status: str = "TRADING",
    delivery_ms: int = PERPETUAL_DELIVERY_MS,
    pair: str | None = None,
    margin: str | None = None,
) -> dict[str, Any]:
    """One item of exchangeInfo's `symbols`, with every field the real one has."""
    return {
        "symbol": symbol,
        "pair": pair or symbol,
        "contractType": contract_type,
        "deliveryDate": delivery_ms,
        "onboardDate": 1569398400000,
        "status": status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": margin or quote,
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["PoW"],
        "permissionSets": ["GRID", "COPY"],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": [
            "LIMIT",
            "MARKET",
            "STOP",
            "STOP_MARKET",
            "TAKE_PROFIT",
            "TAKE_PROFIT_MARKET",
            "TRAILING_STOP_MARKET",
        ],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


def bybit_instrument(
    symbol: str,
    base: str,
    quote: str = "USDT",
    *,
    contract_type: str = "LinearPerpetual",
    status: str = "Trading",
    delivery_ms: int = 0,
    settle: str | None = None,
) -> dict[str, Any]:
    """One item of instruments-info's `result.list` (linear), with every field the real one has."""
    return {
        "symbol": symbol,
        "symbolId": 5,
        "contractType": contract_type,
        "status": status,
        "baseCoin": base,
        "quoteCoin": quote,
        "launchTime": "1585526400000",
        "deliveryTime": str(delivery_ms),
        "deliveryFeeRate": "0.0005" if contract_type == "LinearFutures" else "",
        "priceScale": "2",
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
        "lotSizeFilter": {
            "maxOrderQty": "1190.000",
            "minOrderQty": "0.001",
            "qtyStep": "0.001",
            "postOnlyMaxOrderQty": "1190.000",
            "maxMktOrderQty": "500.000",
            "minNotionalValue": "5",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": settle or quote,
        "copyTrading": "both",
        "upperFundingRate": "0.00375",
        "lowerFundingRate": "-0.00375",
        "isPreListing": False,
        "preListingInfo": None,
        "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
        "displayName": "",
        "forbidUplWithdrawal": False,
        "symbolType": "",
    }


def coins(n: int, start: int = 0) -> Iterator[str]:
    """`n` distinct coin names like the venues' (letters only): AAA, AAB, ..."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for i in range(start, start + n):
        yield "Q" + letters[i // 676 % 26] + letters[i // 26 % 26] + letters[i % 26]


def binance_market(n: int, start: int = 0) -> list[dict[str, Any]]:
    """`n` USDT perpetuals: QAAAUSDT, QAABUSDT, ..."""
    return [binance_symbol(f"{c}USDT", c) for c in coins(n, start)]


def bybit_market(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [bybit_instrument(f"{c}USDT", c) for c in coins(n, start)]
