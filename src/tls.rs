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
//!
//! Every certificate, key and CA file (here and for `--connect`'s client TLS) is read by
//! [`read_pem_file`]: only a regular file of at most 1 MiB, opened so that a FIFO or a
//! device in its place cannot block the open, read whole and then parsed from memory. A
//! key path replaced by a FIFO would otherwise hang the reload until something wrote to
//! it. [`Tls::reload`] still does file I/O, so its caller runs it off the async workers.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
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

mod explain;
pub use explain::{explain, explain_io};

/// The TLS state the server shares: the current configuration, and what to rebuild it from.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
}

/// A certificate, key or CA file that cannot be used, or a TLS setup failure: one line
/// naming the file (exit status 1 at startup; logged on SIGHUP).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot set up TLS: {}", explain(.0))]
    Setup(rustls::Error),
    #[error("cannot read {flag}={}: {why}", .path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        why: FileProblem,
    },
    #[error("cannot use --sslca={}: {why}", .path.display())]
    Ca { path: PathBuf, why: CaProblem },
    /// Also a certificate rustls cannot parse (X.509 v1) or a key type it cannot use.
    #[error("cannot use --sslkey={} with --sslcert={}: {}", .key.display(), .cert.display(), explain(.why))]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        why: rustls::Error,
    },
    /// `--connect=wss://` without `--sslca` on a system with no CA certificates.
    #[error(
        "no trusted CA certificates found on this system: install ca-certificates, set SSL_CERT_FILE, or give --sslca=FILE"
    )]
    NoSystemRoots,
}

/// Why a PEM file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("{}", lower(.0))]
    Io(io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {} MiB", MAX_PEM_FILE_BYTES >> 20)]
    TooBig,
    #[error("{}", pem_error(.0))]
    Pem(rustls::pki_types::pem::Error),
    #[error("no PEM certificate in it")]
    NoCertificate,
}

/// Why the CA file could not be used once read.
#[derive(Debug, thiserror::Error)]
pub enum CaProblem {
    #[error("{}", explain(.0))]
    Cert(rustls::Error),
    #[error("{0}")]
    Verifier(rustls::server::VerifierBuilderError),
}

/// An I/O error's text, lower-cased (the `(os error N)` tail kept, as it always was here).
fn lower(e: &io::Error) -> String {
    e.to_string().to_lowercase()
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
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = build(files, &provider)?;
        Ok(Tls {
            current: Arc::new(RwLock::new(config)),
            files: files.clone(),
            provider,
        })
    }

    /// Rereads `--sslcert`, `--sslkey` and `--sslca`. On failure the old configuration
    /// stays in service. It reads files: call it where blocking is allowed
    /// (`tokio::task::spawn_blocking`).
    pub fn reload(&self) -> Result<(), TlsError> {
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
fn build(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Arc<ServerConfig>, TlsError> {
    let key = load_pair(files, provider)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Setup)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                .build()
                .map_err(|e| TlsError::Ca {
                    path: ca.clone(),
                    why: CaProblem::Verifier(e),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(key)));
    // WebSocket upgrades need HTTP/1.1 (RFC 8441 over HTTP/2 is not supported).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(&files.cert, "--sslcert")?;
    let key = read_key(&files.key)?;
    let pair = CertifiedKey::from_der(certs, key, provider).map_err(|why| TlsError::KeyMismatch {
        key: files.key.clone(),
        cert: files.cert.clone(),
        why,
    })?;
    Ok(Arc::new(pair))
}

/// The most a certificate, key or CA file may hold; real ones are a few KiB (a CA bundle
/// about 200 KiB).
const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// The contents of `path` (given as `flag`), which must be a regular file of at most
/// [`MAX_PEM_FILE_BYTES`]. `O_NONBLOCK` makes opening a FIFO return at once instead of
/// waiting for a writer (it changes nothing for reading a regular file), `O_NOCTTY` keeps
/// a terminal from becoming ours; then `fstat` on the open file refuses anything else,
/// with no window for the path to be swapped in between.
pub(crate) fn read_pem_file(path: &Path, flag: &'static str) -> Result<Vec<u8>, TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |why| TlsError::Read {
        flag,
        path: path.to_owned(),
        why,
    };
    let io_fail = |e| fail(FileProblem::Io(e));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_fail)?;
    let meta = file.metadata().map_err(io_fail)?;
    if !meta.file_type().is_file() {
        return Err(fail(FileProblem::NotRegular));
    }
    let too_big = || fail(FileProblem::TooBig);
    if meta.len() > MAX_PEM_FILE_BYTES {
        return Err(too_big());
    }
    let mut pem = Vec::with_capacity(meta.len() as usize);
    // One byte past the cap tells a file that grew since the fstat.
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(io_fail)?;
    if pem.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(too_big());
    }
    Ok(pem)
}

/// The private key in `path` (`--sslkey`).
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem_file(path, "--sslkey")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Read {
        flag: "--sslkey",
        path: path.to_owned(),
        why: FileProblem::Pem(e),
    })
}

pub(crate) fn read_certs(path: &Path, flag: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |why| TlsError::Read {
        flag,
        path: path.to_owned(),
        why,
    };
    let pem = read_pem_file(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(FileProblem::Pem(e)))?;
    if certs.is_empty() {
        return Err(fail(FileProblem::NoCertificate));
    }
    Ok(certs)
}

pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "--sslca")? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_owned(),
            why: CaProblem::Cert(e),
        })?;
    }
    Ok(roots)
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string().to_lowercase(),
        Error::NoItemsFound => "no PEM item of the expected kind in it".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wsbridge-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        d
    }

    #[test]
    fn pem_files_must_be_small_regular_files() {
        let d = scratch("pem-read");
        let ok = d.join("ok.pem");
        std::fs::write(&ok, "-----BEGIN X-----\n").expect("write");
        assert_eq!(
            read_pem_file(&ok, "--sslcert").expect("a regular file"),
            b"-----BEGIN X-----\n"
        );

        // Opening a FIFO nobody writes to must not wait for a writer.
        let fifo = d.join("fifo.key");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let e = read_pem_file(&fifo, "--sslkey").expect_err("a FIFO").to_string();
        assert_eq!(
            e,
            format!("cannot read --sslkey={}: not a regular file", fifo.display())
        );
        let e = read_pem_file(&d, "--sslca").expect_err("a directory").to_string();
        assert!(e.ends_with(": not a regular file"), "{e}");

        let big = d.join("big.pem");
        std::fs::write(&big, vec![b'A'; MAX_PEM_FILE_BYTES as usize + 1]).expect("write");
        let e = read_pem_file(&big, "--sslca").expect_err("too big").to_string();
        assert!(e.ends_with(": larger than 1 MiB"), "{e}");
        let e = read_pem_file(&d.join("missing"), "--sslcert")
            .expect_err("missing")
            .to_string();
        assert!(e.contains("missing: no such file or directory"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
