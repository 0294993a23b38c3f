//! The outbound queue of one client id: a mailbox that outlives its
//! connection.
//!
//! Producers (`send`, broadcasts, relays) push shared, already-encoded
//! messages without waiting; the connection attached to the mailbox drains
//! them in batches, highest `priority` first and FIFO within a priority.
//! When the connection ends (not replaced, not kicked), the mailbox stays
//! registered under the client's id for `offline_ttl` and keeps accepting
//! messages within the offline limits; a reconnect with the same id attaches
//! to the same mailbox, so what was buffered comes first, in order, then live
//! traffic, with nothing in between. A replacement attaches the newcomer to
//! the same mailbox too: nothing lost, nothing twice.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
};

use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::{sync::Notify, time::Instant};

use crate::{message::Encoded, ClientId, Delivery, Format};

/// How long after a reconnect a copy of a message the client took from its
/// offline buffer in the cluster is dropped (see [`Mailbox::prepend`]):
/// long enough for the node's link to catch up after an outage.
pub(crate) const TOOK_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// The names of the messages a reconnected client took from its buffer in
/// the cluster, until `until`.
struct Took {
    names: HashSet<(Box<str>, u64)>,
    until: Instant,
}

/// What a burst leaves with an idle client: a queue grown beyond
/// `BURST_ROOM` entries gives its room back, down to `IDLE_ROOM`, once
/// drained; one that stays within `BURST_ROOM` never reallocates, so
/// steady traffic pays nothing (BENCHMARKS.md, `burst_idle_15k`). A
/// connection's batch never grows past `BURST_ROOM`.
pub(crate) const IDLE_ROOM: usize = 8;
pub(crate) const BURST_ROOM: usize = 32;

/// How much one drain takes, and when it happens (for the expiry check).
#[derive(Clone, Copy)]
pub(crate) struct Take {
    pub(crate) max_frames: usize,
    pub(crate) max_bytes: usize,
    pub(crate) now: Instant,
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// At the queue's (or offline buffer's) limits.
    Full,
    /// The mailbox is gone, or no longer belongs to the expected connection.
    Closed,
}

/// The limits every mailbox is held to, and the pool-wide tally of bytes
/// buffered for clients that are away.
pub(crate) struct MailLimits {
    pub(crate) queue_max_messages: usize,
    pub(crate) queue_max_bytes: usize,
    pub(crate) offline_max_messages: usize,
    pub(crate) offline_max_bytes: usize,
    pub(crate) offline_max_total_bytes: usize,
    /// Bytes in detached mailboxes, pool-wide. Only changed while holding
    /// the lock of the mailbox whose bytes move, so it never undercounts.
    pub(crate) offline_bytes: AtomicUsize,
}

pub(crate) struct Mailbox {
    /// Unique among mailboxes and subscriptions: the channel index key.
    pub(crate) key: u64,
    pub(crate) client: ClientId,
    /// A parking_lot mutex: critical sections move a few pointers and never
    /// await.
    state: Mutex<State>,
}

struct State {
    /// One lane per priority present, highest first. With one priority (the
    /// usual case) this is a single `VecDeque`, held inline: a broadcast
    /// pushes to thousands of mailboxes, and one pointer fewer to follow is
    /// one cache miss fewer per recipient.
    lanes: SmallVec<[Lane; 1]>,
    messages: usize,
    bytes: usize,
    /// The format of the attached (or last attached) connection: what
    /// `bytes` is counted in.
    format: Format,
    attached: Option<Attached>,
    /// Set when a push is refused for being full; cleared when the queue
    /// drains below half its limits. Drives `slow_client_timeout`.
    full_since: Option<Instant>,
    closed: bool,
    /// On the node's list of mailboxes for the sweeper to look at: set by
    /// the push that finds it unset (which lists it), cleared by a sweep
    /// that finds the mailbox empty. Under the lock the push takes anyway:
    /// no extra cache line per recipient.
    watched: bool,
    /// After a reconnect in a cluster: what the client took from its
    /// buffer there, so a live copy (or one recovered from a channel's
    /// history) is not written twice. None on a single node.
    took: Option<Box<Took>>,
}

