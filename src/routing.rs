//! Routing: reaching clients by id, by channel, or all at once, with
//! receipts and reports for what cannot be delivered.
//!
//! Every path asks the local node first and hands what it
//! does not have to the [cluster](crate::cluster), when there is one: an id
//! that is not here, the other nodes' members of a channel, everyone
//! elsewhere. What arrives from other nodes comes in through
//! `cluster_deliver` and is routed locally by the same code.
//!
//! # Delivery guarantees
//!
//! - **Never silent.** A message handed to the pool is written to the
//!   client's socket, or refused at once with an error (`send`), or counted
//!   and reported: [`PoolEvent::Dropped`] (a full queue skipped by a
//!   broadcast) or [`PoolEvent::Undelivered`] (expired, offline window
//!   closed, offline buffer full, client disconnected by the server, pool
//!   shut down, no node has the id), with a receipt to the client it was
//!   relayed from.
//! - **Order.** Messages to one client are written highest `priority` first
//!   and, within one priority, in the order they were queued; so messages
//!   from one sender to one recipient at one priority arrive in the order
//!   sent, across reconnects and replacements too.
//! - **At most once.** A message is written to a connection at most once.
//!   "Delivered" means written to the socket: WebSocket has no
//!   acknowledgements, so what was written just before a connection drops
//!   without a closing handshake may be lost unreported. A client that
//!   closes with a closing handshake and reads until the server's close
//!   frame loses nothing: what was not written stays queued for it.
//! - **Offline buffer.** When a client disconnects (not when it is replaced
//!   or kicked), its mailbox stays for `offline_ttl`: `send` answers
//!   [`Delivery::Buffered`], channel broadcasts reach it, relayed direct
//!   messages get no status-4 receipt. A reconnect with the same id within
//!   the window gets the buffered messages first, then live traffic.
//!   Bounded per id (`offline_max_messages`, `offline_max_bytes`), in total
//!   (`offline_max_total_bytes`) and in clients (`offline_max_clients`).
//! - **Time to live.** A message not written within `message_ttl` (or the
//!   per-call [`SendOptions::ttl`]) is not written.

use std::{sync::Arc, time::Duration};

use crate::{
    config::RelayPolicy,
    event::UndeliveredReason,
    message::{receipt, status, Encoded},
    node::{FanOut, PushError},
    proto::cluster::Envelope,
    stats::bump,
    BroadcastError, ClientId, Delivery, PoolEvent, SendError, SendMsg, WsPool,
};

/// Options for one `send` or broadcast.
///
/// ```
/// use std::time::Duration;
/// use wspool::{SendMsg, SendOptions, WsPool};
///
/// let pool = WsPool::new();
/// let msg = SendMsg { to_client_id: "alice".into(), ..Default::default() };
/// let quick = SendOptions::new().ttl(Duration::from_secs(5));
/// assert!(pool.send_with(msg, &quick).is_err()); // alice is not connected
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct SendOptions {
    ttl: Option<Duration>,
}

impl SendOptions {
    /// The pool's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Not written after this long in a queue or offline buffer (instead of
    /// the pool's `message_ttl`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// The `send` error for a push that failed.
fn push_error(e: PushError, to: &str) -> SendError {
    match e {
        PushError::Full => SendError::QueueFull(ClientId::from(to)),
        PushError::Closed => SendError::NotConnected(ClientId::from(to)),
    }
}

impl WsPool {
    /// The time to live `options` give a message.
    pub(crate) fn ttl(&self, options: &SendOptions) -> Duration {
        options.ttl.unwrap_or(self.config().message_ttl)
    }

    /// Queues `msg` for the client `msg.to_client_id`, or buffers it while
    /// that client is away (see [the delivery guarantees](crate::routing)).
    /// Never waits. In a cluster, an id on another node is
    /// [`Delivery::Forwarded`] to it.
    ///
    /// # Errors
    /// [`SendError::EmptyTarget`] when `to_client_id` is empty,
    /// [`SendError::NotConnected`] when no such client is connected or
    /// away, [`SendError::QueueFull`] when its queue (or offline buffer) is
    /// at its limit, [`SendError::Unavailable`] when the id is not here and
    /// the cluster cannot be reached.
    pub fn send(&self, msg: SendMsg) -> Result<Delivery, SendError> {
        self.send_with(msg, &SendOptions::default())
    }

