//! The handshake headers a client controls: `Sec-WebSocket-Protocol` (the
//! token) and `Sec-WebSocket-Key`. Any bytes: no panic, and what parses
//! obeys PROTOCOL.md section 1.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wspool::handshake::{parse_offers, valid_key, valid_name, TokenLimits};

fuzz_target!(|data: &[u8]| {
    // Up to three header lines, split at 0x00 bytes.
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == 0).take(3) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append("sec-websocket-protocol", v.clone());
            headers.insert("sec-websocket-key", v);
        }
    }
    let _ = valid_key(&headers);
    let limits = TokenLimits::new(16, 8, 4);
    if let Ok(token) = parse_offers(&headers, &limits) {
        assert!(valid_name(&token.id, limits.max_id_len), "{token:?}");
        assert!(token.channels.len() <= limits.max_channels, "{token:?}");
        for (i, c) in token.channels.iter().enumerate() {
            assert!(valid_name(c, limits.max_channel_len), "{token:?}");
            assert!(!token.channels[..i].contains(c), "repeated: {token:?}");
        }
        assert!(token.raw.starts_with(token.id.as_str()));
    }
});