/// A message accepted by [`Mailbox::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pushed {
    pub(crate) delivery: Delivery,
    /// The mailbox was not on the sweeper's list: the caller adds it.
    pub(crate) watch: bool,
}

struct Lane {
    priority: i32,
    /// One pointer each: a message's size (its encoding's in the
    /// mailbox's format, counted in `bytes`) is read from it again when
    /// needed, so a queue grown for a burst is half the size.
    entries: VecDeque<Arc<Encoded>>,
}

struct Attached {
    conn_id: u64,
    /// Wakes the attached connection's task.
    wake: Arc<Notify>,
}

impl Mailbox {
    pub(crate) fn new(key: u64, client: ClientId, format: Format) -> Self {
        Mailbox {
            key,
            client,
            state: Mutex::new(State {
                lanes: SmallVec::new(),
                messages: 0,
                bytes: 0,
                format,
                attached: None,
                full_since: None,
                closed: false,
                watched: false,
                took: None,
            }),
        }
    }

    /// Marks the mailbox as on the sweeper's list if it holds messages and
    /// is not on it: `true` when the caller is to add it.
    pub(crate) fn watch(&self) -> bool {
        let mut s = self.state.lock();
        s.messages > 0 && !std::mem::replace(&mut s.watched, true)
    }

    /// After a sweep: whether the mailbox stays on the list (it still
    /// holds messages). When it does not, the next push lists it again.
    pub(crate) fn still_watched(&self) -> bool {
        let mut s = self.state.lock();
        s.watched = s.messages > 0;
        s.watched
    }

    /// Queues `msg` (or buffers it while detached) unless full or closed.
    /// With `only_conn`, only while that connection is attached. Never waits.
    pub(crate) fn push(
        &self,
        msg: &Arc<Encoded>,
        limits: &MailLimits,
        only_conn: Option<u64>,
    ) -> Result<Pushed, PushError> {
        let mut s = self.state.lock();
        if s.closed {
            return Err(PushError::Closed);
        }
        if only_conn.is_some() && s.attached.as_ref().map(|a| a.conn_id) != only_conn {
            return Err(PushError::Closed);
        }
        // `took` first: a plain field under the lock held anyway, always
        // empty on a single node (the name is an atomic load).
        if let Some(took) = &s.took {
            if took.until <= Instant::now() {
                s.took = None;
            } else if msg.name().is_some_and(|name| took.names.contains(name)) {
                // Taken from its buffer already: delivered.
                let watch = false;
                return Ok(Pushed {
                    delivery: Delivery::Queued,
                    watch,
                });
            }
        }
        let len = msg.encoded_len(s.format);
        let delivery = if s.attached.is_some() {
            // A single message bigger than the byte limit still fits an empty
            // queue: the limit bounds the backlog, not the message.
            if s.messages >= limits.queue_max_messages
                || (s.messages > 0 && s.bytes + len > limits.queue_max_bytes)
            {
                s.full_since.get_or_insert_with(Instant::now);
                return Err(PushError::Full);
            }
            Delivery::Queued
        } else {
            if s.messages >= limits.offline_max_messages
                || s.bytes + len > limits.offline_max_bytes
                || limits.offline_bytes.load(Relaxed) + len > limits.offline_max_total_bytes
            {
                return Err(PushError::Full);
            }
            limits.offline_bytes.fetch_add(len, Relaxed);
            Delivery::Buffered
        };
        s.insert(msg.clone(), len);
        if s.messages == 1 {
            if let Some(a) = &s.attached {
                a.wake.notify_one();
            }
        }
        let watch = !std::mem::replace(&mut s.watched, true);
        Ok(Pushed { delivery, watch })
    }