    /// [`send`](Self::send) with options (time to live).
    pub fn send_with(&self, msg: SendMsg, options: &SendOptions) -> Result<Delivery, SendError> {
        if msg.to_client_id.is_empty() {
            return Err(SendError::EmptyTarget);
        }
        let encoded = Encoded::new(Arc::new(msg), None, self.ttl(options));
        self.send_encoded(&encoded)
    }

    /// Routes `encoded` to `msg.to_client_id`: this node, or the cluster.
    fn send_encoded(&self, encoded: &Arc<Encoded>) -> Result<Delivery, SendError> {
        let to = &encoded.msg.to_client_id;
        match self.node().push(to, encoded) {
            Some(pushed) => pushed.map_err(|e| push_error(e, to)),
            None => self.send_remote(encoded, to),
        }
    }

    /// `to` is not on this node: the cluster's, if any.
    fn send_remote(&self, encoded: &Arc<Encoded>, to: &str) -> Result<Delivery, SendError> {
        match self.cluster() {
            None => Err(SendError::NotConnected(ClientId::from(to))),
            Some(cluster) => cluster.send(encoded, to),
        }
    }

    /// Queues `msg` for every member of any channel in `msg.channel`, each
    /// member once (clients that are away buffer it). Returns how many it
    /// reached on this node. A member whose queue is full is skipped:
    /// counted in [`Stats::dropped`](crate::Stats::dropped) and reported as
    /// [`PoolEvent::Dropped`]. In a cluster, the other nodes' members are
    /// reached too, and the count is this node's.
    ///
    /// # Errors
    /// [`BroadcastError::NoChannel`] when `msg.channel` is empty;
    /// [`BroadcastError::Unavailable`] when the cluster cannot be reached
    /// (this node's members were still reached).
    pub fn broadcast(&self, msg: SendMsg) -> Result<usize, BroadcastError> {
        self.broadcast_with(msg, &SendOptions::default())
    }

    /// [`broadcast`](Self::broadcast) with options (time to live).
    pub fn broadcast_with(
        &self,
        msg: SendMsg,
        options: &SendOptions,
    ) -> Result<usize, BroadcastError> {
        if msg.channel.is_empty() {
            return Err(BroadcastError::NoChannel);
        }
        let encoded = Encoded::new(Arc::new(msg), None, self.ttl(options));
        let out = self.fan_out(&encoded, "", &encoded.msg.channel, &[]);
        match self.cluster() {
            Some(cluster) => match cluster.broadcast(&encoded, &encoded.msg.channel) {
                Ok(()) => Ok(out.recipients),
                Err(e) => Err(BroadcastError::Unavailable {
                    local: out.recipients,
                    reason: e.to_string(),
                }),
            },
            None => Ok(out.recipients),
        }
    }

    /// Queues `msg` for every connected client (not those away). Returns
    /// how many it reached on this node; full queues are skipped as in
    /// [`broadcast`](Self::broadcast). In a cluster it is also published to
    /// every other node (a failure to is logged).
    pub fn broadcast_all(&self, msg: SendMsg) -> usize {
        self.broadcast_all_with(msg, &SendOptions::default())
    }

    /// [`broadcast_all`](Self::broadcast_all) with options (time to live).
    pub fn broadcast_all_with(&self, msg: SendMsg, options: &SendOptions) -> usize {
        self.broadcast_all_encoded(&Encoded::new(Arc::new(msg), None, self.ttl(options)))
    }

    fn broadcast_all_encoded(&self, encoded: &Arc<Encoded>) -> usize {
        let out = self.node().push_all(encoded);
        self.report_dropped(out.dropped, encoded);
        if let Some(cluster) = self.cluster() {
            if let Err(e) = cluster.broadcast_all(encoded) {
                tracing::warn!(error = %e, "broadcast_all reached this node only");
            }
        }
        out.recipients
    }

    /// Delivers to `to` (if here) and to this node's members of `channels`
    /// not in `skip`, each once; reports full queues.
    fn fan_out(
        &self,
        encoded: &Arc<Encoded>,
        to: &str,
        channels: &[String],
        skip: &[String],
    ) -> FanOut {
        let mut out = self.node().fan_out(encoded, to, channels, skip);
        self.report_dropped(std::mem::take(&mut out.dropped), encoded);
        out
    }

