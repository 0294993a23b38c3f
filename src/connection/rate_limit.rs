//! Inbound rate limits of one connection: token buckets, kept by the
//! connection's own task (no lock, no sharing).
//!
//! A connection may send `max_inbound_messages_per_sec` data frames and
//! `max_inbound_bytes_per_sec` payload bytes a second, with a burst of one
//! second's worth (and always room for one message of `max_message_size`).
//! A frame past either limit is not decoded, seen or relayed: the sender
//! gets a receipt with status 7 (refused). Each refusal also takes a token
//! from a third bucket as large as the message limit; when that one is
//! empty (the client has kept sending at more than twice the allowed rate
//! for about a second) the connection is closed with 1008.

use std::time::Duration;

use tokio::time::Instant;

/// What to do with one inbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limits.
    Accept,
    /// Over a limit: refuse it with receipt 7.
    Refuse,
    /// Over a limit for too long: close with 1008.
    Close,
}

/// A token bucket: `capacity` tokens, refilled at `rate` a second.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
}

impl Bucket {
    fn new(rate: f64, capacity: f64) -> Self {
        Bucket {
            tokens: capacity,
            capacity,
            rate,
        }
    }

    fn refill(&mut self, elapsed: Duration) {
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.capacity);
    }

    fn has(&self, n: f64) -> bool {
        self.tokens >= n
    }

    fn take(&mut self, n: f64) {
        self.tokens -= n;
    }
}

/// The inbound limits of one connection.
#[derive(Debug)]
pub(crate) struct RateLimit {
    messages: Bucket,
    bytes: Bucket,
    /// Refusals allowed before the connection is closed.
    strikes: Bucket,
    last: Instant,
}

impl RateLimit {
    /// Limits of `messages` frames and `bytes` bytes a second; a frame of
    /// `max_message_size` always fits a full byte bucket.
    pub(crate) fn new(messages: u32, bytes: usize, max_message_size: usize) -> Self {
        let messages = f64::from(messages.max(1));
        let bytes = bytes.max(1) as f64;
        RateLimit {
            messages: Bucket::new(messages, messages),
            bytes: Bucket::new(bytes, bytes.max(max_message_size as f64)),
            strikes: Bucket::new(messages, messages),
            last: Instant::now(),
        }
    }

    /// Judges one frame of `len` payload bytes arriving at `now`.
    pub(crate) fn check(&mut self, len: usize, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        for bucket in [&mut self.messages, &mut self.bytes, &mut self.strikes] {
            bucket.refill(elapsed);
        }
        let len = len as f64;
        if self.messages.has(1.0) && self.bytes.has(len) {
            self.messages.take(1.0);
            self.bytes.take(len);
            return Verdict::Accept;
        }
        if self.strikes.has(1.0) {
            self.strikes.take(1.0);
            Verdict::Refuse
        } else {
            Verdict::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of one second's worth passes, the next is refused, and
    /// tokens come back with time.
    #[test]
    fn burst_then_refill() {
        let mut r = RateLimit::new(10, 1 << 20, 1024);
        let t0 = r.last;
        for _ in 0..10 {
            assert_eq!(r.check(1, t0), Verdict::Accept);
        }
        assert_eq!(r.check(1, t0), Verdict::Refuse);
        assert_eq!(r.check(1, t0 + Duration::from_millis(100)), Verdict::Accept);
    }

    /// The byte limit refuses on its own, and one maximum-size message
    /// always fits a full bucket even when it exceeds a second's bytes.
    #[test]
    fn bytes_limit() {
        let mut r = RateLimit::new(1000, 100, 500);
        let t0 = r.last;
        assert_eq!(r.check(500, t0), Verdict::Accept);
        assert_eq!(r.check(1, t0), Verdict::Refuse);
        assert_eq!(r.check(100, t0 + Duration::from_secs(1)), Verdict::Accept);
    }

    /// Sending at twice the rate is refused but not closed; faster than
    /// that for a second closes.
    #[test]
    fn sustained_abuse_closes() {
        let mut r = RateLimit::new(10, 1 << 20, 1024);
        let t0 = r.last;
        // 2x the rate for 3 s: every other frame refused, never closed.
        for i in 0..60u64 {
            let v = r.check(1, t0 + Duration::from_millis(50 * i));
            assert_ne!(v, Verdict::Close, "frame {i}");
        }
        // Then a flood at one instant: 10 more refusals, then close.
        let t1 = t0 + Duration::from_secs(3);
        let verdicts: Vec<_> = (0..40).map(|_| r.check(1, t1)).collect();
        assert!(verdicts.contains(&Verdict::Refuse));
        assert_eq!(verdicts.last(), Some(&Verdict::Close));
    }
}
