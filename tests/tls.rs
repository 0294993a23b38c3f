//! HTTPS and WSS through `wspool::serve_tls` (feature `tls`): a
//! self-signed certificate made per test, WebSockets over HTTP/1.1 and
//! over HTTP/2 (ALPN `h2`) in one room, and what a bad certificate file or
//! a client that is not speaking TLS gets.
#![cfg(feature = "tls")]

mod common;

use std::{path::PathBuf, sync::Arc, time::Duration};

use common::{h2::H2, *};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::{io::AsyncReadExt, net::TcpStream};
use tokio_rustls::{
    client::TlsStream,
    rustls::{self, pki_types::ServerName},
    TlsConnector,
};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use wspool::{SendMsg, Tls, TlsError, WsPool};

/// A self-signed certificate for `localhost`, written to PEM files.
struct Cert {
    der: rustls::pki_types::CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

impl Cert {
    fn new() -> Cert {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "wspool-tls-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
        Cert {
            der: cert.der().clone(),
            cert: cert_path,
            key: key_path,
        }
    }

    /// A TLS client trusting only this certificate, offering `alpn`.
    fn connector(&self, alpn: &[u8]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        #[allow(deprecated)] // as the server's: ring builds with a C compiler only
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

async fn start_tls(pool: &WsPool, cert: &Cert) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = Tls::from_pem_files(&cert.cert, &cert.key).unwrap();
    let server = wspool::serve_tls(listener, app(pool), pool, tls)
        .header_read_timeout(Duration::from_millis(500))
        .with_graceful_shutdown(std::future::pending());
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

async fn tls_connect(cert: &Cert, addr: std::net::SocketAddr, alpn: &[u8]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = cert.connector(alpn).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
    tls
}

/// `wss://` over HTTP/1.1 and a WebSocket over HTTP/2 on TLS (ALPN `h2`)
/// share a room: both are verified against the certificate, both relay.
#[tokio::test]
async fn wss_over_http1_and_h2_share_a_room() {
    let cert = Cert::new();
    let pool = WsPool::new();
    let addr = start_tls(&pool, &cert).await;
    let mut events = pool.events();

    let tls = tls_connect(&cert, addr, b"http/1.1").await;
    let mut request = format!("wss://localhost:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "alice_room".parse().unwrap());
    let (mut alice, response) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(response.status(), 101);
    wait_connected(&mut events, "alice_room").await;

    let tls = tls_connect(&cert, addr, b"h2").await;
    let h2 = H2::handshake(tls, &format!("localhost:{}", addr.port())).await;
    let opened = h2.open("/ws", "bob_room").await;
    assert!(h2.connect_protocol_enabled());
    assert_eq!(
        (opened.status, opened.protocol.as_deref()),
        (200, Some("bob_room"))
    );
    wait_connected(&mut events, "bob_room").await;
    let mut bob = opened.ws.unwrap();

    let msg = text_msg("", &["room"], "over TLS");
    alice
        .send(Message::binary(msg.encode_to_vec()))
        .await
        .unwrap();
    let got = loop {
        match tokio::time::timeout(WAIT, bob.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => break SendMsg::decode(b).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        (got.msg.as_str(), got.from_client_id.as_str()),
        ("over TLS", "alice")
    );
}

/// A client that does not speak TLS, or stalls in the handshake, is
/// closed (the header read timeout covers the handshake), and the server
/// goes on serving.
#[tokio::test]
async fn plaintext_and_stalled_handshakes_are_closed() {
    let cert = Cert::new();
    let pool = WsPool::new();
    let addr = start_tls(&pool, &cert).await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    for stream in [&mut plain, &mut stalled] {
        let mut rest = Vec::new();
        // Closed by the server: the read ends (a TLS alert at most).
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "still open");
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
            "answered in plaintext"
        );
    }
    let _ok = tls_connect(&cert, addr, b"http/1.1").await;
}

/// Bad files are clear errors, not panics: a missing file, a file with no
/// certificate, a key that is not a key.
#[tokio::test]
async fn bad_pem_files_are_clear_errors() {
    let cert = Cert::new();
    let missing = cert.cert.with_file_name("missing.pem");
    assert!(matches!(
        Tls::from_pem_files(&missing, &cert.key),
        Err(TlsError::Pem { .. })
    ));
    let empty = cert.cert.with_file_name("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        Tls::from_pem_files(&empty, &cert.key),
        Err(TlsError::NoCertificate(_))
    ));
    let e = Tls::from_pem_files(&cert.cert, &cert.cert).unwrap_err();
    assert!(
        e.to_string().contains("key.pem") || e.to_string().contains("cert.pem"),
        "{e}"
    );
}
