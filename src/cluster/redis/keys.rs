//! The names of every key and channel in Redis (CLUSTER.md lists them).

/// Key and channel names (CLUSTER.md lists them all).
pub(super) struct Keys {
    pub(super) prefix: String,
    /// `P:c:`, made once: every publication a node receives is matched
    /// against it.
    channel_prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            channel_prefix: format!("{prefix}:c:"),
        }
    }
    /// The wspool channel a pub/sub channel `P:c:<name>` carries.
    pub(super) fn channel_name<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub.strip_prefix(self.channel_prefix.as_str())
    }
    pub(super) fn owner(&self, id: &str) -> String {
        format!("{}:id:{id}", self.prefix)
    }
    pub(super) fn buffer(&self, id: &str) -> String {
        format!("{}:buf:{id}", self.prefix)
    }
    pub(super) fn presence(&self, node: &str) -> String {
        format!("{}:presence:{node}", self.prefix)
    }
    pub(super) fn lease(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }
    pub(super) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    pub(super) fn node_channel(&self, node: &str) -> String {
        format!("{}:n:{node}", self.prefix)
    }
    pub(super) fn channel(&self, channel: &str) -> String {
        format!("{}{channel}", self.channel_prefix)
    }
    pub(super) fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }
    /// The publication counter of pub/sub channel `pubsub` (`P:c:<name>`
    /// or `P:all`).
    pub(super) fn sequence(&self, pubsub: &str) -> String {
        format!("{}:seq:{}", self.prefix, self.suffix(pubsub))
    }
    /// The recent publications of pub/sub channel `pubsub`.
    pub(super) fn history(&self, pubsub: &str) -> String {
        format!("{}:hist:{}", self.prefix, self.suffix(pubsub))
    }
    pub(super) fn suffix<'a>(&self, pubsub: &'a str) -> &'a str {
        pubsub
            .strip_prefix(self.prefix.as_str())
            .and_then(|s| s.strip_prefix(':'))
            .unwrap_or(pubsub)
    }
    /// The nodes with members in pub/sub channel `pubsub`.
    pub(super) fn nodes_of(&self, pubsub: &str) -> String {
        format!("{}:chnodes:{}", self.prefix, self.suffix(pubsub))
    }
    /// The members of pub/sub channel `pubsub` that are away.
    pub(super) fn away(&self, pubsub: &str) -> String {
        format!("{}:away:{}", self.prefix, self.suffix(pubsub))
    }
    /// Set once per Redis lifetime: gone means Redis lost its data.
    pub(super) fn run(&self) -> String {
        format!("{}:run", self.prefix)
    }
}
