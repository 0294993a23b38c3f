//! The select loop: a frame from the client, work in the mailbox, or the
//! ping and idle timer, until the connection must end.

use std::{sync::atomic::Ordering::Relaxed, task::Context};

use axum::extract::ws::Message;
use tokio::time::Instant;

use super::{rate_limit::RateLimit, read_signal::ReadSignal, socket::Socket, Connection, Ended};
use crate::{
    message::{after, after_from, now_ms},
    DisconnectReason,
};

impl Connection {
    /// Reads, writes and keeps time until the connection must end.
    ///
    /// One task owns the whole socket (no split halves and their lock): the
    /// `select!` drops its futures before a branch's handler runs, so the
    /// handlers may use the socket.
    pub(super) async fn serve(&self, socket: &mut Socket) -> Ended {
        let config = self.hub().config();
        let mut rate = RateLimit::new(
            config.max_inbound_messages_per_sec(),
            config.max_inbound_bytes_per_sec(),
            config.max_message_size(),
        );
        let (idle_timeout, ping_interval) = (config.idle_timeout(), config.ping_interval());
        // One timer serves both the pings and the idle timeout. A frame only
        // moves `idle_at` later; the timer is not touched on the per-frame
        // path, and when it fires early it is simply set again.
        let mut next_ping = after(ping_interval);
        let mut idle_at = after(idle_timeout);
        let timer = tokio::time::sleep_until(next_ping.min(idle_at));
        tokio::pin!(timer);
        let mut batch = Vec::new();
        let readable = ReadSignal::new();
        loop {
            tokio::select! {
                frame = readable.next_frame(socket) => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(reason)) => return reason.into(),
                        None => return DisconnectReason::ConnectionLost.into(),
                    };
                    let now = Instant::now();
                    idle_at = after_from(now, idle_timeout);
                    self.state().last_received_ms.store(now_ms() as u64, Relaxed);
                    match frame {
                        Message::Binary(_) | Message::Text(_) => {
                            if let Some(reason) = self.inbound(frame, &mut rate, now) {
                                return reason.into();
                            }
                        }
                        Message::Close(frame) => return DisconnectReason::ClientClosed(frame.map(|f| f.code)).into(),
                        // Pongs only prove liveness; tungstenite answers pings.
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                () = self.state().wake.notified() => {
                    // Not boxed: only a write that waits has a future of
                    // its own, boxed (the task keeps no room for it while
                    // idle: BENCHMARKS.md, issues 11 and 20).
                    match self.write_queued(socket, &mut batch).await {
                        Ok(None) => {}
                        Ok(Some(close)) => return close.reason.into(),
                        Err(stop) => return self.stopped(stop),
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= idle_at {
                        return DisconnectReason::IdleTimeout.into();
                    }
                    if now >= next_ping {
                        next_ping = after(ping_interval);
                        let mut fed = false;
                        let send = |cx: &mut Context<'_>| socket.poll_send_control(cx, None, &mut fed);
                        if let Err(stop) = Box::pin(self.write(send)).await {
                            return self.stopped(stop);
                        }
                    }
                    timer.as_mut().reset(next_ping.min(idle_at));
                }
            }
        }
    }
}