    /// Moves up to `max_frames` messages (about `max_bytes`) for connection
    /// `conn_id` into `batch`, highest priority first, and messages expired
    /// at `now` into `expired`. Returns the payload bytes taken. Wakes the connection
    /// again if messages remain.
    pub(crate) fn drain(
        &self,
        conn_id: u64,
        batch: &mut Vec<Arc<Encoded>>,
        expired: &mut Vec<Arc<Encoded>>,
        take: Take,
        limits: &MailLimits,
    ) -> usize {
        let Take {
            max_frames,
            max_bytes,
            now,
        } = take;
        let mut s = self.state.lock();
        if s.attached.as_ref().map(|a| a.conn_id) != Some(conn_id) {
            return 0;
        }
        let mut taken = 0;
        let mut take = |msg: Arc<Encoded>, len: usize, batch: &mut Vec<Arc<Encoded>>| {
            if msg.expires_at <= now {
                expired.push(msg);
            } else {
                taken += len;
                batch.push(msg);
            }
            taken < max_bytes
        };
        let format = s.format;
        if let [lane] = &mut s.lanes[..] {
            // One priority (the usual case): straight off its lane, with no
            // search for the highest lane per message.
            let (mut count, mut freed) = (0, 0);
            while batch.len() < max_frames {
                let Some(msg) = lane.entries.pop_front() else {
                    break;
                };
                let len = msg.encoded_len(format);
                count += 1;
                freed += len;
                if !take(msg, len, batch) {
                    break;
                }
            }
            s.messages -= count;
            s.bytes -= freed;
        } else {
            while batch.len() < max_frames {
                let Some((msg, len)) = s.pop() else { break };
                if !take(msg, len, batch) {
                    break;
                }
            }
        }
        if s.messages * 2 <= limits.queue_max_messages && s.bytes * 2 <= limits.queue_max_bytes {
            s.full_since = None;
        }
        if s.messages > 0 {
            if let Some(a) = &s.attached {
                a.wake.notify_one();
            }
        } else {
            s.release();
        }
        taken
    }

    /// Attaches connection `conn_id`: from now on it alone drains the
    /// mailbox. Anything already queued is for it.
    pub(crate) fn attach(
        &self,
        conn_id: u64,
        wake: Arc<Notify>,
        format: Format,
        limits: &MailLimits,
    ) {
        let mut s = self.state.lock();
        if s.attached.is_none() {
            limits.offline_bytes.fetch_sub(s.bytes, Relaxed);
        }
        if s.format != format {
            s.format = format;
            let entries = s.lanes.iter().flat_map(|l| &l.entries);
            s.bytes = entries.map(|m| m.encoded_len(format)).sum();
        }
        s.full_since = None;
        if s.messages > 0 {
            wake.notify_one();
        }
        s.attached = Some(Attached { conn_id, wake });
    }

    /// Detaches connection `conn_id` (if still attached) to buffer for the
    /// client while it is away. Whatever exceeds the offline limits, newest
    /// and lowest priority first, goes to `trimmed`.
    pub(crate) fn detach(
        &self,
        conn_id: u64,
        limits: &MailLimits,
        trimmed: &mut Vec<Arc<Encoded>>,
    ) -> bool {
        let mut s = self.state.lock();
        if s.attached.as_ref().map(|a| a.conn_id) != Some(conn_id) {
            return false;
        }
        s.attached = None;
        s.full_since = None;
        while s.messages > limits.offline_max_messages
            || s.bytes > limits.offline_max_bytes
            || (s.messages > 0
                && limits.offline_bytes.load(Relaxed) + s.bytes > limits.offline_max_total_bytes)
        {
            match s.pop_back() {
                Some((msg, _)) => trimmed.push(msg),
                None => break,
            }
        }
        limits.offline_bytes.fetch_add(s.bytes, Relaxed);
        true
    }

