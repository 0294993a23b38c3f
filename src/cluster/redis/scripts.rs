//! The Lua scripts the Redis backend runs: each a step that must be atomic
//! (read the owner of an id and act on it in one go). Keys and messages are
//! described in CLUSTER.md.

use redis::{aio::ConnectionManager, Script};

/// Lua functions shared by the scripts.
///
/// `away` makes a client away: its channels remembered (their sets of
/// members that are away get it, so broadcasts are buffered for it), a
/// deadline `until` = now + offline ttl, and an entry in `P:expiring` so a
/// node reports its buffer when the deadline passes. The keys outlive the
/// deadline by a minute, so the report can read them.
///
/// `adopt` is for a node found gone (nobody listens on its channel): each
/// of its clients becomes away, so what is sent to it from now on is
/// buffered; its presence is dropped.
macro_rules! helpers {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function away(prefix, id, chans, ttl)
  local owner = prefix .. ':id:' .. id
  local due = now_ms() + tonumber(ttl)
  redis.call('HSET', owner, 'state', 'away', 'channels', chans, 'until', due)
  redis.call('PEXPIRE', owner, tonumber(ttl) + 60000)
  for ch in string.gmatch(chans, '[^,]+') do
    redis.call('SADD', prefix .. ':away:c:' .. ch, id)
  end
  redis.call('ZADD', prefix .. ':expiring', due, id)
end
local function past(owner)
  local cur = redis.call('HMGET', owner, 'state', 'until')
  return cur[1] == 'away' and tonumber(cur[2] or 0) <= now_ms()
end
local function fits(owner, buf, len, max_msgs, max_bytes)
  if redis.call('LLEN', buf) >= tonumber(max_msgs) then return false end
  local used = tonumber(redis.call('HGET', owner, 'bufbytes') or '0')
  return used + len <= tonumber(max_bytes)
end
local function buffer(owner, buf, msg)
  redis.call('RPUSH', buf, msg)
  redis.call('HINCRBY', owner, 'bufbytes', #msg)
end
local function adopt(prefix, node, ttl)
  local pres = prefix .. ':presence:' .. node
  local recs = redis.call('HGETALL', pres)
  for i = 1, #recs, 2 do
    local id = recs[i]
    local cur = redis.call('HMGET', prefix .. ':id:' .. id, 'node', 'state')
    if cur[1] == node and cur[2] == 'on' then
      local ok, rec = pcall(cjson.decode, recs[i + 1])
      local chans = {}
      if ok and type(rec) == 'table' and type(rec.channels) == 'table' then chans = rec.channels end
      away(prefix, id, table.concat(chans, ','), ttl)
    end
  end
  redis.call('DEL', pres)
  redis.call('SREM', prefix .. ':nodes', node)
end
"#
    };
}

/// Routes one direct message. KEYS: the id's owner hash, its buffer.
/// ARGV: prefix, envelope, buffer limits in messages, offline ttl (ms),
/// buffer limit in bytes (`offline_max_messages`, `offline_max_bytes`),
/// history length, history ttl (ms).
/// Returns 0 no such id, 1 published to its node, 2 buffered, 3 buffer full.
///
/// An owner that is connected gets it on its node channel, framed
/// `D<epoch>:<seq>:<envelope>`: `seq` numbers the direct messages to that
/// node, and each is kept in its history (`<seq>:<epoch>:<envelope>`), so a
/// node whose link broke with a message in flight finds it there. When no
/// node listens (the owner died), or the client is away, it goes to the
/// id's buffer in Redis, so it outlives any node; its number is kept in
/// the history as `<seq>:-` (nothing to recover, no gap).
pub(super) const SEND: &str = concat!(
    helpers!(),
    r#"
local owner = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'state')
if not owner[1] or past(KEYS[1]) then return 0 end
if owner[3] == 'on' then
  local seq = redis.call('INCR', ARGV[1] .. ':seq:n:' .. owner[1])
  local hist = ARGV[1] .. ':hist:n:' .. owner[1]
  local n = redis.call('PUBLISH', ARGV[1] .. ':n:' .. owner[1], 'D' .. owner[2] .. ':' .. seq .. ':' .. ARGV[2])
  if n > 0 then
    redis.call('LPUSH', hist, seq .. ':' .. owner[2] .. ':' .. ARGV[2])
  else
    redis.call('LPUSH', hist, seq .. ':-')
  end
  redis.call('LTRIM', hist, 0, tonumber(ARGV[6]) - 1)
  redis.call('PEXPIRE', hist, ARGV[7])
  if n > 0 then return 1 end
  -- Nobody listens on the owner's channel: the node is gone. Its clients
  -- are away from now on; what is sent to them waits in Redis.
  adopt(ARGV[1], owner[1], ARGV[4])