    fn report_dropped(&self, dropped: Vec<ClientId>, encoded: &Encoded) {
        for to in dropped {
            tracing::trace!(%to, "recipient's queue full: message skipped");
            self.emit(|| PoolEvent::Dropped {
                to,
                msg: encoded.msg.clone(),
            });
        }
    }

    /// Counts `n` undelivered messages, in all and by reason.
    fn count_undelivered(&self, reason: UndeliveredReason, n: u64) {
        let counters = self.counters();
        bump(&counters.undelivered, n);
        bump(&counters.undelivered_by[reason.index()], n);
    }

    /// Reports messages that will not be written to `to`: counted, an event
    /// each, and a receipt to the client each was relayed from.
    pub(crate) fn report_undelivered(
        &self,
        to: &ClientId,
        msgs: Vec<Arc<Encoded>>,
        reason: UndeliveredReason,
    ) {
        if msgs.is_empty() {
            return;
        }
        self.count_undelivered(reason, msgs.len() as u64);
        tracing::debug!(%to, count = msgs.len(), ?reason, "undelivered");
        for encoded in msgs {
            if let (Some(origin), Some(status)) = (&encoded.origin, reason.receipt_status()) {
                let text = format!("{} (to {to})", reason.describe());
                self.send_receipt(origin, receipt(&encoded.msg, status, &text));
            }
            self.emit(|| PoolEvent::Undelivered {
                to: to.clone(),
                msg: encoded.msg.clone(),
                reason,
            });
        }
    }

    /// Relays what a client sent (PROTOCOL.md section 3), with receipts.
    pub(crate) fn relay(&self, sender: &ClientId, msg: Arc<SendMsg>) {
        let config = self.config();
        let policy = config.relay_policy;
        if policy == RelayPolicy::Disabled {
            return;
        }
        let max_channels = config.max_channels_per_message;
        if msg.channel.len() > max_channels {
            bump(&self.counters().relays_refused, 1);
            let why = format!(
                "{} channels, more than the maximum of {max_channels} per message: not relayed",
                msg.channel.len()
            );
            self.send_receipt(sender, receipt(&msg, status::REFUSED, &why));
            return;
        }
        let encoded = Encoded::new(msg, Some(sender.clone()), config.message_ttl);
        let msg = &encoded.msg;
        if msg.to_client_id.is_empty() && msg.channel.is_empty() {
            if policy == RelayPolicy::TargetedOrAll {
                self.broadcast_all_encoded(&encoded);
            }
            return;
        }
        let out = self.fan_out(&encoded, &msg.to_client_id, &msg.channel, &[]);
        let mut direct = out
            .direct
            .map(|r| r.map_err(|e| push_error(e, &msg.to_client_id)));
        if let Some(cluster) = self.cluster() {
            if direct.is_none() && !msg.to_client_id.is_empty() {
                direct = Some(cluster.send(&encoded, &msg.to_client_id));
            }
            if !msg.channel.is_empty() {
                if let Err(e) = cluster.broadcast(&encoded, &msg.channel) {
                    let why = format!("not relayed to other nodes: {e}");
                    self.send_receipt(sender, receipt(msg, status::NOT_CONNECTED, &why));
                }
            }
        } else if direct.is_none() && !msg.to_client_id.is_empty() {
            direct = Some(Err(SendError::NotConnected(ClientId::from(
                msg.to_client_id.as_str(),
            ))));
        }
        let (status, reason) = match direct {
            Some(Err(SendError::NotConnected(_))) => {
                (status::NOT_CONNECTED, "recipient not connected")
            }
            Some(Err(SendError::Unavailable(_))) => {
                (status::NOT_CONNECTED, "recipient's node unreachable")
            }
            Some(Err(SendError::QueueFull(to))) => {
                self.emit(|| PoolEvent::Dropped {
                    to,
                    msg: msg.clone(),
                });
                (status::QUEUE_FULL, "recipient's queue full: dropped")
            }
            _ => return,
        };
        self.send_receipt(sender, receipt(msg, status, reason));
    }