    /// Puts `msgs` (oldest first) ahead of everything queued, each at the
    /// front of its priority's lane: messages buffered elsewhere for a
    /// client that reconnected here, older than anything queued since.
    /// Those past the queue's limits (the newest) are returned.
    ///
    /// A message that was buffered in the cluster can also reach this node
    /// live (published before the claim took the buffer, its publication
    /// behind the claim's answer) or from a channel's history (when the
    /// node's link catches up after an outage): copies already queued are
    /// dropped, and later ones are for [`TOOK_FOR`].
    pub(crate) fn prepend(
        &self,
        msgs: Vec<Arc<Encoded>>,
        limits: &MailLimits,
    ) -> Vec<Arc<Encoded>> {
        let mut s = self.state.lock();
        let names: HashSet<(Box<str>, u64)> =
            (msgs.iter()).filter_map(|m| m.name().cloned()).collect();
        if !names.is_empty() {
            let (mut gone, mut gone_bytes) = (0, 0);
            let format = s.format;
            for lane in &mut s.lanes {
                lane.entries.retain(|m| {
                    let copy = m.name().is_some_and(|n| names.contains(n));
                    if copy {
                        gone += 1;
                        gone_bytes += m.encoded_len(format);
                    }
                    !copy
                });
            }
            s.messages -= gone;
            s.bytes -= gone_bytes;
            if s.attached.is_none() {
                limits.offline_bytes.fetch_sub(gone_bytes, Relaxed);
            }
            s.drop_empty_lanes();
            let until = Instant::now() + TOOK_FOR;
            s.took = Some(Box::new(Took { names, until }));
        }
        let (mut messages, mut bytes) = (s.messages, s.bytes);
        let mut fit = Vec::with_capacity(msgs.len());
        let mut rest = Vec::new();
        for msg in msgs {
            let len = msg.encoded_len(s.format);
            let full = messages >= limits.queue_max_messages
                || (messages > 0 && bytes + len > limits.queue_max_bytes);
            if full || !rest.is_empty() || s.closed {
                rest.push(msg);
            } else {
                messages += 1;
                bytes += len;
                fit.push((msg, len));
            }
        }
        if s.attached.is_none() {
            limits.offline_bytes.fetch_add(bytes - s.bytes, Relaxed);
        }
        for (msg, len) in fit.into_iter().rev() {
            s.insert_front(msg, len);
        }
        if s.messages > 0 {
            if let Some(a) = &s.attached {
                a.wake.notify_one();
            }
        }
        rest
    }

    /// Closes the mailbox for good, returning what it still held.
    pub(crate) fn close(&self, limits: &MailLimits) -> Vec<Arc<Encoded>> {
        let mut s = self.state.lock();
        s.closed = true;
        if s.attached.take().is_none() {
            limits.offline_bytes.fetch_sub(s.bytes, Relaxed);
        }
        let mut out = Vec::with_capacity(s.messages);
        while let Some((msg, _)) = s.pop() {
            out.push(msg);
        }
        out
    }

    /// Removes the messages whose time to live has passed into `out`.
    pub(crate) fn expire(&self, now: Instant, limits: &MailLimits, out: &mut Vec<Arc<Encoded>>) {
        let mut s = self.state.lock();
        if s.messages == 0 {
            return;
        }
        let mut freed = 0;
        let mut count = 0;
        let format = s.format;
        for lane in &mut s.lanes {
            lane.entries.retain(|msg| {
                let keep = msg.expires_at > now;
                if !keep {
                    freed += msg.encoded_len(format);
                    count += 1;
                    out.push(msg.clone());
                }
                keep
            });
        }
        if count > 0 {
            s.messages -= count;
            s.bytes -= freed;
            if s.attached.is_none() {
                limits.offline_bytes.fetch_sub(freed, Relaxed);
            }
            s.drop_empty_lanes();
        }
    }

    /// Messages and bytes held now.
    pub(crate) fn len(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.messages, s.bytes)
    }

    /// Since when the attached connection's queue has been full, if it is.
    pub(crate) fn full_since(&self) -> Option<Instant> {
        let s = self.state.lock();
        s.attached.as_ref().and(s.full_since)
    }
}

impl State {
    fn insert(&mut self, msg: Arc<Encoded>, len: usize) {
        let i = self.lane(msg.priority());
        self.lanes[i].entries.push_back(msg);
        self.messages += 1;
        self.bytes += len;
    }

    /// The index of `priority`'s lane, made if missing. Lanes are sorted
    /// highest first: the first not above `priority` is its lane, or where
    /// its lane goes.
    #[inline]
    fn lane(&mut self, priority: i32) -> usize {
        let i = (self.lanes.iter())
            .position(|l| l.priority <= priority)
            .unwrap_or(self.lanes.len());
        if self.lanes.get(i).is_none_or(|l| l.priority != priority) {
            let entries = VecDeque::new();
            self.lanes.insert(i, Lane { priority, entries });
        }
        i
    }

