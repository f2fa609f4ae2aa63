-- The embedded default's tables, in the same SQLite file as huey's queue (catbot/store/sqlite.py).
-- Created when missing; columns added later are added by sqlite.py's _migrate.
create table if not exists catbot_seen (  -- event ids seen, for de-duplication (kept 7 days)
    for_user_id text not null, event_id text not null, received_at real not null,
    primary key (for_user_id, event_id)) without rowid;
create index if not exists catbot_seen_received on catbot_seen (received_at);
create table if not exists catbot_inbox (  -- messages waiting for a reply: never their text
    seq integer primary key autoincrement,
    for_user_id text not null, user_id text not null, event_id text not null,
    intent text not null, created_ms integer not null, received_at real not null,
    kind text not null default 'x_dm', payload text);
create index if not exists catbot_inbox_user on catbot_inbox (for_user_id, user_id, seq);
create table if not exists catbot_users (  -- per user: opt-out, claim, retries, fact rotation, place in line
    for_user_id text not null, user_id text not null,
    opted_out integer not null default 0,
    claimed_until real not null default 0, claim_token text,
    sending integer not null default 0,  -- the holder renewed its claim to send: only the lease ends it
    not_before real not null default 0, attempts integer not null default 0,
    fact_seed integer not null, fact_pos integer not null default 0,
    queue_pos real,  -- place in line while messages wait: a time (null: nothing waiting)
    primary key (for_user_id, user_id)) without rowid;
create index if not exists catbot_users_queue on catbot_users (queue_pos) where queue_pos is not null;
create index if not exists catbot_users_claimed on catbot_users (claim_token) where claim_token is not null;
create table if not exists catbot_sent (  -- send times, for the per-user cap
    for_user_id text not null, user_id text not null, sent_at real not null);
create index if not exists catbot_sent_user on catbot_sent (for_user_id, user_id, sent_at);
create table if not exists catbot_budget (  -- X's rate windows as last reported
    name text primary key, remaining integer not null, reset_at real not null, lim integer);
create table if not exists catbot_inflight (  -- sends reserved and not yet answered
    token text primary key, until real not null);
create table if not exists catbot_leases (  -- once-only periodic work
    name text primary key, until real not null);
create table if not exists catbot_marks (  -- when something last happened ("alive")
    name text primary key, at real not null);
create table if not exists catbot_journal (  -- how far each journal file was imported
    file text primary key, offset integer not null);
create table if not exists catbot_flags (  -- a wake-up is pending
    name text primary key, value integer not null);
create table if not exists catbot_counters (  -- what went wrong and was handled, for /healthz
    name text primary key, value integer not null);
create table if not exists catbot_daily (  -- per UTC day: messages received (new events) and replies sent
    day text primary key, received integer not null default 0, sent integer not null default 0);
create table if not exists catbot_chat_keys (  -- X Chat key change events as delivered (wrapped for the bot)
    conversation_id text not null, change_id text not null, key_change text not null, kept_at real not null,
    primary key (conversation_id, change_id)) without rowid;
insert or ignore into catbot_flags (name, value) values ('wake', 0);

-- @staging
-- Per connection, in memory: what one record or import is bringing in.
create temp table if not exists catbot_lines (n integer primary key, line text not null);
create temp table if not exists catbot_incoming (
    n integer primary key, kind text not null, for_user_id text not null, event_id text not null,
    user_id text not null, intent text not null, created_ms integer not null, received_at real not null,
    payload text, fresh integer not null default 0);
