"""Fake Telegram Bot API and webhook endpoints on 127.0.0.1 (http.server in a thread) that record
every request; `status` decides the answer (200, or e.g. 500 to test retries)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeHttp:
    def __init__(self, status: int = 200, reply: bytes = b'{"ok":true,"result":{}}') -> None:
        self.status = status
        self.reply = reply
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with fake._lock:
                    fake.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, reply = fake.status, fake.reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fake-http", daemon=True)
        self._thread.start()

    def texts(self) -> list[str]:
        """The alert texts received (Telegram `text`, webhook `text` / `content`)."""
        out = []
        with self._lock:
            requests = list(self.requests)
        for r in requests:
            d = r.json()
            out.append(d.get("text") or d.get("content") or "")
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
