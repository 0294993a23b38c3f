//! The inbound pipeline: one data frame from the client through the rate
//! limits, the decoder, stamping, callbacks, the event stream and the
//! relay.

use std::sync::Arc;

use axum::extract::ws::Message;
use tokio::time::Instant;

use super::{
    rate_limit::{RateLimit, Verdict},
    Connection,
};
use crate::{
    client::Relay,
    message::{decode, stamp, status},
    stats::bump,
    DisconnectReason, PoolEvent,
};

impl Connection {
    /// Handles one data frame from the client: rate limits, decode, stamp,
    /// callbacks, event, relay. Returns a reason to close when the client
    /// keeps flooding.
    pub(super) fn inbound(
        &self,
        frame: Message,
        rate: &mut RateLimit,
        now: Instant,
    ) -> Option<DisconnectReason> {
        let hub = self.hub();
        let state = self.state();
        let len = match &frame {
            Message::Binary(b) => b.len(),
            Message::Text(t) => t.len(),
            _ => 0,
        } as u64;
        let counters = hub.counters();
        bump(&counters.messages_in, 1);
        bump(&counters.bytes_in, len);
        bump(&state.messages_in, 1);
        bump(&state.bytes_in, len);
        tracing::trace!(len, "frame in");
        match rate.check(len as usize, now) {
            Verdict::Accept => {}
            Verdict::Refuse => {
                bump(&counters.rate_limited, 1);
                let why = "rate limit: message refused, slow down";
                hub.refuse_frame(&state.id, status::REFUSED, why);
                return None;
            }
            Verdict::Close => {
                bump(&counters.rate_limited, 1);
                tracing::debug!("inbound rate limit exceeded for too long: closing with 1008");
                return Some(DisconnectReason::RateLimited);
            }
        }

        let mut msg = match decode(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                bump(&counters.decode_errors, 1);
                hub.refuse_frame(&state.id, status::UNDECODABLE, &e.to_string());
                self.report(e);
                return None;
            }
        };
        stamp(&mut msg, &state.id);
        let mut relay = Relay::Continue;
        for callbacks in self.each_callbacks() {
            match callbacks.message(&self.client, &mut msg) {
                Ok(Relay::Continue) => {}
                Ok(Relay::Stop) => relay = Relay::Stop,
                Err(e) => {
                    self.report(e);
                    relay = Relay::Stop;
                }
            }
        }
        let msg = Arc::new(msg);
        hub.emit(|| PoolEvent::Message {
            from: state.id.clone(),
            msg: msg.clone(),
        });
        if relay == Relay::Continue {
            hub.relay(&state.id, msg);
        }
        None
    }
}
