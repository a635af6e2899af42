//! Client TLS for wss:// (cargo feature `tls`): rustls with the ring provider, TLS 1.2
//! and 1.3, the server's name checked against its certificate. Trust: the system's CA
//! certificates (`rustls-native-certs`: the distribution's bundle, `SSL_CERT_FILE`,
//! `SSL_CERT_DIR`), or with `--sslca=FILE` only the CAs in FILE. `--sslcert`/`--sslkey`
//! present a client certificate to servers that ask for one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::tls::{load_roots, pem_error, read_certs};

/// The connector for every wss:// connection of this run.
pub fn connector(ca: Option<&Path>, client_cert: Option<&(PathBuf, PathBuf)>) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match ca {
        Some(ca) => load_roots(ca)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs(cert, "--sslcert")?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read --sslkey={}: {}", key.display(), pem_error(&e)))?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                format!(
                    "cannot use --sslkey={} with --sslcert={}: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "skipping a system CA certificate source");
    }
    let mut roots = RootCertStore::empty();
    let (_added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "system CA certificates that could not be used");
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates found on this system: install ca-certificates, set SSL_CERT_FILE, or give --sslca=FILE"
                .into(),
        );
    }
    Ok(roots)
}