    /// Tells client `sender` that a frame it sent was not read (undecodable,
    /// or over a rate limit): a receipt with `status` and no identifying
    /// fields, since the frame's were not read.
    pub(crate) fn refuse_frame(&self, sender: &ClientId, status: i32, reason: &str) {
        let frame = SendMsg {
            from_client_id: sender.to_string(),
            ..Default::default()
        };
        self.send_receipt(sender, receipt(&frame, status, reason));
    }

    /// Queues a receipt for client `to` (buffered if it is away; forwarded
    /// if it is on another node); one that does not fit is counted as
    /// dropped.
    pub(crate) fn send_receipt(&self, to: &str, receipt: SendMsg) {
        let encoded = Encoded::new(Arc::new(receipt), None, self.config().message_ttl);
        if self.node().push(to, &encoded).is_none() {
            if let Some(cluster) = self.cluster() {
                let _ = cluster.send(&encoded, to);
            }
        }
    }

    // ----- what arrives from other nodes -----

    /// Delivers an envelope that arrived from another node (through
    /// `via`, the channel it was published to, for a channel broadcast).
    /// A direct message for an id no longer here, or held here under an
    /// older claim than the envelope's, is routed on through the cluster.
    /// Returns how many clients here it was queued or buffered for (`None`:
    /// the message in it does not decode, nothing was done). With
    /// `clients` false (this node's clients got it from their buffers),
    /// only server-side subscriptions get a channel publication.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_deliver(
        &self,
        mut env: Envelope,
        via: Option<&str>,
        epoch: u64,
        clients: bool,
    ) -> Option<usize> {
        let encoded = crate::cluster::arrived(&mut env)?;
        if encoded.expires_at <= tokio::time::Instant::now() {
            let to = ClientId::from(env.to.as_str());
            self.report_undelivered(&to, vec![encoded], UndeliveredReason::Expired);
            return Some(0);
        }
        let reached = if !env.to.is_empty() {
            match self.node().push_fenced(&env.to, epoch, &encoded) {
                Some(Ok(_)) => 1,
                Some(Err(e)) => {
                    self.undeliverable(&encoded, &env.to, push_error(e, &env.to));
                    0
                }
                None => {
                    if let Err(e) = self.send_remote(&encoded, &env.to) {
                        self.undeliverable(&encoded, &env.to, e);
                    }
                    0
                }
            }
        } else if env.all {
            if clients {
                let out = self.node().push_all(&encoded);
                self.report_dropped(out.dropped, &encoded);
                out.recipients
            } else {
                0
            }
        } else {
            // Through `via`, the i-th target: members of the earlier ones
            // were reached through those.
            let Some(i) = via.and_then(|v| env.channels.iter().position(|c| c == v)) else {
                return Some(0);
            };
            let (this, before) = (&env.channels[i..=i], &env.channels[..i]);
            if clients {
                self.fan_out(&encoded, "", this, before).recipients
            } else {
                self.node().notify_subscribers(&encoded, this, before);
                0
            }
        };
        Some(reached)
    }

    /// [`broadcast`](Self::broadcast), answering how many clients it was
    /// queued or buffered for on every node of the cluster (on a single
    /// node, the same as `broadcast`). Waits for the other nodes' counts,
    /// at most the cluster's command timeout; a node that has not answered
    /// by then is not counted.
    ///
    /// # Errors
    /// As [`broadcast`](Self::broadcast).
    pub async fn cluster_broadcast(&self, msg: SendMsg) -> Result<usize, BroadcastError> {
        if msg.channel.is_empty() {
            return Err(BroadcastError::NoChannel);
        }
        let encoded = Encoded::new(Arc::new(msg), None, self.config().message_ttl);
        let local = self
            .fan_out(&encoded, "", &encoded.msg.channel, &[])
            .recipients;
        let Some(cluster) = self.cluster() else {
            return Ok(local);
        };
        match cluster
            .broadcast_counted(&encoded, Some(&encoded.msg.channel))
            .await
        {
            Ok(remote) => Ok(local + remote),
            Err(e) => Err(BroadcastError::Unavailable {
                local,
                reason: e.to_string(),
            }),
        }
    }

