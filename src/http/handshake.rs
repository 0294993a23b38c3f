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

pub use crate::names::{
    check_channel, check_id, parse_token, valid_name, Token, TokenError, TokenLimits,
};

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