    fn insert_front(&mut self, msg: Arc<Encoded>, len: usize) {
        let i = self.lane(msg.priority());
        self.lanes[i].entries.push_front(msg);
        self.messages += 1;
        self.bytes += len;
    }

    /// The next message to send: highest priority, oldest.
    fn pop(&mut self) -> Option<(Arc<Encoded>, usize)> {
        let i = self.lanes.iter().position(|l| !l.entries.is_empty())?;
        let msg = self.lanes[i].entries.pop_front()?;
        Some(self.took(msg))
    }

    /// The last message that would be sent.
    fn pop_back(&mut self) -> Option<(Arc<Encoded>, usize)> {
        let i = self.lanes.iter().rposition(|l| !l.entries.is_empty())?;
        let msg = self.lanes[i].entries.pop_back()?;
        Some(self.took(msg))
    }

    /// Counts `msg` out of the queue; with its size.
    fn took(&mut self, msg: Arc<Encoded>) -> (Arc<Encoded>, usize) {
        let len = msg.encoded_len(self.format);
        self.messages -= 1;
        self.bytes -= len;
        self.drop_empty_lanes();
        (msg, len)
    }

    /// Once the queue is empty: gives back what a burst grew beyond
    /// [`BURST_ROOM`] entries, down to [`IDLE_ROOM`].
    fn release(&mut self) {
        for lane in &mut self.lanes {
            if lane.entries.capacity() > BURST_ROOM {
                lane.entries.shrink_to(IDLE_ROOM);
            }
        }
    }

