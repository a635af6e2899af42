//! Dialing out for `--connect`: TCP straight to the server or through an HTTP proxy's
//! CONNECT tunnel ([`super::proxy`]), client TLS for wss:// ([`super::tls`]), and the
//! WebSocket handshake with our headers; each step bounded by `--connect-timeout`. It
//! owns one connection attempt, not what runs over it or whether to try again (that is
//! [`super`]'s loop).

use std::time::Duration;

use hyper::http::{HeaderValue, StatusCode};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Error as WsError;

use super::proxy::{lower, ProxyError};
use crate::config::connect::{Connect, Target};
use crate::config::Session;
use crate::session::{Socket, Transport};
use crate::ws::deflate::{self, AnswerError};
#[cfg(feature = "compress")]
use crate::ws::deflate::{Deflating, Negotiated};

/// Why a connection attempt (or, for TLS files, the client's setup) failed: one line a
/// user reads.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// `--sslca`, `--sslcert` or `--sslkey` cannot be used (at startup).
    #[cfg(feature = "tls")]
    #[error(transparent)]
    TlsFiles(#[from] crate::tls::TlsError),
    #[cfg(not(feature = "tls"))]
    #[error("wss:// needs TLS: this wsbridge was built without it (cargo feature `tls`)")]
    NoTls,
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("cannot connect to {server}: {}", lower(.cause))]
    Connect { server: String, cause: std::io::Error },
    #[error("cannot connect to {server}: timed out after {after:?}")]
    ConnectTimeout { server: String, after: Duration },
    #[cfg(feature = "tls")]
    #[error("cannot use {0:?} as a TLS server name")]
    ServerName(String),
    #[cfg(feature = "tls")]
    #[error("TLS handshake with {server} failed: {}", super::tls::describe(.cause))]
    TlsHandshake { server: String, cause: std::io::Error },
    #[cfg(feature = "tls")]
    #[error("TLS handshake with {server} timed out")]
    TlsTimeout { server: String },
    #[error("cannot build the request for {url}: {cause}")]
    Request { url: String, cause: WsError },
    #[error("invalid --subprotocol list")]
    Subprotocols,
    /// The server answered the upgrade with another status.
    #[error("{}", refused(.url, .status))]
    Refused { url: String, status: StatusCode },
    #[error("WebSocket handshake with {url} failed: {cause}")]
    Handshake { url: String, cause: WsError },
    #[error("WebSocket handshake with {url} timed out after {after:?}")]
    HandshakeTimeout { url: String, after: Duration },
    /// `--compress`: the server's `Sec-WebSocket-Extensions` answer cannot be used.
    #[error("WebSocket handshake with {url} failed: {cause}")]
    Extension { url: String, cause: AnswerError },
}

