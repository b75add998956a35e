"""Rules applied to stream entries and health snapshots; firing = dedup, cooldown, store, deliver.

Firing an alert, in order:
1. dedup: `SET {prefix}alert:fired:<rule>:<key> NX EX LIQ_ALERT_FIRED_TTL_S`; a key already there
   means another collector's copy (or this entry before a restart) fired it: nothing more. Entries
   re-read from the pending list after a crash skip this step and rely on step 3 instead.
2. cooldown: `SET {prefix}alert:cooldown:<rule>:<scope> <key> NX EX cooldown_s` (scope = the coin /
   contract / market and side, or the venue); taken by another key: suppressed (logged).
3. store: one `alerts` row per channel, unique on (rule, key, channel); only new rows are delivered.

`volume` rules are checked every LIQ_ALERT_VOLUME_INTERVAL_S against the exact sums of the live view
(alerter/volume.py: every liquidation, whatever the stream's floor); at or above `min_usd` they fire
once per 10-second bucket, so the cooldown (per rule, coin or market, and side) sets how often a
sustained flow repeats.
`stream` rules read `{prefix}live:health` every LIQ_ALERT_HEALTH_INTERVAL_S; a venue alerted as down
is remembered in `{prefix}alert:open:<rule>:<venue>` (survives restarts) until its recovery message.
"""

from __future__ import annotations

import json
import logging
import time
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from alerter import messages
from alerter.delivery import Deliverer
from alerter.rules import Rule
from alerter.settings import AlerterSettings
from alerter.store import AlertStore
from alerter.volume import VolumeReader, describe
from common.instruments import guess_instrument
from common.live_view import bucket_of

