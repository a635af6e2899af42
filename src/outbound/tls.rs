//! Client TLS for wss:// (cargo feature `tls`): rustls with the ring provider, TLS 1.2
//! and 1.3, the server's name checked against its certificate. Trust: the system's CA
//! certificates (`rustls-native-certs`: the distribution's bundle, `SSL_CERT_FILE`,
//! `SSL_CERT_DIR`), or with `--sslca=FILE` only the CAs in FILE. `--sslcert`/`--sslkey`
//! present a client certificate to servers that ask for one. `--insecure` skips the
//! certificate check (the handshake signatures are still verified, so the peer holds the
//! key of the certificate it showed, whoever that is); it is logged as a warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::tls::{load_roots, read_certs, read_key, TlsError};

/// The connector for every wss:// connection of this run.
pub fn connector(
    ca: Option<&Path>,
    client_cert: Option<&(PathBuf, PathBuf)>,
    insecure: bool,
) -> Result<TlsConnector, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Setup)?;
    let builder = match (insecure, ca) {
        (true, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider))),
        (false, Some(ca)) => builder.with_root_certificates(load_roots(ca)?),
        (false, None) => builder.with_root_certificates(system_roots()?),
    };
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs(cert, "--sslcert")?;
            let key_der = read_key(key)?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|why| TlsError::KeyMismatch {
                    key: key.clone(),
                    cert: cert.clone(),
                    why,
                })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

fn system_roots() -> Result<RootCertStore, TlsError> {
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
        return Err(TlsError::NoSystemRoots);
    }
    Ok(roots)
}

/// A TLS failure as one line in words (see [`crate::tls::explain`]), with a hint for the
/// usual certificate problems.
pub fn describe(e: &std::io::Error) -> String {
    let hint = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            rustls::CertificateError::UnknownIssuer => " (give its CA with --sslca=FILE)",
            rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. } => {
                " (the certificate is for another name: connect by a name it lists)"
            }
            rustls::CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
                " (or use --insecure for a test)"
            }
            _ => "",
        },
        _ => "",
    };
    format!("{}{hint}", crate::tls::explain_io(e, "server certificate"))
}

/// `--insecure`: accepts any certificate, but still checks that the handshake was signed
/// with the key of the certificate shown.
#[derive(Debug)]
struct NoCertificateCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