    /// Keeps at most one empty lane (its allocation is reused).
    fn drop_empty_lanes(&mut self) {
        if self.lanes.len() > 1 {
            self.lanes.retain(|l| !l.entries.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::SendMsg;

    fn limits(q: usize, off: usize) -> MailLimits {
        MailLimits {
            queue_max_messages: q,
            queue_max_bytes: 1 << 20,
            offline_max_messages: off,
            offline_max_bytes: 1 << 20,
            offline_max_total_bytes: 1 << 20,
            offline_bytes: AtomicUsize::new(0),
        }
    }

    fn msg(text: &str, priority: i32, ttl: Duration) -> Arc<Encoded> {
        let m = SendMsg {
            msg: text.into(),
            priority,
            ..Default::default()
        };
        Encoded::new(Arc::new(m), None, ttl)
    }

    fn texts(batch: &[Arc<Encoded>]) -> Vec<String> {
        batch.iter().map(|m| m.msg.msg.clone()).collect()
    }

    fn attached(l: &MailLimits) -> (Mailbox, Arc<Notify>) {
        let mb = Mailbox::new(1, "a".into(), Format::Binary);
        let wake = Arc::new(Notify::new());
        mb.attach(7, wake.clone(), Format::Binary, l);
        (mb, wake)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Up to `n` messages, any size, now.
    fn take(n: usize) -> Take {
        Take {
            max_frames: n,
            max_bytes: usize::MAX,
            now: Instant::now(),
        }
    }

    /// A burst's room is given back once the queue is drained, and not
    /// before: an idle client keeps at most `IDLE_ROOM` entries.
    #[test]
    fn a_drained_burst_gives_its_room_back() {
        let l = limits(1000, 1000);
        let (mb, _wake) = attached(&l);
        let capacity = |mb: &Mailbox| -> usize {
            let s = mb.state.lock();
            s.lanes.iter().map(|l| l.entries.capacity()).sum()
        };
        for i in 0..200 {
            mb.push(&msg(&i.to_string(), 0, HOUR), &l, None).unwrap();
        }
        assert!(capacity(&mb) >= 200);
        let (mut batch, mut expired) = (Vec::new(), Vec::new());
        mb.drain(7, &mut batch, &mut expired, take(150), &l);
        assert!(capacity(&mb) >= 50, "released while messages remain");
        batch.clear();
        mb.drain(7, &mut batch, &mut expired, take(150), &l);
        assert_eq!(batch.len(), 50);
        assert!(capacity(&mb) <= IDLE_ROOM, "kept {}", capacity(&mb));

        // Steady traffic within `BURST_ROOM` keeps its room: no
        // reallocation per message.
        for i in 0..BURST_ROOM {
            mb.push(&msg(&i.to_string(), 0, HOUR), &l, None).unwrap();
        }
        let steady = capacity(&mb);
        batch.clear();
        mb.drain(7, &mut batch, &mut expired, take(BURST_ROOM), &l);
        assert_eq!(batch.len(), BURST_ROOM);
        assert_eq!(capacity(&mb), steady, "kept while within BURST_ROOM");
    }

    /// A drain stops at its frame limit and just past its byte limit, and
    /// what it leaves is counted, with one priority (the fast path) and
    /// with several.
    #[test]
    fn a_drain_takes_at_most_its_limits() {
        // Priorities of one byte each: every message is the same size.
        for priorities in [&[1][..], &[1, 5]] {
            let l = limits(100, 100);
            let (mb, _) = attached(&l);
            for i in 0..10 {
                let p = priorities[i % priorities.len()];
                mb.push(&msg("0123456789", p, HOUR), &l, None).unwrap();
            }
            let (_, all) = mb.len();
            let each = all / 10;
            let (mut batch, mut expired) = (Vec::new(), Vec::new());
            let taken = mb.drain(7, &mut batch, &mut expired, take(4), &l);
            assert_eq!((batch.len(), taken), (4, 4 * each));
            assert_eq!(mb.len(), (6, 6 * each));
            batch.clear();
            let by_bytes = Take {
                max_bytes: 2 * each + 1,
                ..take(100)
            };
            let taken = mb.drain(7, &mut batch, &mut expired, by_bytes, &l);
            assert_eq!((batch.len(), taken), (3, 3 * each), "{priorities:?}");
            assert_eq!(mb.len(), (3, 3 * each));
            batch.clear();
            mb.drain(7, &mut batch, &mut expired, take(100), &l);
            assert_eq!((batch.len(), mb.len()), (3, (0, 0)));
            assert!(expired.is_empty());
        }
    }

    /// Higher priority first, FIFO within a priority.
    #[test]
    fn priority_then_fifo() {
        let l = limits(100, 100);
        let (mb, _) = attached(&l);
        for (t, p) in [
            ("a0", 0),
            ("b5", 5),
            ("c0", 0),
            ("d9", 9),
            ("e5", 5),
            ("f-1", -1),
        ] {
            mb.push(&msg(t, p, HOUR), &l, None).unwrap();
        }
        let (mut batch, mut expired) = (Vec::new(), Vec::new());
        mb.drain(7, &mut batch, &mut expired, take(100), &l);
        assert_eq!(texts(&batch), ["d9", "b5", "e5", "a0", "c0", "f-1"]);
        assert_eq!(mb.len(), (0, 0));
    }

    /// Only the attached connection drains; a detached mailbox buffers within
    /// the offline limits and counts toward the pool-wide total.
    #[test]
    fn attach_detach_buffers() {
        let l = limits(10, 2);
        let (mb, _) = attached(&l);
        let pushed = mb.push(&msg("1", 0, HOUR), &l, None).map(|p| p.delivery);
        assert_eq!(pushed, Ok(Delivery::Queued));
        let mut trimmed = Vec::new();
        assert!(mb.detach(7, &l, &mut trimmed));
        assert!(trimmed.is_empty());
        let pushed = mb.push(&msg("2", 0, HOUR), &l, None).map(|p| p.delivery);
        assert_eq!(pushed, Ok(Delivery::Buffered));
        assert_eq!(mb.push(&msg("3", 0, HOUR), &l, None), Err(PushError::Full));
        assert_eq!(
            mb.push(&msg("x", 0, HOUR), &l, Some(7)),
            Err(PushError::Closed)
        );
        let total = l.offline_bytes.load(Relaxed);
        assert_eq!(total, mb.len().1);
        let (mut batch, mut expired) = (Vec::new(), Vec::new());
        assert_eq!(mb.drain(7, &mut batch, &mut expired, take(10), &l), 0);
        mb.attach(8, Arc::new(Notify::new()), Format::Binary, &l);
        assert_eq!(l.offline_bytes.load(Relaxed), 0);
        mb.drain(8, &mut batch, &mut expired, take(10), &l);
        assert_eq!(texts(&batch), ["1", "2"]);
    }

    /// Prepended messages come before everything queued, by priority,
    /// oldest first; what does not fit (the newest) comes back.
    #[test]
    /// In a cluster a message taken from the offline buffer at a claim
    /// can also arrive live (its publication behind the claim's answer)
    /// or from a channel's history: the copy already queued is dropped,
    /// and a later one too; other messages are not.
    fn a_message_taken_from_the_buffer_is_not_written_twice() {
        let l = limits(10, 10);
        let (mb, _) = attached(&l);
        let named = |text: &str, n: u64| {
            let m = msg(text, 0, HOUR);
            m.set_name("node-a", n);
            m
        };
        mb.push(&named("x", 1), &l, None).unwrap();
        mb.push(&msg("local", 0, HOUR), &l, None).unwrap();
        mb.push(&named("y", 2), &l, None).unwrap();
        let rest = mb.prepend(vec![named("x", 1)], &l);
        assert!(rest.is_empty());
        // The live copy of x comes again (from a history): dropped.
        mb.push(&named("x", 1), &l, None).unwrap();
        let (mut batch, mut expired) = (Vec::new(), Vec::new());
        mb.drain(7, &mut batch, &mut expired, take(10), &l);
        assert_eq!(texts(&batch), ["x", "local", "y"]);
    }

    #[test]
    fn prepend_goes_first() {
        let l = limits(4, 4);
        let (mb, _) = attached(&l);
        mb.push(&msg("live", 0, HOUR), &l, None).unwrap();
        let earlier = ["b1", "b2", "b3", "b4"].map(|t| msg(t, 0, HOUR)).to_vec();
        let rest = mb.prepend(earlier, &l);
        assert_eq!(texts(&rest), ["b4"]);
        let (mut batch, mut expired) = (Vec::new(), Vec::new());
        mb.drain(7, &mut batch, &mut expired, take(10), &l);
        assert_eq!(texts(&batch), ["b1", "b2", "b3", "live"]);
    }

    /// Detaching trims the newest beyond the offline limits.
    #[test]
    fn detach_trims_newest() {
        let l = limits(10, 2);
        let (mb, _) = attached(&l);
        for t in ["1", "2", "3", "4"] {
            mb.push(&msg(t, 0, HOUR), &l, None).unwrap();
        }
        let mut trimmed = Vec::new();
        mb.detach(7, &l, &mut trimmed);
        let t: Vec<_> = trimmed.iter().map(|m| m.msg.msg.clone()).collect();
        assert_eq!(t, ["4", "3"]);
        assert_eq!(mb.len().0, 2);
    }

    /// Expired messages are removed by a sweep and skipped by a drain.
    #[tokio::test(start_paused = true)]
    async fn expiry() {
        let l = limits(10, 10);
        let (mb, _) = attached(&l);
        mb.push(&msg("short", 0, Duration::from_secs(1)), &l, None)
            .unwrap();
        mb.push(&msg("long", 0, HOUR), &l, None).unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let mut out = Vec::new();
        mb.expire(Instant::now(), &l, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].msg.msg, "short");
        mb.push(&msg("short2", 0, Duration::from_secs(1)), &l, None)
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let (mut batch, mut expired) = (Vec::new(), Vec::new());
        mb.drain(7, &mut batch, &mut expired, take(10), &l);
        assert_eq!(texts(&batch), ["long"]);
        assert_eq!(expired.len(), 1);
    }

    /// A refused push marks the queue full until it drains below half.
    #[test]
    fn full_since_hysteresis() {
        let l = limits(4, 4);
        let (mb, _) = attached(&l);
        for _ in 0..4 {
            mb.push(&msg("m", 0, HOUR), &l, None).unwrap();
        }
        assert!(mb.full_since().is_none());
        assert_eq!(mb.push(&msg("m", 0, HOUR), &l, None), Err(PushError::Full));
        assert!(mb.full_since().is_some());
        let (mut batch, mut expired) = (Vec::new(), Vec::new());
        mb.drain(7, &mut batch, &mut expired, take(1), &l);
        assert!(mb.full_since().is_some(), "3 of 4 is not below half");
        batch.clear();
        mb.drain(7, &mut batch, &mut expired, take(1), &l);
        assert!(mb.full_since().is_none());
    }
}
