"""The scaled-out store: all of the bot's state in Redis, for several web and worker processes
on several machines (``REDIS_URL``). :class:`catbot.store.Store` says what each method
guarantees; every operation that reads and writes several keys is one Lua script, so it is as
atomic as the SQLite transaction it mirrors. Each script sits beside the method that runs it.

Keys (prefix ``catbot:``):

    seen:<account>:<event>    "1" with a TTL of SEEN_RETENTION (de-duplication)
    inbox:<account>:<user>    list of JSON [seq, event id, intent, created_ms, kind, payload?]
    ready                     zset of users in line; score = seq of their first waiting message,
                              or the newest seq when re-queued after a reply (round-robin)
    delayed                   zset of users claimed or waiting to retry, score = when claimable
    user:<account>:<user>     hash: opted_out, attempts, fact_seed, fact_pos, token
    sent:<account>:<user>     zset of send times (per-user cap), expires
    budget:<name>, budgets    hash: remaining, reset_at, limit; the set of known names
    inflight                  zset of reserved sends, score = when the reservation lapses
    pending, seq, wake        counters and the wake-up flag
    day:<YYYY-MM-DD>          hash: received, sent (UTC day; spend and DAILY_SEND_LIMIT), expires
    lease:<name>, mark:<name> coordination; alive:<holder> liveness (catbot.liveness)
    counters                  hash: what went wrong and was handled, for /healthz
    chatkeys:<conversation>   hash: message id -> X Chat key change event as delivered
"""
from __future__ import annotations

import json
import os
import random
from typing import Callable, Sequence

from catbot.budget import RateWindow, budget_verdict, daily_window, utc_day
from catbot.liveness import SEPARATOR, Heartbeats, holder_of, new_token
from catbot.replies import Intent
from catbot.store import SEEN_RETENTION, Batch, Completion, Inbound, RecordResult, StoreUnavailable

_SCRIPTS: dict[str, str] = {}


def _script(name: str, source: str) -> str:
    _SCRIPTS[name] = source
    return name


def _key(for_user_id: str, user_id: str) -> str:
    return f"{for_user_id}:{user_id}"


def _day_key(now: float) -> str:
    return f"catbot:day:{utc_day(now)}"


