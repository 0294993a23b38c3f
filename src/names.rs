//! Ids and channel names, and their rules: one place for the rule and its
//! wording, wherever a name comes from (a handshake token,
//! [`WsPool::accept`](crate::WsPool::accept), `join`). Public through
//! [`handshake`](crate::handshake).

/// A parsed handshake token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Token {
    /// The offer exactly as the client sent it (echoed in the response).
    pub raw: String,
    /// The client's id.
    pub id: String,
    /// Its channels, in order, without duplicates.
    pub channels: Vec<String>,
}

/// The limits a token is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenLimits {
    /// Longest id in bytes.
    pub max_id_len: usize,
    /// Longest channel name in bytes.
    pub max_channel_len: usize,
    /// Most channels.
    pub max_channels: usize,
}

impl TokenLimits {
    /// Limits of `max_id_len` and `max_channel_len` bytes and
    /// `max_channels` channels.
    pub const fn new(max_id_len: usize, max_channel_len: usize, max_channels: usize) -> Self {
        TokenLimits {
            max_id_len,
            max_channel_len,
            max_channels,
        }
    }
}

impl Default for TokenLimits {
    fn default() -> Self {
        TokenLimits {
            max_id_len: 128,
            max_channel_len: 128,
            max_channels: 64,
        }
    }
}

/// Why no offer was usable. Its `Display` is the one-line body of the 400
/// response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No `Sec-WebSocket-Protocol` offer at all.
    #[error("missing Sec-WebSocket-Protocol: offer a token <id>[_<channel>]*")]
    Missing,
    /// The header is not visible ASCII.
    #[error("Sec-WebSocket-Protocol is not valid ASCII")]
    NotAscii,
    /// The token starts with `_`.
    #[error("empty id in token {0:?}: the token must start with the id")]
    EmptyId(String),
    /// The id has a character outside the token set.
    #[error("invalid id {0:?}: use RFC 7230 token characters other than '_'")]
    InvalidId(String),
    /// The id is longer than `max_id_len`.
    #[error("id is {len} bytes, more than the maximum of {max}")]
    IdTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A channel has a character outside the token set.
    #[error("invalid channel {0:?}: use RFC 7230 token characters other than '_'")]
    InvalidChannel(String),
    /// A channel is longer than `max_channel_len`.
    #[error("channel {name:?} is {len} bytes, more than the maximum of {max}", name = .name)]
    ChannelTooLong {
        /// The channel, cut to the limit.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than `max_channels` channels.
    #[error("{count} channels, more than the maximum of {max}")]
    TooManyChannels {
        /// How many were offered.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Is `b` an RFC 7230 `tchar` other than `_`?
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^`|~".contains(&b)
}

/// What is wrong with a name, by the one rule for ids and channels.
enum NameFault {
    TooLong,
    Invalid,
}

fn name_fault(name: &str, max_len: usize) -> Option<NameFault> {
    if name.len() > max_len {
        Some(NameFault::TooLong)
    } else if name.is_empty() || !name.bytes().all(is_name_byte) {
        Some(NameFault::Invalid)
    } else {
        None
    }
}

/// Checks one id or channel name.
pub fn valid_name(name: &str, max_len: usize) -> bool {
    name_fault(name, max_len).is_none()
}

/// Checks an id: the one rule (and wording) for ids, wherever they come
/// from (a token, [`WsPool::accept`](crate::WsPool::accept)).
pub fn check_id(id: &str, max_len: usize) -> Result<(), TokenError> {
    match name_fault(id, max_len) {
        None => Ok(()),
        Some(NameFault::TooLong) => Err(TokenError::IdTooLong {
            len: id.len(),
            max: max_len,
        }),
        Some(NameFault::Invalid) => Err(TokenError::InvalidId(cut(id, 64))),
    }
}

/// Checks a channel name: the one rule (and wording) for channels,
/// wherever they come from (a token, `accept`, `join`).
pub fn check_channel(channel: &str, max_len: usize) -> Result<(), TokenError> {
    match name_fault(channel, max_len) {
        None => Ok(()),
        Some(NameFault::TooLong) => Err(TokenError::ChannelTooLong {
            name: cut(channel, 64),
            len: channel.len(),
            max: max_len,
        }),
        Some(NameFault::Invalid) => Err(TokenError::InvalidChannel(cut(channel, 64))),
    }
}

fn cut(s: &str, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Parses one offer.
pub fn parse_token(offer: &str, limits: &TokenLimits) -> Result<Token, TokenError> {
    let mut parts = offer.split('_');
    let id = parts.next().unwrap_or_default();
    if id.is_empty() {
        return Err(TokenError::EmptyId(cut(offer, 64)));
    }
    check_id(id, limits.max_id_len)?;
    let mut channels: Vec<String> = Vec::new();
    for ch in parts.filter(|c| !c.is_empty()) {
        check_channel(ch, limits.max_channel_len)?;
        if !channels.iter().any(|c| c == ch) {
            if channels.len() == limits.max_channels {
                let count = channels.len() + 1;
                return Err(TokenError::TooManyChannels {
                    count,
                    max: limits.max_channels,
                });
            }
            channels.push(ch.to_owned());
        }
    }
    Ok(Token {
        raw: offer.to_owned(),
        id: id.to_owned(),
        channels,
    })
}
