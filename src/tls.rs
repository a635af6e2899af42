//! TLS for `--ssl` (cargo feature `tls`): a rustls server configuration from
//! `--sslcert`/`--sslkey` (PEM), TLS 1.2 and 1.3 only, ALPN `http/1.1` only, optional
//! client certificates (`--sslca`), and [`Tls::reload`] for SIGHUP. The handshake itself
//! runs in [`crate::server`], inside each connection's task.
//!
//! The crypto provider is ring: it builds with only a C compiler (aws-lc-rs needs cmake
//! and is larger), and it covers RSA, ECDSA (P-256, P-384) and Ed25519 keys.
//!
//! Reload builds a whole new server configuration (certificate, key and `--sslca`) and
//! swaps it behind a lock that each new handshake reads once: live sessions keep their
//! connection, new ones get the new files. Files that fail to load (unreadable, a key that
//! does not match the certificate, a bad CA file) are reported and the old configuration
//! stays in service.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// The TLS state the server shares: the current configuration, and what to rebuild it from.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
}

/// Serves one certificate and key.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

impl Tls {
    /// Loads the certificate, the key and the client CA; errors are one line naming the
    /// file (startup exit status 1).
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = build(files, &provider)?;
        Ok(Tls {
            current: Arc::new(RwLock::new(config)),
            files: files.clone(),
            provider,
        })
    }

    /// Rereads `--sslcert`, `--sslkey` and `--sslca`. On failure the old configuration
    /// stays in service.
    pub fn reload(&self) -> Result<(), String> {
        let config = build(&self.files, &self.provider)?;
        // A poisoned lock still holds a valid configuration (writers only swap an Arc).
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        Ok(())
    }

    /// The server side of the handshake (the caller bounds it with a timeout).
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let config = Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        TlsAcceptor::from(config).accept(tcp).await
    }
}

/// A server configuration from the files: TLS 1.3 and 1.2, ALPN `http/1.1`, client
/// certificates checked against `--sslca` when given.
fn build(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Arc<ServerConfig>, String> {
    let key = load_pair(files, provider)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                .build()
                .map_err(|e| format!("cannot use --sslca={}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(key)));
    // WebSocket upgrades need HTTP/1.1 (RFC 8441 over HTTP/2 is not supported).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let cert_shown = files.cert.display();
    let certs = read_certs(&files.cert, "--sslcert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("cannot read --sslkey={}: {}", files.key.display(), pem_error(&e)))?;
    let pair = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "cannot use --sslkey={} with --sslcert={cert_shown}: {e}",
            files.key.display()
        )
    })?;
    Ok(Arc::new(pair))
}

pub(crate) fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {flag}={shown}: {}", pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {flag}={shown}: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("cannot read {flag}={shown}: no PEM certificate in it"));
    }
    Ok(certs)
}

pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "--sslca")? {
        roots
            .add(cert)
            .map_err(|e| format!("cannot use --sslca={}: {e}", path.display()))?;
    }
    Ok(roots)
}

pub(crate) fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string().to_lowercase(),
        Error::NoItemsFound => "no PEM item of the expected kind in it".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}
