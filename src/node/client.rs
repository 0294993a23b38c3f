//! One connection's shared state on this node: what others need to reach
//! it (its mailbox, its wake-up, a close request) and what it reports.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{
            AtomicBool, AtomicU64,
            Ordering::{Acquire, Relaxed, Release},
        },
        Arc,
    },
    task::Context,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::mailbox::Mailbox;
use crate::{ClientId, ClientInfo, DisconnectReason, Format};

/// A request to close a connection, carried to its task. Made by
/// [`CloseRequest::now`] or [`CloseRequest::after_flush`] only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseRequest {
    /// Why; gives the close code and text.
    pub(crate) reason: DisconnectReason,
    /// Write what is queued before closing (shutdown) or not (replace, kick).
    pub(crate) flush: bool,
}

impl CloseRequest {
    /// Close without writing what is queued (replace, kick, 4008, a
    /// shutdown past its timeout): a write in progress is abandoned.
    pub(crate) fn now(reason: DisconnectReason) -> Self {
        CloseRequest {
            reason,
            flush: false,
        }
    }

    /// Write what is queued, then close (shutdown).
    pub(crate) fn after_flush(reason: DisconnectReason) -> Self {
        CloseRequest {
            reason,
            flush: true,
        }
    }
}

/// What a connection registers with: who it is and how it is written to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Joining<'a> {
    pub(crate) id: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) channels: &'a [String],
    pub(crate) format: Format,
    pub(crate) remote_addr: Option<SocketAddr>,
}

/// The shared state of one connection. Its task owns the socket; everything
/// here is what others need to reach it or report on it.
pub(crate) struct ClientState {
    /// Unique per connection, so a replaced connection cannot unregister or
    /// disturb its successor with the same id.
    pub(crate) conn_id: u64,
    pub(crate) id: ClientId,
    pub(crate) kind: Arc<str>,
    pub(crate) format: Format,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) connected_at: SystemTime,
    /// The client id's mailbox: what is queued for it. Shared with the
    /// connection that replaces this one or reconnects after it.
    pub(crate) mailbox: Arc<Mailbox>,
    /// Wakes this connection's task: the mailbox has messages, or a close
    /// was requested.
    pub(crate) wake: Arc<Notify>,
    /// A pending close request. A mutex because it is set from other tasks
    /// and read by the connection's; never held across an await.
    close: Mutex<Option<CloseRequest>>,
    /// Set with a close request that does not wait for the queue (replace,
    /// kick, 4008, shutdown past its timeout): a write in progress is
    /// abandoned for it. An atomic, so a write that is pending checks it
    /// with one load.
    pub(crate) close_now: AtomicBool,
    /// Set with any close request: the check made before each batch
    /// written is one load, not the lock.
    close_requested: AtomicBool,
    /// The connection task while it waits on a pending write, woken by such
    /// a request. An `AtomicWaker`: registering is a compare-and-swap, no
    /// lock and no waiter list on the write path.
    pub(crate) close_waker: AtomicWaker,
    /// In a cluster, the claim number under which this connection owns its
    /// id (0 on a single node): a message routed under a newer claim is
    /// not for it.
    epoch: AtomicU64,
    // Relaxed atomics: independent tallies, written by the connection task.
    pub(crate) last_received_ms: AtomicU64,
    pub(crate) last_sent_ms: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

impl ClientState {
    pub(crate) fn new(conn_id: u64, joining: &Joining<'_>, mailbox: Arc<Mailbox>) -> Self {
        ClientState {
            conn_id,
            id: mailbox.client.clone(),
            kind: Arc::from(joining.kind),
            format: joining.format,
            remote_addr: joining.remote_addr,
            connected_at: SystemTime::now(),
            mailbox,
            wake: Arc::new(Notify::new()),
            close: Mutex::new(None),
            close_now: AtomicBool::new(false),
            close_requested: AtomicBool::new(false),
            close_waker: AtomicWaker::new(),
            epoch: AtomicU64::new(0),
            last_received_ms: AtomicU64::new(0),
            last_sent_ms: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// Asks the connection's task to close. The first request wins, unless
    /// `force` (shutdown giving up on a flush). Returns whether this request
    /// was taken.
    pub(crate) fn request_close(&self, request: CloseRequest, force: bool) -> bool {
        let now = !request.flush;
        {
            let mut close = self.close.lock();
            if close.is_some() && !force {
                return false;
            }
            *close = Some(request);
            self.close_requested.store(true, Release);
        }
        self.wake.notify_one();
        if now {
            self.close_now.store(true, Release);
            self.close_waker.wake();
        }
        true
    }

    /// The claim number this connection holds its id under (a cluster).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Acquire)
    }

    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Release);
    }

    pub(crate) fn close_request(&self) -> Option<CloseRequest> {
        // Asked once per batch written: no lock until a close is requested.
        if !self.close_requested.load(Acquire) {
            return None;
        }
        self.close.lock().clone()
    }

    /// The close request to act on at once, if one was made: registers
    /// `cx`'s waker first, so a request made after this check wakes it.
    pub(crate) fn poll_close_now(&self, cx: &Context<'_>) -> Option<CloseRequest> {
        self.close_waker.register(cx.waker());
        if !self.close_now.load(Acquire) {
            return None;
        }
        self.close_request().filter(|c| !c.flush)
    }

    pub(crate) fn info(&self, channels: Vec<String>) -> ClientInfo {
        let at = |ms: u64| (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms));
        let (queued_messages, queued_bytes) = self.mailbox.len();
        ClientInfo {
            id: self.id.clone(),
            kind: self.kind.to_string(),
            channels,
            format: self.format,
            remote_addr: self.remote_addr,
            connected_at: self.connected_at,
            last_received_at: at(self.last_received_ms.load(Relaxed)),
            last_sent_at: at(self.last_sent_ms.load(Relaxed)),
            messages_in: self.messages_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            queued_messages,
            queued_bytes,
            node: None,
        }
    }
}