end
if not fits(KEYS[1], KEYS[2], #ARGV[2], ARGV[3], ARGV[5]) then return 3 end
buffer(KEYS[1], KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
return 2
"#
);

/// Claims an id for a connection on this node. KEYS: the owner hash, the
/// buffer, this node's presence hash. ARGV: prefix, node, id, refuse (0/1),
/// presence JSON.
/// Returns {-1} when refused (the id is connected on a live node and the
/// policy refuses duplicates), else {epoch, buffered envelopes...}.
///
/// The claim number comes from one counter for the whole cluster, so it
/// only grows. A previous owner on another node is told on its node
/// channel, `K<epoch>:<id>`: it closes its connection (4001).
pub(super) const CLAIM: &str = concat!(
    helpers!(),
    r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'state')
local alive = cur[1] and cur[3] == 'on' and redis.call('EXISTS', ARGV[1] .. ':node:' .. cur[1]) == 1
if ARGV[4] == '1' and alive and cur[1] ~= ARGV[2] then return {-1} end
local epoch = redis.call('INCR', ARGV[1] .. ':epoch')
-- Back within the window: what was buffered is this connection's. Past
-- it (not yet reported): the buffer is left to the expiry report.
local late = past(KEYS[1])
local was = redis.call('HGET', KEYS[1], 'channels')
if was then
  for ch in string.gmatch(was, '[^,]+') do
    redis.call('SREM', ARGV[1] .. ':away:c:' .. ch, ARGV[3])
  end
end
redis.call('HDEL', KEYS[1], 'channels', 'until', 'bufbytes')
if not late then redis.call('ZREM', ARGV[1] .. ':expiring', ARGV[3]) end
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'epoch', epoch, 'state', 'on')
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
if alive and cur[1] ~= ARGV[2] then
  redis.call('PUBLISH', ARGV[1] .. ':n:' .. cur[1], 'K' .. epoch .. ':' .. ARGV[3])
end
local out = {}
if not late then
  out = redis.call('LRANGE', KEYS[2], 0, -1)
  redis.call('DEL', KEYS[2])
end
table.insert(out, 1, epoch)
return out
"#
);

/// Releases an id when its connection here ends. KEYS: the owner hash,
/// the buffer, this node's presence hash. ARGV: node, epoch, id, mode
/// ('away' or 'gone'), offline ttl (ms), buffer limit, prefix, the channels
/// it was in (comma-separated: a comma is not in a channel name), buffer
/// limit in bytes, then the envelopes still queued (oldest first). Away, the id joins its channels'
/// sets of members that are away, so broadcasts are buffered for it too.
/// Returns {0} when another claim holds the id now (the caller forwards
/// what was queued), {1, kept} when away (the first `kept` envelopes were
/// buffered, the rest did not fit), {2} when gone.
pub(super) const RELEASE: &str = concat!(
    helpers!(),
    r#"
redis.call('HDEL', KEYS[3], ARGV[3])
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {0} end
if ARGV[4] == 'gone' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {2}
end
away(ARGV[7], ARGV[3], ARGV[8], ARGV[5])
local kept = 0
for i = 10, #ARGV do
  if not fits(KEYS[1], KEYS[2], #ARGV[i], ARGV[6], ARGV[9]) then break end
  buffer(KEYS[1], KEYS[2], ARGV[i])
  kept = kept + 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1])) end
return {1, kept}
"#
);

/// Checks, after a reconnect, whether this node still holds one of its
/// ids. KEYS: the owner hash, the buffer, this node's presence hash. ARGV:
/// node, epoch, id, presence JSON.
/// Returns {0} lost to another claim, {2} missing (Redis lost it: the
/// caller claims it again), or {1, envelopes...} held: what was buffered
/// while the link was down (no listener on this node's channel made the
/// send script buffer it) is taken, and the id is `on` again.
pub(super) const CHECK: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if not cur[1] then return {2} end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {0} end
redis.call('HSET', KEYS[1], 'state', 'on')
redis.call('HDEL', KEYS[1], 'channels', 'bufbytes')
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
local out = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
table.insert(out, 1, 1)
return out
"#;

