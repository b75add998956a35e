"""The Lua scripts that write the Redis live view (layout in common/live_view.py), and their arguments.

WRITE adds a batch of liquidations and their sums in one call, atomically. `write_argv` sums the
batch per bucket and group (exact: in Python with Decimals, in its C twin with 9-digit limbs; sent
as integer limbs); the script
ZADDs each member with NX and takes every member the ZSET already held back out of the sums
(reading its amounts from the member), then applies the sums with one HINCRBY per limb and group.
So only members really added are counted; inside Redis, a thousand events cost one ZMSCORE and
one ZADD.
CLEAR and SWAP serve the rebuild from TimescaleDB: the new window (members and sums) is assembled
under scratch keys, then swapped in atomically unless the rebuild token vanished (Redis flushed
meanwhile).

The scripts name their keys from a prefix passed in KEYS (fine on a single Redis server, which is
what the project runs; Redis Cluster would need hash tags).

`add_liquidations(client, keys, events)` is the synchronous writer for tools and tests; the
collector (collector/storage/redis_live.py) calls the same script from its async pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

from common.events import Liquidation, Side, canonical_text
from common.live_view import (
    BUCKET_MS,
    NO_CUTOFF_MS,
    PLAIN,
    TRIM_MARGIN_MS,
    WINDOW_MS,
    Keys,
    group_text,
    member_text,
    symbol_text,
)

# An aggregate key lives this long after its bucket ends (or after now, for a bucket already past).
KEEP_MS = WINDOW_MS + TRIM_MARGIN_MS + 60_000

_COMMON_LUA = """
local function greater(a, b)  -- a > b, exactly, for positive decimals in canonical text
  local da, db = tonumber(a), tonumber(b)
  if da ~= db then return da > db end
  local ia = string.find(a, '.', 1, true) or (#a + 1)
  local ib = string.find(b, '.', 1, true) or (#b + 1)
  if ia ~= ib then return ia > ib end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
"""

WRITE_LUA = (
    _COMMON_LUA
    + """
-- KEYS[1] members ZSET, KEYS[2] aggregate key prefix, KEYS[3] aggregate key registry,
-- KEYS[4] sources ZSET (score = the newest event time of each source)
-- ARGV[1] the aggregates, one line each, tab-separated: key suffix, group, bucket ms, expire at ms,
-- count, largest USD, newest ms, parent (0: all symbols, else the line number of its all-symbols
-- aggregate), then one "field=value" per limb. ARGV[2] the events, one line each: time ms, the
-- line number of its symbol's aggregate, member (space-separated; JSON never holds a raw newline
-- or tab). The aggregates sum every event of the call; an event whose member the ZSET held already
-- is taken out of them again (its amounts read from the member).
local aggs = {}
for line in string.gmatch(ARGV[1], '[^\\n]+') do
  local v = {}
  for part in string.gmatch(line, '[^\\t]+') do v[#v + 1] = part end
  local g = {suffix = v[1], group = v[2], bucket = v[3], expire = v[4], n = tonumber(v[5]), x = v[6], t = v[7],
             parent = tonumber(v[8]), f = {}}
  for k = 9, #v do
    local eq = string.find(v[k], '=', 1, true)
    g.f[string.sub(v[k], 1, eq - 1)] = tonumber(string.sub(v[k], eq + 1))
  end
  aggs[#aggs + 1] = g
end

local function take(f, kind, s)  -- subtract the decimal text s from the limbs of one amount
  local dot = string.find(s, '.', 1, true)
  local int = dot and string.sub(s, 1, dot - 1) or s
  local frac = dot and string.sub(s, dot + 1) or ''
  local k, e = 0, #int
  while e > 0 do
    local b = e - 8
    if b < 1 then b = 1 end
    local field = kind .. k
    f[field] = (f[field] or 0) - tonumber(string.sub(int, b, e))
    k, e = k + 1, b - 1
  end
  k = -1
  for b = 1, #frac, 9 do
    local chunk = string.sub(frac, b, b + 8)
    local field = kind .. k
    f[field] = (f[field] or 0) - tonumber(chunk) * 10 ^ (9 - #chunk)
    k = k - 1
  end
end

local n, times, indexes, members = 0, {}, {}, {}
for t, index, member in string.gmatch(ARGV[2], '(%-?%d+) (%d+) ([^\\n]+)') do
  n = n + 1
  times[n], indexes[n], members[n] = t, index, member
end

-- Which members are new: one ZMSCORE and one ZADD per thousand events (not a call per event).
local added, seen = 0, {}
for first = 1, n, 1000 do
  local last = math.min(n, first + 999)
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(members, first, last))
  local pairs_ = {}
  for j = first, last do
    local member = members[j]
    if scores[j - first + 1] or seen[member] then
      local d = cjson.decode(member)
      local g = aggs[tonumber(indexes[j])]
      for _, h in ipairs({g, aggs[g.parent]}) do
        h.n = h.n - 1
        take(h.f, 'q', d[5])
        take(h.f, 'u', d[7])
      end
    else
      seen[member] = true
      pairs_[#pairs_ + 1] = times[j]
      pairs_[#pairs_ + 1] = member
    end
  end
  if #pairs_ > 0 then
    redis.call('ZADD', KEYS[1], unpack(pairs_))
    added = added + #pairs_ / 2
  end
end

for _, g in ipairs(aggs) do
  if g.n > 0 then
    local key = KEYS[2] .. g.suffix
    if redis.call('HINCRBY', key, g.group .. 'n', string.format('%d', g.n)) == g.n then
      -- the group's first events in this key (so also a key just created): expiry and registry
      redis.call('PEXPIREAT', key, g.expire)
      redis.call('ZADD', KEYS[3], g.bucket, g.suffix)
    end
    for field, v in pairs(g.f) do
      if v ~= 0 then redis.call('HINCRBY', key, g.group .. field, string.format('%d', v)) end
    end
    local cur = redis.call('HGET', key, g.group .. 'x')
    if (not cur) or greater(g.x, cur) then redis.call('HSET', key, g.group .. 'x', g.x) end
    if g.parent == 0 then redis.call('ZADD', KEYS[4], 'GT', g.t, cjson.decode(g.group)[3]) end
  end
end
return added
"""
)

CLEAR_LUA = """
-- KEYS[1] scratch members, KEYS[2] scratch aggregate prefix, KEYS[3] scratch registry,
-- KEYS[4] scratch sources, KEYS[5] token
for _, s in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do redis.call('UNLINK', KEYS[2] .. s) end
redis.call('UNLINK', KEYS[1], KEYS[3], KEYS[4])
redis.call('SET', KEYS[5], ARGV[1])
return 1
"""

SWAP_LUA = """
-- KEYS: 1 members, 2 aggregate prefix, 3 registry, 4 sources, 5..8 their scratch twins, 9 token,
-- 10 cascades, 11 built. ARGV[1] built value, ARGV[2] n, ARGV[3..2+n] stale cascade ids, then
-- cascade id, JSON pairs
if redis.call('EXISTS', KEYS[9]) == 0 then return 0 end
for _, s in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do redis.call('UNLINK', KEYS[2] .. s) end
redis.call('UNLINK', KEYS[1], KEYS[3], KEYS[4])
for _, s in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
  if redis.call('EXISTS', KEYS[6] .. s) == 1 then redis.call('RENAME', KEYS[6] .. s, KEYS[2] .. s) end
end
for _, i in ipairs({1, 3, 4}) do
  if redis.call('EXISTS', KEYS[4 + i]) == 1 then redis.call('RENAME', KEYS[4 + i], KEYS[i]) end
end
redis.call('DEL', KEYS[9])
local n = tonumber(ARGV[2])
for i = 3, 2 + n do redis.call('HDEL', KEYS[10], ARGV[i]) end
for i = 3 + n, #ARGV, 2 do redis.call('HSET', KEYS[10], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[11], ARGV[1])
return 1
"""

_GROUPS: dict[tuple[str, str, str], str] = {}
# Exact sums: additions never round (the default context keeps 28 digits).
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _group(exchange: str, side: str, source: str) -> str:
    k = (exchange, side, source)
    g = _GROUPS.get(k)
    if g is None:
        if len(_GROUPS) > 10_000:  # a bound, whatever names the events carry
            _GROUPS.clear()
        g = _GROUPS[k] = group_text(*k)
    return g


def _writable(amount: Decimal) -> bool:
    return amount.is_finite() and amount > 0


def limbs(amount: Decimal) -> dict[int, int]:
    """A positive decimal as 9-digit limbs: 1234567890.5 -> {1: 1, 0: 234567890, -1: 500000000}."""
    whole, _, frac = f"{amount:f}".partition(".")
    out: dict[int, int] = {}
    for k, end in enumerate(range(len(whole), 0, -9)):
        v = int(whole[max(0, end - 9) : end])
        if v:
            out[k] = v
    for k, start in enumerate(range(0, len(frac), 9), start=1):
        v = int(frac[start : start + 9].ljust(9, "0"))
        if v:
            out[-k] = v
    return out


class _Agg:
    """The sums of one bucket for one group, over all symbols (parent 0) or one symbol."""

    __slots__ = ("count", "group", "index", "largest", "largest_text", "newest", "parent", "quantity", "suffix", "usd")

    def __init__(self, index: int, suffix: str, group: str, parent: int) -> None:
        self.index, self.suffix, self.group, self.parent = index, suffix, group, parent
        self.count = 0
        self.quantity = self.usd = self.largest = Decimal(0)
        self.largest_text = "0"
        self.newest = 0


def _fold(parent: _Agg, child: _Agg) -> None:
    parent.count += child.count
    parent.quantity = _EXACT.add(parent.quantity, child.quantity)
    parent.usd = _EXACT.add(parent.usd, child.usd)
    if child.largest > parent.largest:
        parent.largest, parent.largest_text = child.largest, child.largest_text
    parent.newest = max(parent.newest, child.newest)


def python_write_argv(events: Iterable[Liquidation], cutoff_ms: int, now_ms: int) -> tuple[list[str], int]:
    """ARGV for WRITE_LUA (two texts: the aggregates, the events), and how many events it carries.

    Two long arguments instead of several per event: redis-py packs each argument in Python, and
    that would cost more than the script's own work. Events older than `cutoff_ms` are left out,
    and so are events whose amounts are not positive finite numbers (TimescaleDB refuses them).
    `write_argv` is its C twin when built (below)."""
    aggs: dict[tuple[Any, ...], _Agg] = {}
    order: list[_Agg] = []
    tail: list[str] = []
    add = _EXACT.add
    for ev in events:
        t = ev.time_ms
        if t < cutoff_ms or not (_writable(ev.value_usd) and _writable(ev.quantity) and _writable(ev.price)):
            continue
        q, p, u = canonical_text(ev.quantity), canonical_text(ev.price), canonical_text(ev.value_usd)
        bucket = t - t % BUCKET_MS
        k = (bucket, ev.symbol, ev.exchange, ev.side, ev.source)
        a = aggs.get(k)
        if a is None:
            group = _group(ev.exchange, ev.side.value, ev.source)
            parent = aggs.get((bucket, None, *k[2:]))
            if parent is None:
                parent = aggs[(bucket, None, *k[2:])] = _Agg(len(order) + 1, str(bucket), group, 0)
                order.append(parent)
            a = aggs[k] = _Agg(len(order) + 1, f"{bucket}:{symbol_text(ev.symbol)}", group, parent.index)
            order.append(a)
        a.count += 1
        a.quantity = add(a.quantity, ev.quantity)
        a.usd = add(a.usd, ev.value_usd)
        if ev.value_usd > a.largest:
            a.largest, a.largest_text = ev.value_usd, u
        if t > a.newest:
            a.newest = t
        tail.append(f"{t} {a.index} {member_text(ev, q, p, u)}\n")
    for a in order:
        if a.parent:
            _fold(order[a.parent - 1], a)  # the all-symbols sums: their symbols' sums added up
    lines = []
    for a in order:
        start = a.suffix.partition(":")[0]
        expire = max(int(start) + BUCKET_MS, now_ms) + KEEP_MS
        fields = [f"q{k}={v}" for k, v in limbs(a.quantity).items()] + [f"u{k}={v}" for k, v in limbs(a.usd).items()]
        head = (a.suffix, a.group, start, str(expire), str(a.count), a.largest_text, str(a.newest), str(a.parent))
        lines.append("\t".join((*head, *fields)))
    return ["\n".join(lines), "".join(tail)], len(tail)


# The live view's encoding in C when common/_live_native.c is built (scripts/build_native.py): the
# same two texts for the batches the collector writes (plain names, amounts of up to 54 digits a side),
# anything else handed whole to `python_write_argv` (tests/storage/test_live_native.py). At the
# whole market's rate the Python encoder was a fifth of the collector's CPU.
try:
    from common import _live_native
except ImportError:
    NATIVE = False
    write_argv = python_write_argv
else:
    _live_native.bind(
        Liquidation,
        ("exchange", "symbol", "side", "quantity", "price", "value_usd", "time_ms", "source", "sampled", "key"),
        Side,
        Decimal,
        python_write_argv,
        BUCKET_MS,
        KEEP_MS,
        "".join(sorted(PLAIN)),
    )
    NATIVE = True
    write_argv = _live_native.write_argv


def write_keys(keys: Keys, scratch: bool = False) -> list[str]:
    if scratch:
        return [keys.scratch_liqs, keys.scratch_agg, keys.scratch_agg_keys, keys.scratch_sources]
    return [keys.liqs, keys.agg, keys.agg_keys, keys.sources]


def clear_keys(keys: Keys) -> list[str]:
    return [*write_keys(keys, scratch=True), keys.rebuild_token]


def swap_keys(keys: Keys) -> list[str]:
    return [*write_keys(keys), *write_keys(keys, scratch=True), keys.rebuild_token, keys.cascades, keys.built]


def swap_argv(built: str, stale: Sequence[str | bytes], cascades: dict[str, str]) -> list[Any]:
    argv: list[Any] = [built, len(stale), *stale]
    for cid, raw in cascades.items():
        argv += [cid, raw]
    return argv


def add_liquidations(
    client: Any,
    keys: Keys,
    events: Sequence[Liquidation],
    *,
    cutoff_ms: int = NO_CUTOFF_MS,
    now_ms: int | None = None,
    chunk: int = 5_000,
) -> int:
    """Write events as the collector does, with a synchronous redis client; returns how many were new."""
    script = client.register_script(WRITE_LUA)
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    added = 0
    for start in range(0, len(events), chunk):
        argv, n = write_argv(events[start : start + chunk], cutoff_ms, now)
        if n:
            added += int(script(keys=write_keys(keys), args=argv))
    return added