    /// [`broadcast_all`](Self::broadcast_all), answering how many clients
    /// it reached on every node (see [`cluster_broadcast`](Self::cluster_broadcast)).
    ///
    /// # Errors
    /// [`BroadcastError::Unavailable`] when the other nodes could not be
    /// reached (this node's clients were).
    pub async fn cluster_broadcast_all(&self, msg: SendMsg) -> Result<usize, BroadcastError> {
        let encoded = Encoded::new(Arc::new(msg), None, self.config().message_ttl);
        let out = self.node().push_all(&encoded);
        self.report_dropped(out.dropped, &encoded);
        let local = out.recipients;
        let Some(cluster) = self.cluster() else {
            return Ok(local);
        };
        match cluster.broadcast_counted(&encoded, None).await {
            Ok(remote) => Ok(local + remote),
            Err(e) => Err(BroadcastError::Unavailable {
                local,
                reason: e.to_string(),
            }),
        }
    }

    /// Closes (4002) the connection of `id` wherever it is in the cluster
    /// (on a single node: this node's), forgetting the id. Resolves to
    /// whether some node had it connected or away.
    ///
    /// # Errors
    /// [`SendError::Unavailable`] when the cluster cannot be reached.
    pub async fn cluster_disconnect(&self, id: &str) -> Result<bool, SendError> {
        if let Some(client) = self.client(id) {
            client.disconnect();
            return Ok(true);
        }
        match self.cluster() {
            Some(cluster) => cluster.disconnect(id).await,
            None => Ok(false),
        }
    }

    /// Closes (4001) the connection of `id` here if it holds the id under
    /// an older claim than `epoch`: another node has taken it over.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_replaced(&self, id: &str, epoch: u64) {
        if let Some(state) = self.node().conn(id) {
            if state.epoch() < epoch {
                let close = crate::client::CloseRequest {
                    reason: crate::DisconnectReason::Replaced,
                    flush: false,
                };
                state.request_close(close, false);
            }
        }
    }

    /// Reports a broadcast that did not reach the other nodes (the cluster
    /// failed after accepting it): an `Undelivered` event to no one in
    /// particular (`to` is empty), counted.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_lost(&self, encoded: &Arc<Encoded>) {
        self.count_undelivered(UndeliveredReason::ClusterUnavailable, 1);
        self.emit(|| PoolEvent::Undelivered {
            to: ClientId::from(""),
            msg: encoded.msg.clone(),
            reason: UndeliveredReason::ClusterUnavailable,
        });
    }

    /// The link to the cluster broke: reported once per outage.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_down(&self) {
        self.emit(|| PoolEvent::ClusterDown);
    }

    /// The link is back and this node's ids were checked: `closed` had been
    /// taken over meanwhile and were closed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_resynced(&self, closed: usize) {
        self.emit(|| PoolEvent::ClusterUp { closed });
    }

    /// Publications to `channel` were missed and are gone from its history.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_gap(&self, channel: &str, missed: u64) {
        let channel = channel.to_owned();
        self.emit(|| PoolEvent::ClusterGap { channel, missed });
    }

    /// The cluster's store lost its data (a Redis restart without
    /// persistence): offline buffers and histories are gone.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_data_lost(&self) {
        self.emit(|| PoolEvent::ClusterDataLost);
    }

    /// Puts what was buffered in the cluster for `state`'s id ahead of its
    /// queue; what does not fit is reported.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_take_buffered(
        &self,
        state: &crate::client::ClientState,
        buffered: Vec<Arc<Encoded>>,
    ) {
        let rest = self.node().prepend(state, buffered);
        self.report_undelivered(&state.id, rest, UndeliveredReason::OfflineFull);
    }

    /// Reports a direct message the cluster could not deliver: an event,
    /// and a receipt to the client it was relayed from.
    pub(crate) fn undeliverable(&self, encoded: &Arc<Encoded>, to: &str, why: SendError) {
        let status = match why {
            SendError::QueueFull(_) => status::QUEUE_FULL,
            _ => status::NOT_CONNECTED,
        };
        if let Some(origin) = &encoded.origin {
            self.send_receipt(origin, receipt(&encoded.msg, status, &why.to_string()));
        }
        let (to, msg) = (ClientId::from(to), encoded.msg.clone());
        if let SendError::QueueFull(_) = why {
            // Counted as dropped by the push that failed.
            self.emit(|| PoolEvent::Dropped { to, msg });
        } else {
            let reason = UndeliveredReason::NotConnected;
            self.count_undelivered(reason, 1);
            self.emit(|| PoolEvent::Undelivered { to, msg, reason });
        }
    }
}
