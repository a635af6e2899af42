//! rustls errors in plain words, for every line a user reads (startup errors, the
//! server's `tls handshake failed` log line, `--connect`'s errors): rustls' own `Display`
//! often ends in a Rust debug dump (`Other(OtherError(UnsupportedCertVersion))`, an
//! algorithm as `[6, 8, 42, …]`); here the usual causes get a sentence and a fix, the
//! rest their variant's name spelled as words. Pure functions, no I/O.

use std::fmt::Debug;

use rustls::{CertificateError, Error, InconsistentKeys, InvalidMessage, PeerIncompatible};

/// What a failed TLS handshake (an `io::Error` from tokio-rustls) means, in words;
/// `whose` names the certificate checked (`client certificate` on the server side,
/// `server certificate` for `--connect`).
pub fn explain_io(e: &std::io::Error, whose: &str) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(tls) => explain_as(tls, whose),
        None => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    }
}

/// One rustls error in words (about a certificate of ours: `--sslcert`, `--sslca`).
pub fn explain(e: &Error) -> String {
    explain_as(e, "certificate")
}

// Not inlined into its two callers: this is cold code, kept small (binary size).
#[inline(never)]
fn explain_as(e: &Error, whose: &str) -> String {
    match e {
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "not a TLS handshake: a plain-HTTP client on the TLS port? (it must use https:// or wss://)".into()
        }
        Error::InvalidMessage(m) => format!("a malformed TLS message ({})", words(m)),
        Error::InvalidCertificate(c) => certificate(c, whose),
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "the key does not match the certificate (they are not one pair)".into()
        }
        Error::InconsistentKeys(k) => format!("the key and the certificate do not agree ({})", words(k)),
        Error::PeerIncompatible(p) => incompatible(p),
        Error::NoCertificatesPresented => "the client presented no certificate (--sslca requires one)".into(),
        Error::AlertReceived(a) => format!("the peer refused the handshake (TLS alert: {})", words(a)),
        Error::General(s) if s.contains("private key") => {
            format!("{s} (wsbridge's TLS takes RSA, ECDSA P-256/P-384 and Ed25519 keys)")
        }
        Error::General(s) => s.clone(),
        other => {
            let s = other.to_string();
            // rustls' Display is "<phrase>: <Debug>" for the rest; keep the phrase.
            match s.split_once(": ") {
                Some((phrase, detail)) if looks_like_debug(detail) => format!("{phrase}: {}", words(&detail)),
                _ => s,
            }
        }
    }
}

fn certificate(c: &CertificateError, whose: &str) -> String {
    let text = match c {
        CertificateError::Other(o) => {
            let name = format!("{o:?}");
            if name.contains("UnsupportedCertVersion") {
                return format!(
                    "the {whose} is X.509 v1; rustls needs X.509 v3: re-issue it with extensions, e.g. \
                     `openssl x509 -req ... -extfile FILE` with `basicConstraints=CA:FALSE` and `keyUsage=digitalSignature`"
                );
            }
            if name.contains("CaUsedAsEndEntity") {
                return format!(
                    "the {whose} is a CA certificate (as `openssl req -x509` makes by default), not a leaf: \
                     sign a leaf certificate with that CA"
                );
            }
            words(&name.trim_start_matches("OtherError(").trim_end_matches(')'))
        }
        CertificateError::UnknownIssuer => "not signed by a trusted CA".into(),
        #[allow(deprecated)]
        CertificateError::UnsupportedSignatureAlgorithm => {
            "signed with an algorithm rustls does not accept (re-issue it signed with SHA-256)".into()
        }
        CertificateError::UnsupportedSignatureAlgorithmContext {
            signature_algorithm_id, ..
        }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
            signature_algorithm_id, ..
        } => format!(
            "signed with {}, which rustls does not accept (re-issue it signed with SHA-256, e.g. `openssl x509 -req -sha256`)",
            algorithm(signature_algorithm_id)
        ),
        CertificateError::BadSignature => "its signature does not verify".into(),
        other => {
            // The *Context variants have readable Display texts; the plain ones print
            // their name.
            let s = other.to_string();
            if looks_like_debug(&s) {
                words(&s)
            } else {
                s
            }
        }
    };
    format!("invalid {whose}: {text}")
}

