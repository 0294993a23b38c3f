//! The Lua scripts the Redis backend runs: each a step that must be atomic
//! (read the owner of an id and act on it in one go), and each on the keys
//! of one hash tag (see [`keys`](super::keys)), so that in a Redis Cluster
//! it runs on one slot. What spans several tags (an id and its node, a
//! broadcast and the buffers of its members that are away) is done in
//! steps by the caller (the [writer](mod@super::writer) for sends and
//! broadcasts, [`ids`](super::ids) for claims, releases, adoptions and
//! expiry). Keys and messages are described in CLUSTER.md.
//!
//! Scripts that publish are told which command to use (`ARGV`):
//! `PUBLISH` on one instance, `SPUBLISH` in a Redis Cluster.

use redis::Script;

use super::conn::Conn;

/// Lua functions shared by the scripts.
macro_rules! helpers {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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
  local ttl = redis.call('PTTL', owner)
  if ttl > 0 then redis.call('PEXPIRE', buf, ttl) end
end
local function away(owner, chans, ttl)
  local due = now_ms() + tonumber(ttl)
  redis.call('HSET', owner, 'state', 'away', 'channels', chans, 'until', due)
  redis.call('PEXPIRE', owner, tonumber(ttl) + 60000)
  return due
end
"#
    };
}

/// Lua function that stamps a publication (see [`Mark`](super::subscriber::Mark)):
/// the store's clock in microseconds, or one above the stamp of the last
/// entry of history `hist` if that is later, so stamps only grow on one
/// store and a store that lost writes (a promoted replica) stamps its
/// publications above the ones it lost (its clock is past them), even
/// where it numbers them the same.
macro_rules! stamping {
    () => {
        r#"
local function stamp(hist)
  local head = redis.call('LINDEX', hist, 0)
  local prev = head and string.match(head, '^%d+%.(%d+):')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return string.format('%.0f', math.max(prev and tonumber(prev) + 1 or 0, now))
end
"#
    };
}

/// Where a direct message goes. KEYS: the id's owner hash, its buffer.
/// ARGV: the envelope, buffer limits in messages and bytes.
/// Returns {0} no such id (or its offline window closed), {1, node,
/// epoch} connected there (the caller publishes it with [`DIRECT`]), {2}
/// buffered (away), {3} the buffer is full.
pub(super) const ROUTE: &str = concat!(
    helpers!(),
    r#"
local owner = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'state')
if not owner[1] or past(KEYS[1]) then return {0} end
if owner[3] == 'on' then return {1, owner[1], owner[2]} end
if not fits(KEYS[1], KEYS[2], #ARGV[1], ARGV[2], ARGV[3]) then return {3} end
buffer(KEYS[1], KEYS[2], ARGV[1])
return {2}
"#
);