/// Publishes one broadcast. KEYS: for each target, its sequence counter,
/// its history list, its set of members that are away and its set of
/// nodes with members. ARGV: history length, history ttl (ms), the
/// envelope, prefix, buffer limit in messages, offline ttl (ms), each
/// target's pub/sub channel, the buffer limit in bytes, the calling node.
///
/// Each target numbers its publications (`INCR`) and keeps the last ones
/// (`LPUSH`, `LTRIM`): what goes out is `<seq>:<envelope>`, so a node that
/// sees a number jump knows it missed some and fetches them from the
/// history. When fewer nodes got it than have members, the ones nobody
/// listens for any more are gone: their clients become away. Never the
/// calling node: it is alive, its link only on its way back (and it
/// reached its own members itself, so buffering for them would deliver
/// twice). Members that
/// are away get it in their buffer, once however many targets they are in.
/// Returns {nodes reached (summed over the publications), clients
/// buffered, ids whose buffer was full...}.
pub(super) const PUBLISH: &str = concat!(
    helpers!(),
    r#"
local reached, buffered, full, seen = 0, 0, {}, {}
local n = #KEYS / 4
for i = 1, n do
  local seq = redis.call('INCR', KEYS[4 * i - 3])
  local framed = seq .. ':' .. ARGV[3]
  redis.call('LPUSH', KEYS[4 * i - 2], framed)
  redis.call('LTRIM', KEYS[4 * i - 2], 0, tonumber(ARGV[1]) - 1)
  redis.call('PEXPIRE', KEYS[4 * i - 2], ARGV[2])
  local got = redis.call('PUBLISH', ARGV[6 + i], framed)
  reached = reached + got
  if got < redis.call('SCARD', KEYS[4 * i]) then
    for _, node in ipairs(redis.call('SMEMBERS', KEYS[4 * i])) do
      if node ~= ARGV[#ARGV] and redis.call('PUBSUB', 'NUMSUB', ARGV[4] .. ':n:' .. node)[2] == 0 then
        adopt(ARGV[4], node, ARGV[6])
        redis.call('SREM', KEYS[4 * i], node)
      end
    end
  end
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[4 * i - 1])) do
    if not seen[id] then
      seen[id] = true
      local owner = ARGV[4] .. ':id:' .. id
      if redis.call('HGET', owner, 'state') == 'away' and not past(owner) then
        local buf = ARGV[4] .. ':buf:' .. id
        if fits(owner, buf, #ARGV[3], ARGV[5], ARGV[#ARGV - 1]) then
          buffer(owner, buf, ARGV[3])
          local ttl = redis.call('PTTL', owner)
          if ttl > 0 then redis.call('PEXPIRE', buf, ttl) end
          buffered = buffered + 1
        else
          table.insert(full, id)
        end
      else
        redis.call('SREM', KEYS[4 * i - 1], id)
      end
    end
  end
end
local out = {reached, buffered}
for _, id in ipairs(full) do table.insert(out, id) end
return out
"#
);

/// Disconnects an id wherever it is. KEYS: the owner hash, the buffer.
/// ARGV: prefix, id. Returns 1 when its node was told (`X0:<id>` on the
/// node channel) or, away, the id was forgotten; 0 when no node has it.
pub(super) const KICK: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'state')
if not cur[1] then return 0 end
if cur[2] == 'on' then
  local n = redis.call('PUBLISH', ARGV[1] .. ':n:' .. cur[1], 'X0:' .. ARGV[2])
  if n > 0 then return 1 end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"#;

/// Tells the node that has an id connected something (a join or leave
/// request). KEYS: the owner hash. ARGV: prefix, the frame. Returns how
/// many nodes received it: 0 when no node has the id connected.
pub(super) const TELL: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'state')
if not cur[1] or cur[2] ~= 'on' then return 0 end
return redis.call('PUBLISH', ARGV[1] .. ':n:' .. cur[1], ARGV[2])
"#;

/// Reports the offline windows that closed. KEYS: `P:expiring`. ARGV:
/// prefix, most ids per call. Returns {id, count, envelopes..., id, ...}:
/// what each id's buffer held. Atomic, so exactly one node reports each.
pub(super) const EXPIRE: &str = concat!(
    helpers!(),
    r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local owner = ARGV[1] .. ':id:' .. id
  local buf = ARGV[1] .. ':buf:' .. id
  local msgs = {}
  if redis.call('HGET', owner, 'state') ~= 'on' then
    msgs = redis.call('LRANGE', buf, 0, -1)
    local chans = redis.call('HGET', owner, 'channels')
    if chans then
      for ch in string.gmatch(chans, '[^,]+') do
        redis.call('SREM', ARGV[1] .. ':away:c:' .. ch, id)
      end
    end
    redis.call('DEL', owner)
  else
    -- Claimed late (after the window): the old buffer is still reported.
    msgs = redis.call('LRANGE', buf, 0, -1)
    redis.call('HDEL', owner, 'bufbytes')
  end
  redis.call('DEL', buf)
  table.insert(out, id)
  table.insert(out, #msgs)
  for _, m in ipairs(msgs) do table.insert(out, m) end
end
return out
"#
);

pub(super) struct Scripts {
    pub(super) send: Script,
    pub(super) publish: Script,
    pub(super) claim: Script,
    pub(super) release: Script,
    pub(super) check: Script,
    pub(super) kick: Script,
    pub(super) tell: Script,
    pub(super) expire: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            send: Script::new(SEND),
            publish: Script::new(PUBLISH),
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            check: Script::new(CHECK),
            kick: Script::new(KICK),
            tell: Script::new(TELL),
            expire: Script::new(EXPIRE),
        }
    }

    /// Loads the scripts the writer pipelines by hash (after a restart
    /// Redis has forgotten them: `NOSCRIPT`).
    pub(super) async fn load(&self, conn: &mut ConnectionManager) {
        for script in [&self.send, &self.publish] {
            let _ = script.prepare_invoke().load_async(conn).await;
        }
    }
}