class RedisStore:
    """All of the bot's state in Redis (see the module docstring for the keys)."""

    backend = "redis"

    def __init__(self, url: str, client=None, daily_send_limit: int = 0) -> None:
        import redis  # imported here: the embedded default does not need it

        self.daily_send_limit = daily_send_limit  # DAILY_SEND_LIMIT: 0 for none
        self._errors = (redis.exceptions.RedisError, OSError)
        options = {"socket_timeout": 5, "socket_connect_timeout": 5, "health_check_interval": 30,
                   "retry_on_timeout": False}
        if url.startswith("rediss://"):
            options["ssl_cert_reqs"] = None  # Heroku Key-Value Store uses self-signed certificates
        self.client = client or redis.Redis.from_url(url, **options)
        self._scripts = {name: self.client.register_script(src) for name, src in _SCRIPTS.items()}

    # -- plumbing -----------------------------------------------------------------------------
    def _run(self, name: str, args: Sequence[object] = (), keys: Sequence[str] = ()):
        try:
            return self._scripts[name](keys=list(keys), args=list(args))
        except self._errors as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def _do(self, fn, *args):
        try:
            return fn(*args)
        except self._errors as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def close(self) -> None:
        self.client.close()

    def liveness(self) -> Heartbeats:
        """Consumers on any machine show they are alive by a key with a short TTL."""
        return Heartbeats(self.client)

    # -- the webhook's side -------------------------------------------------------------------
    _RECORD = _script("record", """
-- ARGV: now, seen TTL, the day's counter key, then per message: account, event id, user,
--       intent, created_ms, a fact seed for a new user, kind, payload ('' for none)
local now, ttl, daykey = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local new, dup, ign = 0, 0, 0
for i = 4, #ARGV, 8 do
  local f, ev, u, intent, created, seed = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  if not redis.call('SET', 'catbot:seen:'..f..':'..ev, '1', 'NX', 'EX', ttl) then
    dup = dup + 1
  elseif intent == 'ignore' then
    ign = ign + 1
  else
    local key = f..':'..u
    local seq = redis.call('INCR', 'catbot:seq')
    local entry = {seq, ev, intent, tonumber(created), ARGV[i+6]}
    if ARGV[i+7] ~= '' then entry[6] = ARGV[i+7] end
    redis.call('RPUSH', 'catbot:inbox:'..key, cjson.encode(entry))
    redis.call('INCR', 'catbot:pending')
    redis.call('HSETNX', 'catbot:user:'..key, 'fact_seed', seed)
    if not redis.call('ZSCORE', 'catbot:delayed', key) and not redis.call('ZSCORE', 'catbot:ready', key) then
      redis.call('ZADD', 'catbot:ready', seq, key)
    end
    new = new + 1
  end
end
if new + ign > 0 then
  redis.call('HINCRBY', daykey, 'received', new + ign)
  redis.call('EXPIRE', daykey, 8 * 86400)
end
local wake = 0
if new > 0 and redis.call('SET', 'catbot:wake', '1', 'NX') then wake = 1 end
return {new, dup, ign, wake}
""")

    def record(self, messages: Sequence[Inbound], now: float) -> RecordResult:
        if not messages:
            return RecordResult(0, 0, 0)
        args: list[object] = [now, SEEN_RETENTION, _day_key(now)]
        for m in messages:
            args += [m.for_user_id, m.event_id, m.user_id, m.intent.value, m.created_ms, random.getrandbits(31),
                     m.kind, m.payload or ""]
        new, duplicates, ignored, wake = self._run(self._RECORD, args)
        return RecordResult(new=int(new), duplicates=int(duplicates), ignored=int(ignored), wake=bool(wake))

    def take_wake(self) -> None:
        self._do(self.client.delete, "catbot:wake")

    # -- the reply job's side -----------------------------------------------------------------
    _CLAIM = _script("claim", """
-- ARGV: now, lease seconds, token. Users whose claim or retry time has come go back in line
-- first (a claim that ran out is void), then the first in line is claimed.
local now, lease, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for _, key in ipairs(redis.call('ZRANGEBYSCORE', 'catbot:delayed', '-inf', now, 'LIMIT', 0, 500)) do
  redis.call('ZREM', 'catbot:delayed', key)
  redis.call('HDEL', 'catbot:user:'..key, 'token')
  local head = redis.call('LINDEX', 'catbot:inbox:'..key, 0)
  if head then redis.call('ZADD', 'catbot:ready', cjson.decode(head)[1], key) end
end
local top = redis.call('ZRANGE', 'catbot:ready', 0, 0)
if #top == 0 then return false end
local key = top[1]
redis.call('ZREM', 'catbot:ready', key)
redis.call('ZADD', 'catbot:delayed', now + lease, key)
local ukey = 'catbot:user:'..key
redis.call('HSET', ukey, 'token', token)
redis.call('HDEL', ukey, 'sending')
local u = redis.call('HMGET', ukey, 'opted_out', 'attempts', 'fact_seed', 'fact_pos')
return {key, u[1] or '0', u[2] or '0', u[3] or '0', u[4] or '0', redis.call('LRANGE', 'catbot:inbox:'..key, 0, -1)}
""")

    def claim_next(self, now: float, lease: float) -> Batch | None:
        token = new_token()
        found = self._run(self._CLAIM, [now, lease, token])
        if not found:
            return None
        key, opted_out, attempts, seed, pos, raw = found
        for_user_id, user_id = key.decode().rsplit(":", 1)  # an account may carry a kind's prefix
        entries = sorted((json.loads(e) for e in raw), key=lambda e: (e[3], e[0]))
        kind = entries[0][4] if entries and len(entries[0]) > 4 else "x_dm"  # entries before kinds were DMs
        return Batch(kind, for_user_id, user_id, token, tuple(e[0] for e in entries),
                     tuple(Intent(e[2]) for e in entries), tuple(e[5] if len(e) > 5 else None for e in entries),
                     opted_out == b"1", int(attempts), int(seed), int(pos))

    _RENEW = _script("renew", """
-- ARGV: user key, token, new lease end. Extends the claim if it is still ours, and marks it as
-- sending: from now on only the lease ends it (void_leases leaves it alone).
if redis.call('HGET', 'catbot:user:'..ARGV[1], 'token') ~= ARGV[2] then return 0 end
redis.call('HSET', 'catbot:user:'..ARGV[1], 'sending', ARGV[2])
redis.call('ZADD', 'catbot:delayed', ARGV[3], ARGV[1])
redis.call('ZADD', 'catbot:inflight', 'XX', 'GT', ARGV[3], ARGV[2])  -- its reservation lasts as long
return 1
""")

    def renew(self, batch: Batch, now: float, lease: float) -> bool:
        return bool(self._run(self._RENEW, [_key(batch.for_user_id, batch.user_id), batch.token, now + lease]))

    _COMPLETE = _script("complete", """
-- ARGV: 1 user key, 2 token, 3 highest seq answered, 4 opted_out, 5 sent, 6 absorb facts,
--       7 fact_seed ('' keep), 8 fact_pos, 9 now, 10 member for the sent zset (idempotent),
--       11 the day's counter key
local key, token, max_seq = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ukey, ikey = 'catbot:user:'..key, 'catbot:inbox:'..key
if ARGV[5] == '1' then  -- a DM went out: true whoever holds the user now (the per-user cap)
  local skey = 'catbot:sent:'..key
  redis.call('ZREM', 'catbot:inflight', token)  -- counted, and its reservation dropped, at once
  if redis.call('ZADD', skey, ARGV[9], ARGV[10]) == 1 then  -- not a retry of a completion that landed
    redis.call('HINCRBY', ARGV[11], 'sent', 1)
    redis.call('EXPIRE', ARGV[11], 8 * 86400)
  end
  redis.call('ZREMRANGEBYSCORE', skey, '-inf', tonumber(ARGV[9]) - 3600)
  redis.call('EXPIRE', skey, 7200)
end
if redis.call('HGET', ukey, 'token') ~= token then return 0 end  -- not ours: nothing else is
local removed = 0
while true do
  local head = redis.call('LINDEX', ikey, 0)
  if not head then break end
  local entry = cjson.decode(head)
  if entry[1] <= max_seq or (ARGV[6] == '1' and entry[3] == 'fact') then
    redis.call('LPOP', ikey)
    removed = removed + 1
  else
    break
  end
end
if removed > 0 then redis.call('DECRBY', 'catbot:pending', removed) end
redis.call('HSET', ukey, 'opted_out', ARGV[4])
if ARGV[7] ~= '' then redis.call('HSET', ukey, 'fact_seed', ARGV[7], 'fact_pos', ARGV[8]) end
redis.call('HDEL', ukey, 'token', 'sending')
redis.call('HSET', ukey, 'attempts', 0)
redis.call('ZREM', 'catbot:delayed', key)
if redis.call('LLEN', ikey) > 0 then  -- more waiting: back of the line (round-robin)
  redis.call('ZADD', 'catbot:ready', redis.call('GET', 'catbot:seq'), key)
end
return 1
""")

    def complete(self, batch: Batch, done: Completion, now: float) -> bool:
        args = [_key(batch.for_user_id, batch.user_id), batch.token, max(batch.seqs), int(done.opted_out),
                int(done.sent), int(done.absorb_facts), "" if done.fact_seed is None else done.fact_seed,
                "" if done.fact_pos is None else done.fact_pos, now, f"{now}:{batch.token}", _day_key(now)]
        return bool(self._run(self._COMPLETE, args))

    _RELEASE = _script("release", """
-- ARGV: user key, token, claimable again from (time), count an attempt ('1')
local key, token = ARGV[1], ARGV[2]
local ukey = 'catbot:user:'..key
if redis.call('HGET', ukey, 'token') ~= token then return 0 end
redis.call('HDEL', ukey, 'token', 'sending')
if ARGV[4] == '1' then redis.call('HINCRBY', ukey, 'attempts', 1) end
redis.call('ZREM', 'catbot:ready', key)
redis.call('ZADD', 'catbot:delayed', ARGV[3], key)
return 1
""")

    def release(self, batch: Batch, not_before: float, count_attempt: bool) -> None:
        self._run(self._RELEASE, [_key(batch.for_user_id, batch.user_id), batch.token, not_before,
                                  int(count_attempt)])

    _VOID = _script("void", """
-- ARGV: now, sending too ('1'), then pairs of (user key, token of a dead holder). Voids each claim
-- still held by that token (and not sending, unless told): claimable at once (the next claim
-- moves it to the ready line).
local voided = 0
for i = 3, #ARGV, 2 do
  local key, token = ARGV[i], ARGV[i+1]
  local user = redis.call('HMGET', 'catbot:user:'..key, 'token', 'sending')
  if user[1] == token and (ARGV[2] == '1' or user[2] ~= token) then
    redis.call('HDEL', 'catbot:user:'..key, 'token', 'sending')
    redis.call('ZADD', 'catbot:delayed', ARGV[1], key)
    redis.call('ZREM', 'catbot:inflight', token)
    voided = voided + 1
  end
end
return voided
""")

    def void_leases(self, now: float, alive: Callable[[str], bool], sending_too: bool = False) -> int:
        """Claimed users sit in ``delayed`` with their lease end as score; those still ahead
        are the live claims, and their tokens name their holders."""
        def claims() -> list[tuple[bytes, bytes]]:
            keys = self.client.zrangebyscore("catbot:delayed", f"({now}", "+inf")
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(b"catbot:user:" + key, "token", "sending")
            return [(k, token) for k, (token, sending) in zip(keys, pipe.execute())
                    if token and (sending_too or token != sending)
                    and SEPARATOR.encode() in token]  # claims from before holders: their lease

        held = self._do(claims)
        verdicts = {h: self._do(alive, h) for h in {holder_of(t.decode()) for _, t in held}}
        args: list[object] = [now, int(sending_too)]
        for key, token in held:
            if not verdicts[holder_of(token.decode())]:
                args += [key, token]
        return int(self._run(self._VOID, args)) if len(args) > 2 else 0

    def day_counts(self, day: str) -> tuple[int, int]:
        received, sent = self._do(self.client.hmget, f"catbot:day:{day}", "received", "sent")
        return int(received or 0), int(sent or 0)

    def sent_since(self, for_user_id: str, user_id: str, since: float) -> int:
        return int(self._do(self.client.zcount, f"catbot:sent:{_key(for_user_id, user_id)}", f"({since}", "+inf"))

    def next_due(self, now: float) -> float | None:
        if self._do(self.client.zcard, "catbot:ready"):
            return now
        first = self._do(self.client.zrange, "catbot:delayed", 0, 0, False, True)
        return float(first[0][1]) if first else None

    # -- X's rate budget, shared by every consumer -----------------------------------------------
    def _budget(self, pipe, now: float) -> tuple[list[tuple[int, float, int | None]], int, tuple | None]:
        inflight = pipe.zcount("catbot:inflight", f"({now}", "+inf")
        windows = []
        cap = None
        if self.daily_send_limit:
            cap = daily_window(self.daily_send_limit, int(pipe.hget(_day_key(now), "sent") or 0), now)
        for name in pipe.smembers("catbot:budgets"):
            remaining, reset_at, limit = pipe.hmget(b"catbot:budget:" + name, "remaining", "reset_at", "limit")
            if remaining is not None:
                windows.append((int(remaining), float(reset_at), None if limit is None else int(limit)))
        return windows, inflight, cap

    def send_wait(self, now: float) -> float | None:
        windows, inflight, cap = self._do(self._budget, self.client, now)
        return budget_verdict(windows, inflight, now, cap)

    def reserve_send(self, now: float, token: str, hold: float) -> float | None:
        """The rule stays in Python (:func:`budget_verdict`): read under WATCH, decide, reserve
        in MULTI; a concurrent reservation or settlement makes Redis refuse the EXEC and redis-py
        decide again."""
        def decide(pipe) -> float | None:
            windows, inflight, cap = self._budget(pipe, now)
            wait = budget_verdict(windows, inflight, now, cap)
            if wait is None:
                pipe.multi()
                pipe.zadd("catbot:inflight", {token: now + hold})
            return wait

        return self._do(lambda: self.client.transaction(decide, "catbot:inflight", "catbot:budgets:version",
                                                        value_from_callable=True))

    _SETTLE = _script("settle", """
-- ARGV: token, then per window: name, remaining, reset_at, limit ('' unknown); last: now
redis.call('ZREM', 'catbot:inflight', ARGV[1])
redis.call('ZREMRANGEBYSCORE', 'catbot:inflight', '-inf', ARGV[#ARGV])
for i = 2, #ARGV - 1, 4 do
  local k = 'catbot:budget:'..ARGV[i]
  redis.call('SADD', 'catbot:budgets', ARGV[i])
  redis.call('HSET', k, 'remaining', ARGV[i+1], 'reset_at', ARGV[i+2])
  if ARGV[i+3] ~= '' then redis.call('HSET', k, 'limit', ARGV[i+3]) end
  redis.call('EXPIRE', k, 2 * 86400)
end
redis.call('INCR', 'catbot:budgets:version')
return 1
""")

    def settle_send(self, token: str, windows: Sequence[RateWindow], now: float) -> None:
        args: list[object] = [token]
        for w in windows:
            args += [w.name, w.remaining, w.reset_at, "" if w.limit is None else w.limit]
        self._run(self._SETTLE, args + [now])

    # -- coordination between processes ----------------------------------------------------------
    def try_lease(self, name: str, seconds: float, now: float) -> bool:
        return bool(self._do(lambda: self.client.set(f"catbot:lease:{name}", os.getpid(), nx=True,
                                                     px=max(1, int(seconds * 1000)))))

    _MARK = _script("mark", """
-- KEYS: the mark's key. ARGV: now. Returns the time it held before.
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return old
""")

    def mark(self, name: str, now: float) -> float | None:
        old = self._run(self._MARK, [now], keys=[f"catbot:mark:{name}"])
        return float(old) if old else None

    def keep_chat_key(self, conversation_id: str, change_id: str, key_change: str) -> None:
        self._do(self.client.hsetnx, f"catbot:chatkeys:{conversation_id}", change_id, key_change)

    def chat_key_changes(self, conversation_id: str) -> dict[str, str]:
        found = self._do(self.client.hgetall, f"catbot:chatkeys:{conversation_id}")
        return {k.decode(): v.decode() for k, v in found.items()}

    # -- operations -----------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self._do(self.client.hincrby, "catbot:counters", name, n)

    def health(self) -> dict[str, object]:
        pipe = self.client.pipeline(transaction=False)
        pipe.get("catbot:pending").zcard("catbot:ready").zcard("catbot:delayed").hgetall("catbot:counters")
        pending, ready, delayed, counters = self._do(pipe.execute)
        return {"backend": self.backend, "pending_messages": int(pending or 0), "users_waiting": ready + delayed,
                **{k.decode(): int(v) for k, v in sorted(counters.items())}}

    def prune(self, now: float) -> None:
        """Nothing to do: every key that can go stale carries a TTL."""