/// `URL refused the WebSocket upgrade: CODE REASON` (no trailing space without a reason).
fn refused(url: &str, status: &StatusCode) -> String {
    format!(
        "{url} refused the WebSocket upgrade: {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

/// A ready client: settings plus the TLS configuration (built once, at startup).
pub struct Client {
    pub(super) settings: Connect,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsConnector>,
}

/// Builds the client for `--connect`'s settings; TLS files are read here, so a bad one is
/// a startup error.
pub fn prepare(settings: Connect) -> Result<Client, DialError> {
    #[cfg(feature = "tls")]
    {
        let tls = match settings.target.secure {
            true => Some(super::tls::connector(
                settings.ca.as_deref(),
                settings.client_cert.as_ref(),
                settings.insecure,
            )?),
            false => None,
        };
        Ok(Client { settings, tls })
    }
    #[cfg(not(feature = "tls"))]
    {
        if settings.target.secure {
            return Err(DialError::NoTls);
        }
        Ok(Client { settings })
    }
}

impl Client {
    /// Connects (through the proxy, if any), does TLS and the WebSocket handshake; returns
    /// the socket and the subprotocol the server chose.
    pub(super) async fn connect(&self, config: &Session) -> Result<(Socket, Option<String>), DialError> {
        let s = &self.settings;
        let t = &s.target;
        let step = s.step_timeout;
        let tcp = match &s.proxy {
            Some(p) => super::proxy::tunnel(p, t, step).await?,
            None => match tokio::time::timeout(step, TcpStream::connect((t.host.as_str(), t.port))).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(cause)) => {
                    return Err(DialError::Connect {
                        server: t.shown(),
                        cause,
                    })
                }
                Err(_) => {
                    return Err(DialError::ConnectTimeout {
                        server: t.shown(),
                        after: step,
                    })
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let request = self.request(config)?;
        let ws_config = Some(crate::ws::ws_config(config));
        #[cfg(feature = "tls")]
        if let Some(connector) = &self.tls {
            if s.insecure {
                tracing::warn!(
                    target: "wsbridge::outbound",
                    server = %t.shown(),
                    "--insecure: the server's certificate is NOT checked; anyone on the path can read and change this connection"
                );
            }
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|_| DialError::ServerName(t.host.clone()))?;
            let tls = match tokio::time::timeout(step, connector.connect(name, tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(cause)) => {
                    return Err(DialError::TlsHandshake {
                        server: t.shown(),
                        cause,
                    })
                }
                Err(_) => return Err(DialError::TlsTimeout { server: t.shown() }),
            };
            return handshake(request, Box::new(tls), (ws_config, config), t, step).await;
        }
        handshake(request, Box::new(tcp), (ws_config, config), t, step).await
    }

    fn request(&self, config: &Session) -> Result<Request, DialError> {
        let s = &self.settings;
        let mut req = s
            .target
            .url()
            .into_client_request()
            .map_err(|cause| DialError::Request {
                url: s.target.url(),
                cause,
            })?;
        let h = req.headers_mut();
        h.insert(
            hyper::header::USER_AGENT,
            HeaderValue::from_static(concat!("wsbridge/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(origin) = &s.origin {
            h.insert(hyper::header::ORIGIN, origin.clone());
        }
        if !config.subprotocols.all.is_empty() {
            // Config checked every name is a token.
            let list =
                HeaderValue::from_str(&config.subprotocols.all.join(", ")).map_err(|_| DialError::Subprotocols)?;
            h.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, list);
        }
        if let Some(ours) = &config.compress {
            // The offer is ASCII tokens and digits.
            if let Ok(v) = HeaderValue::from_str(&deflate::offer(ours)) {
                h.insert(hyper::header::SEC_WEBSOCKET_EXTENSIONS, v);
            }
        }
        for (name, _) in &s.headers {
            h.remove(name);
        }
        for (name, value) in &s.headers {
            h.append(name.clone(), value.clone());
        }
        Ok(req)
    }
}

async fn handshake(
    request: Request,
    stream: Box<dyn Transport>,
    (ws_config, config): (
        Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig>,
        &Session,
    ),
    t: &Target,
    step: Duration,
) -> Result<(Socket, Option<String>), DialError> {
    let url = t.url();
    // With --compress the handshake runs over the deflate layer, which learns the
    // outcome before the first frame (see Deflating::client).
    #[cfg(feature = "compress")]
    let settled = config.compress.map(|_| std::sync::Arc::new(Negotiated::default()));
    #[cfg(feature = "compress")]
    let stream: Box<dyn Transport> = match &settled {
        Some(s) => Box::new(Deflating::client(stream, config.max_message, std::sync::Arc::clone(s))),
        None => stream,
    };
    let shake = tokio_tungstenite::client_async_with_config(request, stream, ws_config);
    let (ws, response) = match tokio::time::timeout(step, shake).await {
        Ok(Ok(r)) => r,
        Ok(Err(WsError::Http(resp))) => {
            return Err(DialError::Refused {
                url,
                status: resp.status(),
            })
        }
        Ok(Err(cause)) => return Err(DialError::Handshake { url, cause }),
        Err(_) => return Err(DialError::HandshakeTimeout { url, after: step }),
    };
    let answers = response
        .headers()
        .get_all(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    #[cfg(feature = "compress")]
    let offered = settled.as_ref().zip(config.compress.as_ref());
    // Without the feature Config refused --compress: nothing was offered.
    #[cfg(not(feature = "compress"))]
    let offered: Option<(&(), &crate::config::Compress)> = config.compress.as_ref().and(None);
    match offered {
        #[cfg(feature = "compress")]
        Some((settled, ours)) => match deflate::check_answer(answers, ours) {
            Ok(agreed) => settled.settle(agreed),
            Err(cause) => return Err(DialError::Extension { url, cause }),
        },
        // RFC 6455 §4.1: an extension we did not offer fails the connection.
        _ => {
            let answered: Vec<&str> = answers.collect();
            if !answered.is_empty() {
                let cause = AnswerError::NotOffered(answered.join(", "));
                return Err(DialError::Extension { url, cause });
            }
        }
    }
    let protocol = response
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, protocol))
}
