"""Delivering stored alerts: Telegram Bot API `sendMessage` and a generic signed JSON webhook.

Each delivery is its own task (at most LIQ_ALERT_CONCURRENCY requests in flight), so one endpoint
that hangs or fails never holds up the others. Errors: a network error, a timeout, HTTP 408, 429 or
5xx is retried with capped exponential backoff (LIQ_ALERT_BACKOFF_S doubled per attempt, at most
LIQ_ALERT_BACKOFF_MAX_S; Telegram's `retry_after` is honoured within that cap) up to
LIQ_ALERT_MAX_ATTEMPTS; any other 4xx is permanent. A delivery that keeps failing is recorded
`failed` with its last error; every attempt is recorded in `alerts`. HTTP is urllib in a thread
(no new dependency). Error texts never contain the URLs (the Telegram token and webhook URLs are
secrets).

The webhook body is signed: header `X-Liq-Signature: sha256=<hex HMAC-SHA256 of the body with
LIQ_WEBHOOK_SECRET>` (omitted when no secret is set). LIQ_WEBHOOK_FORMAT `json` posts
{"rule", "kind", "key", "fired_at", "text", "event"}; `slack` posts {"text"}; `discord` {"content"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from typing import Any

from alerter.settings import AlerterSettings
from alerter.store import AlertStore, Delivery

log = logging.getLogger("alerter.delivery")


class DeliveryError(Exception):
    """One attempt failed; `permanent` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(fmt: str, d: Delivery) -> bytes:
    payload: dict[str, Any]
    if fmt == "slack":
        payload = {"text": d.message}
    elif fmt == "discord":
        payload = {"content": d.message}
    else:
        payload = {
            "rule": d.rule,
            "kind": d.kind,
            "key": d.key,
            "fired_at": d.fired_at.isoformat(),
            "text": d.message,
            "event": d.event,
        }
    return json.dumps(payload, separators=(",", ":")).encode()


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> bytes:
    """POST in the calling thread; raise DeliveryError (no URL in its text)."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    for k, v in headers.items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read(65536))
    except urllib.error.HTTPError as exc:
        text = exc.read(500).decode("utf-8", "replace")
        retry_after: float | None = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            retry_after = float(json.loads(text)["parameters"]["retry_after"])
        if retry_after is None:
            with contextlib.suppress(ValueError, TypeError):
                retry_after = float(exc.headers.get("Retry-After", ""))
        permanent = 400 <= exc.code < 500 and exc.code not in (408, 429)
        raise DeliveryError(f"HTTP {exc.code}: {text[:200]}", permanent=permanent, retry_after=retry_after) from None
    except urllib.error.URLError as exc:
        raise DeliveryError(f"cannot connect: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None


class Deliverer:
    def __init__(self, settings: AlerterSettings, store: AlertStore) -> None:
        self.settings = settings
        self.store = store
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, d: Delivery) -> None:
        task = asyncio.create_task(self._deliver(d), name=f"deliver-{d.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def close(self, grace_s: float) -> None:
        """Let deliveries finish for up to `grace_s`; the rest stay `fired` and go out on the next start."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _deliver(self, d: Delivery) -> None:
        s = self.settings
        attempts = d.attempts
        error = ""
        try:
            while attempts < s.max_attempts:
                attempts += 1
                try:
                    async with self._slots:
                        await asyncio.to_thread(self._send, d)
                except DeliveryError as exc:
                    error = str(exc)
                    last = exc.permanent or attempts >= s.max_attempts
                    await self.store.record(d.id, "failed" if last else "fired", attempts, error)
                    if last:
                        log.error(
                            "alert %d (%s, %s) failed after %d attempts: %s", d.id, d.rule, d.channel, attempts, error
                        )
                        return
                    delay = min(s.backoff_s * 2 ** (attempts - 1), s.backoff_max_s)
                    if exc.retry_after is not None:
                        delay = min(max(delay, exc.retry_after), s.backoff_max_s)
                    log.warning(
                        "alert %d (%s) attempt %d failed: %s; retry in %.2fs", d.id, d.channel, attempts, error, delay
                    )
                    await asyncio.sleep(delay)
                    continue
                await self.store.record(d.id, "delivered", attempts, "")
                log.info("alert %d delivered (%s, rule %s, attempt %d)", d.id, d.channel, d.rule, attempts)
                return
            await self.store.record(d.id, "failed", attempts, error or "no attempts left")
        except asyncio.CancelledError:
            raise
        except Exception:
            # the database went away: the row stays `fired` and the next start delivers it
            log.exception("alert %d: recording the delivery failed", d.id)

    def _send(self, d: Delivery) -> None:
        s = self.settings
        if d.channel == "telegram":
            body = json.dumps(
                {"chat_id": s.telegram_chat_id, "text": d.message, "disable_web_page_preview": True}
            ).encode()
            reply = _post(f"{s.telegram_api_url}/bot{s.telegram_token}/sendMessage", body, {}, s.http_timeout_s)
            try:
                ok = json.loads(reply).get("ok") is True
            except (ValueError, AttributeError):
                ok = False
            if not ok:
                raise DeliveryError(f"Telegram did not answer ok: {reply[:200].decode('utf-8', 'replace')}")
        elif d.channel == "webhook":
            body = webhook_body(s.webhook_format, d)
            headers = {"X-Liq-Signature": signature(s.webhook_secret, body)} if s.webhook_secret else {}
            _post(s.webhook_url, body, headers, s.http_timeout_s)
        else:
            raise DeliveryError(f"unknown channel {d.channel!r}", permanent=True)