/// Publishes a direct message on its owner's node channel. KEYS: the
/// node's direct-message counter and history. ARGV: publish command, the
/// node channel, the claim number, the envelope, history length, history
/// ttl (ms). Returns how many subscribers got it, or, when none did (the
/// node looks gone), {0, the time in ms}: when it was seen so (see
/// [`ADOPT`]).
///
/// It goes out framed `D<epoch>:<seq>.<stamp>:<envelope>`: `seq` numbers
/// the direct messages to that node, and each is kept in its history
/// (`<seq>.<stamp>:<epoch>:<envelope>`), so a node whose link broke with
/// a message in flight finds it there. One nobody got is kept as
/// `<seq>.<stamp>:-` (the caller buffers it: nothing to recover, no gap).
pub(super) const DIRECT: &str = concat!(
    stamping!(),
    r#"
local seq = redis.call('INCR', KEYS[1])
local mark = seq .. '.' .. stamp(KEYS[2])
local n = redis.call(ARGV[1], ARGV[2], 'D' .. ARGV[3] .. ':' .. mark .. ':' .. ARGV[4])
if n > 0 then
  redis.call('LPUSH', KEYS[2], mark .. ':' .. ARGV[3] .. ':' .. ARGV[4])
else
  redis.call('LPUSH', KEYS[2], mark .. ':-')
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if n > 0 then return n end
local t = redis.call('TIME')
return {0, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
"#
);

/// Publishes a broadcast on one target. KEYS: its sequence counter, its
/// history list, its set of members that are away, its set of nodes with
/// members. ARGV: publish command, the pub/sub channel, the envelope,
/// history length, history ttl (ms), the calling node.
///
/// The target numbers and stamps its publications (`INCR`, `stamp`) and
/// keeps the last ones (`LPUSH`, `LTRIM`): what goes out is
/// `<seq>.<stamp>:<envelope>`, so a node that sees a number jump knows it
/// missed some and fetches them from the history. Returns {nodes reached, {nodes that may be gone}, {members
/// away}}: when fewer nodes got it than have members, the others (never
/// the caller: it reached its own members itself) are checked by the
/// caller; the members that are away get it in their buffers.
pub(super) const PUBLISH: &str = concat!(
    stamping!(),
    r#"
local seq = redis.call('INCR', KEYS[1])
local framed = seq .. '.' .. stamp(KEYS[2]) .. ':' .. ARGV[3]
redis.call('LPUSH', KEYS[2], framed)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local got = redis.call(ARGV[1], ARGV[2], framed)
local suspects = {}
if got < redis.call('SCARD', KEYS[4]) then
  for _, node in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    if node ~= ARGV[6] then table.insert(suspects, node) end
  end
end
return {got, suspects, redis.call('SMEMBERS', KEYS[3])}
"#
);

/// Where a pub/sub channel's numbering stands. KEYS: its counter, its
/// history. Returns {counter ('' when there is none), the newest history
/// entry ('' when there is none)}, read together.
pub(super) const MARK: &str = r#"
return {redis.call('GET', KEYS[1]) or '', redis.call('LINDEX', KEYS[2], 0) or ''}
"#;

/// Buffers a broadcast for a member that is away. KEYS: its owner hash,
/// its buffer. ARGV: the envelope, buffer limits in messages and bytes.
/// Returns 1 buffered, 3 the buffer is full, 0 not away (connected, or its
/// window closed), -1 no such id (the caller drops it from the set it
/// came from).
pub(super) const BUFFER: &str = concat!(
    helpers!(),
    r#"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state ~= 'away' or past(KEYS[1]) then return 0 end
if not fits(KEYS[1], KEYS[2], #ARGV[1], ARGV[2], ARGV[3]) then return 3 end
buffer(KEYS[1], KEYS[2], ARGV[1])
return 1
"#
);

/// Makes a client of a node that is gone away. KEYS: its owner hash.
/// ARGV: the node, its channels (comma-separated), offline ttl (ms), when
/// the node was seen gone (ms: nobody listened on its channel).
/// Returns its deadline, or 0 when the node no longer has it connected,
/// or checked or claimed it since it was seen gone (`checked`, written by
/// [`CLAIM`] and [`CHECK`]): its link was down a moment and is back, and
/// an adoption decided before that must not make a connected client
/// away.
pub(super) const ADOPT: &str = concat!(
    helpers!(),
    r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'state', 'checked')
if cur[1] ~= ARGV[1] or cur[2] ~= 'on' then return 0 end
if (tonumber(cur[3] or '0') or 0) > tonumber(ARGV[4]) then return 0 end
return away(KEYS[1], ARGV[2], ARGV[3])
"#
);

/// Claims an id for a connection on this node. KEYS: the owner hash, the
/// buffer. ARGV: node, refuse (0/1), the node found holding it, whether
/// that node is alive (0/1).
///
/// Returns {-2, node} when the policy refuses duplicates and another node
/// holds the id that the caller has not checked (it checks that node's
/// lease and asks again), {-1} refused (held on a live node), else
/// {epoch, previous node (if connected elsewhere) or '', the channels it
/// had while away, late (0/1), {buffered envelopes}}.
///
/// The claim number only grows per id: the larger of the last one plus
/// one and the time in microseconds (so a forgotten id starts above any
/// number it had before). Back within the offline window, what was
/// buffered is this connection's; past it (not yet reported, `late`), the
/// buffer is left to the expiry report.
pub(super) const CLAIM: &str = concat!(
    helpers!(),
    r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'state', 'channels')
local other = cur[3] == 'on' and cur[1] ~= ARGV[1]
if ARGV[2] == '1' and other then
  if cur[1] ~= ARGV[3] then return {-2, cur[1]} end
  if ARGV[4] == '1' then return {-1} end
end
local t = redis.call('TIME')
local epoch = math.max(tonumber(cur[2] or '0') + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
epoch = string.format('%.0f', epoch)
local late = past(KEYS[1])
redis.call('HDEL', KEYS[1], 'channels', 'until', 'bufbytes')
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'epoch', epoch, 'state', 'on', 'checked', now_ms())
redis.call('PERSIST', KEYS[1])
local out = {}
if not late then
  out = redis.call('LRANGE', KEYS[2], 0, -1)
  redis.call('DEL', KEYS[2])
end
return {epoch, other and cur[1] or '', cur[4] or '', late and 1 or 0, out}
"#
);

