//! Who may start a connection now: connection slots, connections per client
//! address, handshakes in flight, and where a client's address comes from.
//!
//! Every handshake takes a ticket before any costly work (the token,
//! the authorisation hook, the upgrade). It holds:
//!
//! - a handshake permit (`max_handshakes_in_flight`), given back once the
//!   connection is registered or refused;
//! - a connection slot (`max_connections`) and one count against the
//!   client's address (`max_connections_per_ip`), given back when the
//!   connection is unregistered.
//!
//! IPv6 addresses are counted by their /64 prefix: one host usually holds
//! a whole /64, so counting single addresses would not limit it.
//!
//! Behind a load balancer every TCP peer is the balancer;
//! [`ClientIp`](crate::ClientIp) says which header carries the client's
//! address instead.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;

/// The key an address is counted under: IPv6 by its /64.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_handshakes_in_flight` handshakes are in progress (503).
    Busy,
    /// `max_connections` are held (503).
    Capacity,
    /// `max_connections_per_ip` are held from this address (429).
    PerIp,
}

/// Admission control for one pool.
pub(crate) struct Admission {
    /// One permit per connection, including upgrades in flight: enforces
    /// `max_connections` without taking the registry lock.
    slots: Arc<Semaphore>,
    /// One permit per handshake being processed.
    handshakes: Arc<Semaphore>,
    /// Connections per address key. A mutex held for one map operation,
    /// twice per connection, never across an await; an entry exists only
    /// while it counts a live connection, so the map is bounded by
    /// `max_connections`.
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Self {
        let permits = |n: usize| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        Admission {
            slots: permits(config.max_connections),
            handshakes: permits(config.max_handshakes_in_flight),
            per_ip: Arc::default(),
            max_per_ip: config.max_connections_per_ip,
        }
    }

    /// Admits a handshake from `ip` (unknown: not counted per address).
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Result<Ticket, Refusal> {
        let handshake = self
            .handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)?;
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Capacity)?;
        let per_ip = match ip {
            None => None,
            Some(ip) => {
                let key = ip_key(ip);
                let mut map = self.per_ip.lock();
                let count = map.get(&key).copied().unwrap_or(0);
                if count >= self.max_per_ip {
                    return Err(Refusal::PerIp);
                }
                map.insert(key, count + 1);
                Some(IpCount {
                    map: self.per_ip.clone(),
                    key,
                })
            }
        };
        Ok(Ticket {
            handshake: Some(handshake),
            _slot: slot,
            _per_ip: per_ip,
        })
    }

    /// Connections counted against `ip` now.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.per_ip.lock().get(&ip_key(ip)).copied().unwrap_or(0)
    }
}

/// An admitted handshake's hold on the pool's limits; see the module docs.
pub(crate) struct Ticket {
    handshake: Option<OwnedSemaphorePermit>,
    _slot: OwnedSemaphorePermit,
    _per_ip: Option<IpCount>,
}

impl Ticket {
    /// The handshake is over (registered or refused): free its permit,
    /// keep the connection's.
    pub(crate) fn handshake_done(&mut self) {
        self.handshake = None;
    }
}

/// One connection counted against an address; uncounted on drop.
struct IpCount {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl Drop for IpCount {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        if let Some(count) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_per_ip: usize, handshakes: usize) -> Admission {
        let config = Config {
            max_connections_per_ip: max_per_ip,
            max_handshakes_in_flight: handshakes,
            ..Config::default()
        };
        Admission::new(&config)
    }

    /// The per-address limit refuses the next connection and frees its
    /// count (and map entry) when a ticket is dropped.
    #[test]
    fn per_ip_counts_and_releases() {
        let a = admission(2, 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t1 = a.admit(Some(ip)).unwrap();
        let _t2 = a.admit(Some(ip)).unwrap();
        assert_eq!(a.admit(Some(ip)).err(), Some(Refusal::PerIp));
        assert!(a.admit(Some("10.0.0.2".parse().unwrap())).is_ok());
        drop(t1);
        assert_eq!(a.count(ip), 1);
        assert!(a.admit(Some(ip)).is_ok());
    }

    /// IPv6 addresses in one /64 share a count; another /64 does not.
    #[test]
    fn ipv6_counts_by_prefix() {
        let a = admission(1, 100);
        let _t = a.admit(Some("2001:db8:1:2::1".parse().unwrap())).unwrap();
        assert_eq!(
            a.admit(Some("2001:db8:1:2:ffff::9".parse().unwrap())).err(),
            Some(Refusal::PerIp)
        );
        assert!(a.admit(Some("2001:db8:1:3::1".parse().unwrap())).is_ok());
    }

    /// Handshake permits are given back by `handshake_done`, slots are not.
    #[test]
    fn handshakes_in_flight() {
        let a = admission(100, 1);
        let mut t = a.admit(None).unwrap();
        assert_eq!(a.admit(None).err(), Some(Refusal::Busy));
        t.handshake_done();
        let _t2 = a.admit(None).unwrap();
        assert_eq!(
            a.slots.available_permits(),
            Config::default().max_connections - 2
        );
    }
}