fn incompatible(p: &PeerIncompatible) -> String {
    match p {
        PeerIncompatible::NoSignatureSchemesInCommon
        | PeerIncompatible::NoCertificateRequestSignatureSchemesInCommon => {
            "no signature algorithm in common: the peer accepts none this certificate's key can sign with \
             (unsupported signature algorithm)"
                .into()
        }
        PeerIncompatible::NoCipherSuitesInCommon => {
            "no cipher suite in common (wsbridge speaks TLS 1.2 and 1.3 with current suites)".into()
        }
        PeerIncompatible::SignatureAlgorithmsExtensionRequired
        | PeerIncompatible::SupportedVersionsExtensionRequired
        | PeerIncompatible::Tls12NotOffered
        | PeerIncompatible::Tls12NotOfferedOrEnabled
        | PeerIncompatible::ServerDoesNotSupportTls12Or13 => {
            "the peer speaks an old TLS version (wsbridge needs TLS 1.2 or 1.3)".into()
        }
        other => format!("the peer is incompatible ({})", words(other)),
    }
}

/// True for a bare Rust identifier or a debug-printed value (`KeyMismatch`, `Foo(Bar)`).
fn looks_like_debug(s: &str) -> bool {
    let s = s.trim();
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && !s.contains(' ')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "(){}_,".contains(c))
}

/// `UnsupportedCertVersion` → `unsupported cert version`; anything Debug-printed is cut
/// at its first `(` or `{` (no payload dumps).
fn words(v: &dyn Debug) -> String {
    let s = format!("{v:?}");
    let s = s.trim_matches('"');
    let name = s.split(['(', '{', ' ']).next().unwrap_or(s);
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A signature algorithm from its DER `AlgorithmIdentifier` contents: a name for the
/// ones people meet, else the dotted OID.
fn algorithm(der: &[u8]) -> String {
    let Some(oid) = oid(der) else {
        return "an unknown algorithm".into();
    };
    let name = match oid.as_str() {
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption (MD5)",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption (SHA-1)",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1 (SHA-1)",
        "1.2.840.10040.4.3" => "dsa-with-SHA1 (DSA)",
        "2.16.840.1.101.3.4.3.2" => "dsa-with-SHA256 (DSA)",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.113" => "Ed448",
        _ => return format!("the algorithm {oid}"),
    };
    format!("{name}, OID {oid}")
}

/// The dotted form of the OID an `AlgorithmIdentifier`'s contents start with.
fn oid(der: &[u8]) -> Option<String> {
    let (&tag, rest) = der.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if tag != 0x06 || len & 0x80 != 0 {
        return None;
    }
    let body = rest.get(..len as usize)?;
    let (&first, tail) = body.split_first()?;
    let mut arcs = vec![
        u64::from(first / 40).min(2),
        u64::from(first) - 40 * u64::from(first / 40).min(2),
    ];
    let mut acc: u64 = 0;
    for &b in tail {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    Some(arcs.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_debug_dumps_in_the_usual_errors() {
        let sha1 = [6u8, 9, 42, 134, 72, 134, 247, 13, 1, 1, 5, 5, 0];
        let cases = [
            (
                Error::InvalidMessage(InvalidMessage::InvalidContentType),
                "a plain-HTTP client on the TLS port",
            ),
            (
                Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(std::sync::Arc::new(
                    std::io::Error::other("UnsupportedCertVersion"),
                )))),
                "the certificate is X.509 v1; rustls needs X.509 v3",
            ),
            (
                Error::InconsistentKeys(InconsistentKeys::KeyMismatch),
                "the key does not match the certificate",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnsupportedSignatureAlgorithmContext {
                    signature_algorithm_id: sha1.to_vec(),
                    supported_algorithms: Vec::new(),
                }),
                "signed with sha1WithRSAEncryption (SHA-1), OID 1.2.840.113549.1.1.5, which rustls does not accept",
            ),
            (
                Error::PeerIncompatible(PeerIncompatible::NoSignatureSchemesInCommon),
                "unsupported signature algorithm",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "invalid certificate: not signed by a trusted CA",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnhandledCriticalExtension),
                "invalid certificate: unhandled critical extension",
            ),
            (
                Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon),
                "the peer is incompatible (no kx groups in common)",
            ),
            (
                Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                "(TLS alert: unknown ca)",
            ),
        ];
        for (e, want) in cases {
            let got = explain(&e);
            assert!(got.contains(want), "{e:?}: {got}");
            assert!(!got.contains('[') && !got.contains("Error("), "{got}");
        }
    }

    #[test]
    fn oids_are_dotted() {
        assert_eq!(oid(&[6, 3, 43, 101, 113]).as_deref(), Some("1.3.101.113"));
        assert_eq!(
            oid(&[6, 8, 42, 134, 72, 206, 61, 4, 3, 4]).as_deref(),
            Some("1.2.840.10045.4.3.4")
        );
        assert_eq!(oid(&[5, 0]), None);
        assert_eq!(algorithm(&[6, 2, 42, 3]), "the algorithm 1.2.3");
    }
}