/// Releases an id when its connection here ends. KEYS: the owner hash,
/// the buffer. ARGV: node, epoch, mode ('away' or 'gone'), offline ttl
/// (ms), buffer limits in messages and bytes, the channels it was in
/// (comma-separated: a comma is not in a channel name), then the
/// envelopes still queued (oldest first).
/// Returns {0} when another claim holds the id now (the caller forwards
/// what was queued), {1, kept, deadline} when away (the first `kept`
/// envelopes were buffered, the rest did not fit), {2} when gone.
pub(super) const RELEASE: &str = concat!(
    helpers!(),
    r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {0} end
if ARGV[3] == 'gone' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {2}
end
local due = away(KEYS[1], ARGV[7], ARGV[4])
local kept = 0
for i = 8, #ARGV do
  if not fits(KEYS[1], KEYS[2], #ARGV[i], ARGV[5], ARGV[6]) then break end
  buffer(KEYS[1], KEYS[2], ARGV[i])
  kept = kept + 1
end
return {1, kept, due}
"#
);

/// Checks, after a reconnect, whether this node still holds one of its
/// ids. KEYS: the owner hash, the buffer. ARGV: node, epoch.
/// Returns {0} lost to another claim, {2} missing (Redis lost it: the
/// caller claims it again), or {1, envelopes...} held: what was buffered
/// while the link was down (its node looked gone) is taken, and the id is
/// `on` again, checked now.
pub(super) const CHECK: &str = concat!(
    helpers!(),
    r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if not cur[1] then return {2} end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {0} end
redis.call('HSET', KEYS[1], 'state', 'on', 'checked', now_ms())
redis.call('HDEL', KEYS[1], 'channels', 'until', 'bufbytes')
redis.call('PERSIST', KEYS[1])
local out = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
table.insert(out, 1, 1)
return out
"#
);

/// Forgets an id (`disconnect` of one that is away, or whose node is
/// gone). KEYS: the owner hash, the buffer. ARGV: the node and epoch it
/// was found with ('' for any). Returns 1 forgotten, 0 it changed since.
pub(super) const FORGET: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'state')
if not cur[1] then return 0 end
if ARGV[1] ~= '' and (cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] or cur[3] ~= 'on') then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"#;

/// Takes the ids whose offline window closed. KEYS: `P:{g}:expiring`.
/// ARGV: most ids per call. Atomic, so exactly one node reports each.
pub(super) const EXPIRING: &str = concat!(
    helpers!(),
    r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do redis.call('ZREM', KEYS[1], id) end
return due
"#
);

/// Closes one id's offline window. KEYS: the owner hash, the buffer.
/// Returns {channels it was away from, {envelopes its buffer held}}: what
/// to report. Away again with a later deadline: nothing ({'', {}}, its
/// new deadline brings it back). Claimed late: the old buffer is still
/// reported.
pub(super) const EXPIRE: &str = concat!(
    helpers!(),
    r#"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'away' and not past(KEYS[1]) then return {'', {}} end
local msgs = redis.call('LRANGE', KEYS[2], 0, -1)
local chans = ''
if state == 'on' then
  redis.call('HDEL', KEYS[1], 'bufbytes')
else
  chans = redis.call('HGET', KEYS[1], 'channels') or ''
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[2])
return {chans, msgs}
"#
);

/// Asks how many subscribers a node channel has. KEYS: a key of that
/// node's tag (its lease), so that in a Redis Cluster it runs on the
/// shard that owns the channel. ARGV: `NUMSUB` or `SHARDNUMSUB`, the
/// channel. Returns {subscribers, the time in ms} (when it was seen so:
/// see [`ADOPT`]).
pub(super) const LISTENERS: &str = concat!(
    helpers!(),
    r#"
return {redis.call('PUBSUB', ARGV[1], ARGV[2])[2], now_ms()}
"#
);

