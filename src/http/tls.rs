//! HTTPS and WSS with the same safe defaults as [`serve()`](crate::serve):
//! [`serve_tls`] (feature `tls`, on rustls with the `ring` provider;
//! [`Tls::from_config`] takes any other, aws-lc-rs for post-quantum key
//! exchange among them).
//!
//! ALPN offers `h2` and `http/1.1`: a browser then opens WebSockets over
//! HTTP/2 (RFC 8441) where it supports them, several on one connection,
//! and over HTTP/1.1 otherwise. The TLS handshake counts toward the header
//! read timeout: a client that stalls in it is closed as a slow request.
//!
//! ```no_run
//! use axum::Router;
//! use wspool::{Tls, WsPool};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = WsPool::new();
//! let app = Router::new().merge(wspool::route()).layer(pool.layer());
//! let tls = Tls::from_pem_files("cert.pem", "key.pem")?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
//! wspool::serve_tls(listener, app, &pool, tls).await?;
//! # Ok(())
//! # }
//! ```

use std::{path::Path, sync::Arc};

use axum::Router;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ServerConfig,
};
use tokio::net::TcpListener;

use super::server::{serve, Serve};
use crate::WsPool;

/// A server's TLS settings: its certificate chain and key, and ALPN `h2`
/// and `http/1.1`.
#[derive(Clone)]
pub struct Tls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Why TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate in it")]
    NoCertificate(String),
    /// rustls refused the certificate and key (a key that does not match,
    /// say).
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
}

impl Tls {
    /// A certificate chain (PEM, leaf first) and its private key (PEM:
    /// PKCS#8, PKCS#1 or SEC1), with rustls's safe defaults (TLS 1.2 and
    /// 1.3, its default cipher suites) and ALPN `h2`, `http/1.1`.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Tls, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let pem = |path: &Path, e: &dyn std::fmt::Display| TlsError::Pem {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem(cert, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(cert, &e))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.display().to_string()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, &e))?;
        // ring: no system toolchain beyond a C compiler (aws-lc-rs, rustls's
        // default, wants more to build). rustls deprecates ring's provider
        // for lacking post-quantum key exchange; for that, build a
        // `ServerConfig` with aws-lc-rs and use `Tls::from_config`.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Tls::from_config(config))
    }

    /// Your own rustls settings (client certificates, a certificate
    /// resolver, other providers). ALPN is set to `h2`, `http/1.1` when
    /// it is empty.
    pub fn from_config(mut config: ServerConfig) -> Tls {
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }
}

/// Serves `app` over TLS on `listener`, as [`serve()`] does over TCP (the
/// same options on the returned [`Serve`]); see the [module docs](self).
pub fn serve_tls(listener: TcpListener, app: Router, pool: &WsPool, tls: Tls) -> Serve {
    serve(listener, app, pool).tls(tls)
}