log = logging.getLogger("alerter.engine")
DAY_MS = 86_400_000  # how far back a coin's newest candle is looked for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    def __init__(
        self,
        settings: AlerterSettings,
        rules: list[Rule],
        redis: aioredis.Redis,
        store: AlertStore,
        deliverer: Deliverer,
    ) -> None:
        self.s = settings
        self.rules = rules
        self.redis = redis
        self.store = store
        self.deliverer = deliverer
        p = settings.redis_prefix
        self._fired = f"{p}alert:fired:"
        self._cooldown = f"{p}alert:cooldown:"
        self._open = f"{p}alert:open:"
        self.volume = VolumeReader(redis, p)
        self._unbuilt_logged = False
        self._down_since: dict[tuple[str, str], int] = {}  # (rule, venue) -> first seen disconnected
        self.fired = 0  # alerts stored now (tests and logs)
        self.suppressed = 0

    # --- firing -------------------------------------------------------------------------------

    async def fire(
        self,
        rule: Rule,
        key: str,
        scope: str,
        message: str,
        event: dict[str, Any],
        *,
        recovered: bool = False,
        cooldown: bool = True,
    ) -> bool:
        first = await self.redis.set(f"{self._fired}{rule.name}:{key}", "1", nx=True, ex=self.s.fired_ttl_s)
        if not first and not recovered:
            return False
        if cooldown and rule.cooldown_s:
            ckey = f"{self._cooldown}{rule.name}:{scope}"
            if not await self.redis.set(ckey, key, nx=True, ex=rule.cooldown_s):
                if await self.redis.get(ckey) != key:
                    self.suppressed += 1
                    log.info("rule %s: %s suppressed (cooldown of %s)", rule.name, key, scope)
                    return False
        rows = await self.store.insert(rule.name, rule.kind, key, message, event, self.s.channels())
        for d in rows:
            self.deliverer.submit(d)
        if rows:
            self.fired += 1
            log.info("rule %s fired: %s", rule.name, key)
        return bool(rows)

    # --- stream entries -----------------------------------------------------------------------

    async def handle(self, kind: str, data: dict[str, Any], *, recovered: bool = False) -> None:
        if kind == "liquidation":
            await self._liquidation(data, recovered)
        elif kind == "cascade":
            await self._cascade(data, recovered)
        else:
            log.warning("stream entry of unknown kind %r ignored", kind)

    @staticmethod
    def _matches_liquidation(rule: Rule, d: dict[str, Any]) -> bool:
        return (
            rule.wants_source(str(d.get("source", "")))
            and rule.wants_side(str(d["side"]))
            and rule.wants_venue(str(d["exchange"]))
            and rule.wants_liquidation(str(d["exchange"]), str(d["symbol"]))
        )

    async def _liquidation(self, d: dict[str, Any], recovered: bool) -> None:
        now = now_ms()
        time_ms = int(d["time_ms"])
        value = Decimal(d["value_usd"])
        fresh = time_ms >= now - self.s.max_event_age_s * 1000
        key = _event_key(d)
        for rule in self.rules:
            if rule.kind != "liquidation" or not self._matches_liquidation(rule, d):
                continue
            if fresh and rule.min_usd is not None and value >= rule.min_usd:
                base = guess_instrument(d["exchange"], d["symbol"]).base
                text = messages.liquidation(rule.name, d, self.s.app_public_url, rule.min_usd)
                await self.fire(rule, key, base, text, d, recovered=recovered)

    # --- volume -------------------------------------------------------------------------------

    async def check_volume(self, now: int | None = None) -> None:
        rules = [r for r in self.rules if r.kind == "volume"]
        if not rules:
            return
        now = now_ms() if now is None else now
        if not await self.volume.built():
            if not self._unbuilt_logged:
                log.warning("volume rules wait: the collector is (re)building the Redis live view")
                self._unbuilt_logged = True
            return
        self._unbuilt_logged = False
        sums = await self.volume.sums(rules, now)
        for rule in rules:
            s = sums[rule.name]
            if rule.min_usd is None or s.usd < rule.min_usd or not s.events:
                continue
            scope = f"{rule.scope()}:{rule.side}"
            text = messages.volume(
                rule.name,
                rule.scope(),
                _app_symbol(rule),
                rule.side,
                s.usd,
                rule.minutes or 0,
                now,
                list(s.venues),
                self.s.app_public_url,
                s.events,
            )
            await self.fire(rule, f"{scope}:{bucket_of(now)}", scope, text, describe(s))

    async def _cascade(self, d: dict[str, Any], recovered: bool) -> None:
        now = now_ms()
        if int(d["end_ms"]) < now - self.s.max_event_age_s * 1000:
            return
        value = Decimal(d["value_usd"])
        risk = int(d.get("risk_score") or 0)
        symbol = str(d["symbol"])
        exchanges = [str(x) for x in d.get("exchanges") or []]
        for rule in self.rules:
            if rule.kind != "cascade":
                continue
            if not (
                rule.wants_source(str(d.get("source", "")))
                and rule.wants_side(str(d["side"]))
                and (not rule.venues or any(rule.wants_venue(v) for v in exchanges))
                and rule.wants_canonical(symbol)
            ):
                continue
            qualifies = (
                (rule.min_usd is None or value >= rule.min_usd)
                and (rule.min_risk is None or risk >= rule.min_risk)
                and (not rule.cross_venue_only or bool(d.get("cross_exchange")))
            )
            start_key = f"cascade:{d['id']}:start"
            scope = symbol.split("-", 1)[0] + f":{d['side']}"
            if d.get("active"):
                if qualifies:
                    text = messages.cascade_start(rule.name, d, self.s.app_public_url)
                    await self.fire(rule, start_key, scope, text, d, recovered=recovered)
                continue
            # ended: the totals follow a start that was sent; one that qualified only at its end
            # gets the end message alone (under the cooldown)
            started = await self.store.exists(rule.name, start_key)
            if started or qualifies:
                text = messages.cascade_end(rule.name, d, self.s.app_public_url)
                end_key = f"cascade:{d['id']}:end"
                await self.fire(rule, end_key, scope, text, d, recovered=recovered, cooldown=not started)

    # --- stream health ------------------------------------------------------------------------

    async def check_health(self) -> None:
        rules = [r for r in self.rules if r.kind == "stream"]
        if not rules:
            return
        raw = await self.redis.hgetall(f"{self.s.redis_prefix}live:health")
        now = now_ms()
        for venue, text in sorted(raw.items()):
            try:
                snap = json.loads(text)
            except ValueError:
                continue
            for rule in rules:
                if rule.wants_venue(venue) and rule.wants_source(str(snap.get("source", "live"))):
                    if rule.coin is None and rule.contract is None:
                        await self._health(rule, venue, snap, now)
                    else:
                        await self._coin_health(rule, venue, now)

    async def _coin_health(self, rule: Rule, venue: str, now: int) -> None:
        """A coin (or contract) that should not be quiet: no candle of it on `venue` for N minutes."""
        limit_ms = int((rule.minutes or 1) * 60_000)
        newest = await self.store.newest_candles(venue, now - DAY_MS)
        times = [ms for symbol, ms in newest.items() if rule.wants_liquidation(venue, symbol)]
        what = rule.coin or rule.contract or ""
        open_key = f"{self._open}{rule.name}:{venue}:{what}"
        # The newest minute with data ends a minute after its open time; none in a day: silent a day.
        last_ms = max(times) + 60_000 if times else now - DAY_MS
        if now - last_ms > limit_ms:
            if await self.redis.exists(open_key):
                return
            key = f"stream:{venue}:{what}:silent:{last_ms}"
            reason = f"no candle of {what} for {messages.duration((now - last_ms) / 1000)}"
            text = messages.stream_down(rule.name, venue, reason, last_ms, rule.minutes or 0)
            if await self.fire(rule, key, f"{venue}:{what}", text, {"venue": venue, "coin": what}):
                await self.redis.set(open_key, key)
        else:
            opened = await self.redis.getdel(open_key)
            if opened is not None:
                text = messages.stream_up(rule.name, f"{venue} {what}", now)
                await self.fire(
                    rule, f"{opened}:up", f"{venue}:{what}", text, {"venue": venue, "coin": what}, cooldown=False
                )

    async def _health(self, rule: Rule, venue: str, snap: dict[str, Any], now: int) -> None:
        limit_s = (rule.minutes or 1) * 60
        at_ms = int(snap.get("at_ms") or now)
        report_age_s = max(0.0, (now - at_ms) / 1000)
        age = snap.get("last_message_age_s")
        silent_s = None if age is None else float(age) + report_age_s
        state = (rule.name, venue)
        if not snap.get("connected") or silent_s is None:
            since = self._down_since.setdefault(state, now)
            down_s = max((now - since) / 1000, silent_s or 0.0, report_age_s)
            reason = "disconnected" if not snap.get("connected") else "no message yet"
        else:
            self._down_since.pop(state, None)
            down_s = max(silent_s, report_age_s)
            reason = f"no message for {messages.duration(down_s)}"
        if report_age_s > limit_s:
            reason = f"no health report for {messages.duration(report_age_s)} (collector stopped?)"
        open_key = f"{self._open}{rule.name}:{venue}"
        if down_s > limit_s:
            cooling = rule.cooldown_s and await self.redis.exists(f"{self._cooldown}{rule.name}:{venue}")
            if cooling or await self.redis.exists(open_key):
                return  # already alerted, or a down message went out for this venue within the cooldown
            since_ms = int(now - down_s * 1000)
            key = f"stream:{venue}:down:{since_ms}"
            text = messages.stream_down(rule.name, venue, reason, since_ms, rule.minutes or 0)
            if await self.fire(rule, key, venue, text, {"venue": venue, "health": snap}):
                await self.redis.set(open_key, key)
        elif snap.get("connected") and silent_s is not None and report_age_s <= limit_s:
            opened = await self.redis.getdel(open_key)
            if opened is not None:
                text = messages.stream_up(rule.name, venue, now)
                await self.fire(rule, f"{opened}:up", venue, text, {"venue": venue, "health": snap}, cooldown=False)


def _app_symbol(rule: Rule) -> str:
    """The app's `symbol` for a volume rule's link: the contract, the coin's USDT perpetual, or ALL."""
    if rule.contract is not None:
        return messages.app_symbol(rule.contract)
    return f"{rule.coin}USDT" if rule.coin is not None else "ALL"


def _event_key(d: dict[str, Any]) -> str:
    return str(d.get("key") or f"{d['exchange']}:{d['symbol']}:{d['time_ms']}:{d['side']}:{d['value_usd']}")