pub(super) struct Scripts {
    pub(super) route: Script,
    pub(super) direct: Script,
    pub(super) publish: Script,
    pub(super) buffer: Script,
    pub(super) adopt: Script,
    pub(super) claim: Script,
    pub(super) release: Script,
    pub(super) check: Script,
    pub(super) forget: Script,
    pub(super) expiring: Script,
    pub(super) expire: Script,
    pub(super) listeners: Script,
    pub(super) mark: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            route: Script::new(ROUTE),
            direct: Script::new(DIRECT),
            publish: Script::new(PUBLISH),
            buffer: Script::new(BUFFER),
            adopt: Script::new(ADOPT),
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            check: Script::new(CHECK),
            forget: Script::new(FORGET),
            expiring: Script::new(EXPIRING),
            expire: Script::new(EXPIRE),
            listeners: Script::new(LISTENERS),
            mark: Script::new(MARK),
        }
    }

    /// Loads the scripts run by hash in batches (after a restart or a
    /// failover Redis may not know them: `NOSCRIPT`). In a Redis Cluster
    /// `SCRIPT LOAD` goes to every master.
    pub(super) async fn load(&self, conn: &mut Conn) {
        let batched = [
            &self.route,
            &self.direct,
            &self.publish,
            &self.buffer,
            &self.adopt,
            &self.expire,
            &self.listeners,
            &self.mark,
        ];
        for script in batched {
            let _ = script.prepare_invoke().load_async(conn).await;
        }
    }
}

/// The scripts' decisions, run on a real `redis-server` (on the `PATH`).
#[cfg(test)]
mod tests {
    use super::*;

    /// A `redis-server` on a free port, without persistence; killed when
    /// dropped.
    struct Server(std::process::Child, u16);

    impl Server {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server on the PATH");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server started");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Server(child, port)
        }

        fn conn(&self) -> redis::Connection {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.1)).unwrap();
            client.get_connection().unwrap()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// An adoption decided before the node checked (or claimed) the id
    /// leaves it alone: the node's link was down a moment and is back. One
    /// decided after makes it away.
    #[test]
    fn an_adoption_older_than_the_last_check_does_nothing() {
        let server = Server::start();
        let mut conn = server.conn();
        let claim: Vec<redis::Value> = Script::new(CLAIM)
            .key("o:alice")
            .key("b:alice")
            .arg("n1")
            .arg(0)
            .arg("")
            .arg(0)
            .invoke(&mut conn)
            .unwrap();
        let epoch: String = redis::from_redis_value(claim[0].clone()).unwrap();
        let checked = |conn: &mut redis::Connection| -> u64 {
            redis::cmd("HGET")
                .arg("o:alice")
                .arg("checked")
                .query(conn)
                .unwrap()
        };
        let adopt = |conn: &mut redis::Connection, seen: u64| -> u64 {
            Script::new(ADOPT)
                .key("o:alice")
                .arg("n1")
                .arg("room")
                .arg(60_000)
                .arg(seen)
                .invoke(conn)
                .unwrap()
        };
        let state = |conn: &mut redis::Connection| -> String {
            redis::cmd("HGET")
                .arg("o:alice")
                .arg("state")
                .query(conn)
                .unwrap()
        };
        let claimed = checked(&mut conn);
        assert_eq!(
            adopt(&mut conn, claimed - 1),
            0,
            "seen gone before the claim"
        );

        // The node checks it again after an outage.
        let check: Vec<redis::Value> = Script::new(CHECK)
            .key("o:alice")
            .key("b:alice")
            .arg("n1")
            .arg(&epoch)
            .invoke(&mut conn)
            .unwrap();
        assert_eq!(check[0], redis::Value::Int(1), "still held");
        let at = checked(&mut conn);
        assert!(at >= claimed);
        assert_eq!(adopt(&mut conn, at - 1), 0, "seen gone before the check");
        assert_eq!(state(&mut conn), "on");

        assert!(adopt(&mut conn, at + 1) > 0, "seen gone after it: adopted");
        assert_eq!(state(&mut conn), "away");

        // A `checked` that is not a number (something else wrote it) does
        // not fence: the adoption goes ahead rather than fail.
        let _: () = redis::cmd("HSET")
            .arg("o:alice")
            .arg(&["state", "on", "checked", "garbage"])
            .query(&mut conn)
            .unwrap();
        assert!(adopt(&mut conn, at + 1) > 0, "not fenced by garbage");
    }
}
