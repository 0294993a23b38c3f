//! Reading a client's id and channels from `Sec-WebSocket-Protocol`.
//!
//! The client offers `<id>[_<channel>]*`: `1001_1_2` is id `1001` in
//! channels `1` and `2`. Ids and channels are 1 to 128 bytes (configurable)
//! of RFC 7230 token characters, `_` excluded. Empty channel segments
//! (`a__b`, a trailing `_`) are ignored and a repeated channel counts once;
//! the id segment must not be empty (`_room` is refused: it has no id).
//!
//! Several offers (comma-separated, or several header lines) are tried in
//! the client's order and the first that parses is used. The raw header is
//! read because axum's `requested_protocols()` returns offers sorted.
//!
//! ```
//! use http::HeaderMap;
//! use wspool::handshake::{parse_offers, TokenLimits};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("sec-websocket-protocol", "bad id!, alice_room1_room2".parse().unwrap());
//! let token = parse_offers(&headers, &TokenLimits::default()).unwrap();
//! assert_eq!(token.raw, "alice_room1_room2");
//! assert_eq!(token.id, "alice");
//! assert_eq!(token.channels, ["room1", "room2"]);
//! ```

use http::{header::SEC_WEBSOCKET_PROTOCOL, HeaderMap};

/// A parsed handshake token.
#[derive(Debug, Clone, PartialEq, Eq)]
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
pub struct TokenLimits {
    /// Longest id in bytes.
    pub max_id_len: usize,
    /// Longest channel name in bytes.
    pub max_channel_len: usize,
    /// Most channels.
    pub max_channels: usize,
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

/// Is the request's `Sec-WebSocket-Key` the base64 of 16 bytes, as RFC 6455
/// section 4.2.1 requires? (axum only checks that it is present.)
///
/// ```
/// use http::HeaderMap;
/// use wspool::handshake::valid_key;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
/// assert!(valid_key(&headers));
/// headers.insert("sec-websocket-key", "AAAA".parse().unwrap());
/// assert!(!valid_key(&headers));
/// ```
pub fn valid_key(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let mut keys = headers.get_all(http::header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(key), None) => base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .is_ok_and(|k| k.len() == 16),
        _ => false,
    }
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

/// The offers in `Sec-WebSocket-Protocol`, in the client's order.
pub fn offers(headers: &HeaderMap) -> Result<Vec<&str>, TokenError> {
    let mut out = Vec::new();
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let value = value.to_str().map_err(|_| TokenError::NotAscii)?;
        out.extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()));
    }
    Ok(out)
}

/// The first offer, in the client's order, that parses; otherwise why the
/// first offer did not.
pub fn parse_offers(headers: &HeaderMap, limits: &TokenLimits) -> Result<Token, TokenError> {
    let mut first_error = None;
    for offer in offers(headers)? {
        match parse_token(offer, limits) {
            Ok(token) => return Ok(token),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(TokenError::Missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> TokenLimits {
        TokenLimits::default()
    }

    /// The examples of PROTOCOL.md section 1.
    #[test]
    fn protocol_examples() {
        let t = parse_token("1001_1_2", &limits()).unwrap();
        assert_eq!(
            (t.id.as_str(), t.channels.clone()),
            ("1001", vec!["1".into(), "2".into()])
        );
        let t = parse_token("alice", &limits()).unwrap();
        assert!(t.channels.is_empty());
        let t = parse_token("a__b_", &limits()).unwrap();
        assert_eq!(t.channels, ["b"]);
        let t = parse_token("a_b_b", &limits()).unwrap();
        assert_eq!(t.channels, ["b"]);
    }

    /// Each way a token can be refused.
    #[test]
    fn refusals() {
        let l = TokenLimits {
            max_id_len: 4,
            max_channel_len: 3,
            max_channels: 2,
        };
        assert!(matches!(parse_token("_a", &l), Err(TokenError::EmptyId(_))));
        assert!(matches!(
            parse_token("abcde", &l),
            Err(TokenError::IdTooLong { len: 5, max: 4 })
        ));
        assert!(matches!(
            parse_token("a/b", &l),
            Err(TokenError::InvalidId(_))
        ));
        assert!(matches!(
            parse_token("a_x y", &l),
            Err(TokenError::InvalidChannel(_))
        ));
        assert!(matches!(
            parse_token("a_abcd", &l),
            Err(TokenError::ChannelTooLong { .. })
        ));
        assert!(matches!(
            parse_token("a_x_y_z", &l),
            Err(TokenError::TooManyChannels { count: 3, max: 2 })
        ));
        assert_eq!(
            parse_offers(&HeaderMap::new(), &l),
            Err(TokenError::Missing)
        );
    }

    /// Offers are tried in the client's order across lines and commas.
    #[test]
    fn client_order() {
        let mut h = HeaderMap::new();
        h.append(SEC_WEBSOCKET_PROTOCOL, "zed_1, bad/one".parse().unwrap());
        h.append(SEC_WEBSOCKET_PROTOCOL, "amy".parse().unwrap());
        assert_eq!(parse_offers(&h, &limits()).unwrap().raw, "zed_1");
        let mut h = HeaderMap::new();
        h.append(SEC_WEBSOCKET_PROTOCOL, "bad/one".parse().unwrap());
        h.append(SEC_WEBSOCKET_PROTOCOL, "zed, amy".parse().unwrap());
        assert_eq!(parse_offers(&h, &limits()).unwrap().raw, "zed");
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^`|~-]{1,20}"
    }

    proptest! {
        /// Any valid id and channels round-trip through a token.
        #[test]
        fn roundtrip(id in name(), chans in proptest::collection::vec(name(), 0..10)) {
            let raw = std::iter::once(id.clone()).chain(chans.iter().cloned()).collect::<Vec<_>>().join("_");
            let t = parse_token(&raw, &limits()).unwrap();
            prop_assert_eq!(&t.raw, &raw);
            prop_assert_eq!(&t.id, &id);
            let mut want: Vec<String> = Vec::new();
            for c in chans { if !want.contains(&c) { want.push(c); } }
            prop_assert_eq!(t.channels, want);
        }

        /// Whatever the input, the parser does not panic, and what it accepts
        /// is within the limits and made only of name characters.
        #[test]
        fn never_panics_and_accepts_only_valid(s in "\\PC{0,200}") {
            let l = TokenLimits { max_id_len: 16, max_channel_len: 8, max_channels: 4 };
            if let Ok(t) = parse_token(&s, &l) {
                prop_assert!(valid_name(&t.id, 16));
                prop_assert!(t.channels.len() <= 4);
                prop_assert!(t.channels.iter().all(|c| valid_name(c, 8)));
            }
        }

        /// In a list of offers the first valid one, in order, wins.
        #[test]
        fn first_valid_offer_wins(offers in proptest::collection::vec("[a-z_/ ]{0,8}", 1..6)) {
            let joined = offers.join(",");
            let Ok(value) = joined.parse() else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.insert(SEC_WEBSOCKET_PROTOCOL, value);
            let expected = offers.iter().map(|o| o.trim()).filter(|o| !o.is_empty())
                .find(|o| parse_token(o, &limits()).is_ok());
            let got = parse_offers(&h, &limits()).ok();
            prop_assert_eq!(got.map(|t| t.raw), expected.map(str::to_owned));
        }
    }
}
