//! The names of every key and channel in Redis (CLUSTER.md lists them).
//!
//! Every name carries a hash tag (`{...}`): what one script touches shares
//! one tag, so in a Redis Cluster each script runs on one slot, and ids,
//! channels and nodes spread over the shards.
//!
//! | tag | keys (`P` is the prefix) |
//! |---|---|
//! | `{i:<id>}` | `P:{i:<id>}` owner hash, `P:{i:<id>}:buf` offline buffer |
//! | `{n:<node>}` | `P:{n:<node>}` pub/sub channel, `:seq`, `:hist` (direct messages), `:lease`, `:presence` |
//! | `{c:<name>}` | `P:{c:<name>}` pub/sub channel, `:seq`, `:hist`, `:away` (members away), `:nodes` (nodes with members) |
//! | `{all}` | `P:{all}` pub/sub channel, `:seq`, `:hist` |
//! | `{g}` | `P:{g}:nodes`, `P:{g}:expiring`, `P:{g}:run` |
//!
//! Ids, channels and node ids never contain `{`, `}` or `:` (the name
//! rules; a node id is checked when the engine starts).

/// Key and channel names.
pub(super) struct Keys {
    pub(super) prefix: String,
    /// `P:{c:`, made once: every publication a node receives is matched
    /// against it.
    channel_prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            channel_prefix: format!("{prefix}:{{c:"),
        }
    }

    /// The wspool channel a pub/sub channel `P:{c:<name>}` carries.
    pub(super) fn channel_name<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub
            .strip_prefix(self.channel_prefix.as_str())?
            .strip_suffix('}')
    }

    /// An id's owner hash: its node, claim number and state.
    pub(super) fn owner(&self, id: &str) -> String {
        format!("{}:{{i:{id}}}", self.prefix)
    }
    /// What waits in Redis for an id that is away.
    pub(super) fn buffer(&self, id: &str) -> String {
        format!("{}:{{i:{id}}}:buf", self.prefix)
    }
    /// A node's pub/sub channel (direct messages and control frames).
    pub(super) fn node_channel(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}", self.prefix)
    }
    pub(super) fn presence(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}:presence", self.prefix)
    }
    pub(super) fn lease(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}:lease", self.prefix)
    }
    /// The pub/sub channel of wspool channel `channel`.
    pub(super) fn channel(&self, channel: &str) -> String {
        format!("{}{channel}}}", self.channel_prefix)
    }
    /// The pub/sub channel of broadcasts to everyone.
    pub(super) fn all(&self) -> String {
        format!("{}:{{all}}", self.prefix)
    }
    /// The publication counter of pub/sub channel `pubsub` (a channel's,
    /// `all`'s, or a node's: its direct messages).
    pub(super) fn sequence(&self, pubsub: &str) -> String {
        format!("{pubsub}:seq")
    }
    /// The recent publications of pub/sub channel `pubsub`.
    pub(super) fn history(&self, pubsub: &str) -> String {
        format!("{pubsub}:hist")
    }
    /// The nodes with members in pub/sub channel `pubsub`.
    pub(super) fn nodes_of(&self, pubsub: &str) -> String {
        format!("{pubsub}:nodes")
    }
    /// The members of pub/sub channel `pubsub` that are away.
    pub(super) fn away(&self, pubsub: &str) -> String {
        format!("{pubsub}:away")
    }
    /// The live nodes.
    pub(super) fn nodes(&self) -> String {
        format!("{}:{{g}}:nodes", self.prefix)
    }
    /// Ids whose offline window closes, by deadline.
    pub(super) fn expiring(&self) -> String {
        format!("{}:{{g}}:expiring", self.prefix)
    }
    /// Set once per Redis lifetime: gone means Redis lost its data.
    pub(super) fn run(&self) -> String {
        format!("{}:{{g}}:run", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    /// What one script touches shares one hash tag.
    #[test]
    fn names_share_their_tag() {
        let k = Keys::new("P");
        assert_eq!(k.owner("bob"), "P:{i:bob}");
        assert_eq!(k.buffer("bob"), "P:{i:bob}:buf");
        let room = k.channel("room");
        assert_eq!(room, "P:{c:room}");
        assert_eq!(k.channel_name(&room), Some("room"));
        assert_eq!(k.channel_name(&k.all()), None);
        assert_eq!(k.channel_name(&k.node_channel("n1")), None);
        assert_eq!(k.sequence(&room), "P:{c:room}:seq");
        assert_eq!(k.away(&room), "P:{c:room}:away");
        assert_eq!(k.lease("n1"), "P:{n:n1}:lease");
        assert_eq!(k.history(&k.node_channel("n1")), "P:{n:n1}:hist");
    }
}
