//! permessage-deflate (RFC 7692): the `Sec-WebSocket-Extensions` negotiation of both
//! sides (pure functions over header values), the codec with its size bound
//! ([`codec`]), and the transport layer that puts it under tungstenite ([`stream`]).
//!
//! tungstenite 0.30 refuses every frame with RSV1 and has no extension hook, so the
//! extension lives below it: [`Deflating`] rewrites compressed frames into plain ones on
//! the way in and compresses plain data frames on the way out. Negotiation is ours too:
//! the server answers only what the client offered and we can honour, and declines (no
//! header) an offer it cannot; the client refuses an answer it did not ask for.
//!
//! Windows: zlib-rs deflates with 9 to 15 bits. A client asking `server_max_window_bits=8`
//! gets its offer declined (zlib itself turns 8 into 9, which such a client cannot
//! inflate); inflating always works with a window at least as big as the sender's.

#[cfg(feature = "compress")]
mod codec;
#[cfg(feature = "compress")]
mod frame;
#[cfg(feature = "compress")]
mod stream;

#[cfg(feature = "compress")]
pub use codec::{once, Deflater, Inflater, MIN_COMPRESSED};
#[cfg(feature = "compress")]
pub use stream::{Deflating, Negotiated};

use crate::config::Compress;

/// The extension token.
const NAME: &str = "permessage-deflate";
/// The largest LZ77 window, and the default of both directions.
const MAX_BITS: u8 = 15;
/// The smallest window zlib-rs deflates with.
#[cfg_attr(not(feature = "compress"), allow(dead_code))]
const MIN_BITS: u8 = 9;

/// One direction's agreed parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    /// The sender starts every message with an empty window.
    pub no_context_takeover: bool,
    /// The sender's LZ77 window (8 to 15; the receiver inflates with at least 9).
    pub window_bits: u8,
}

/// What one connection agreed, seen from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// What we send (deflate).
    pub ours: Direction,
    /// What the peer sends (we inflate).
    pub theirs: Direction,
}

/// The parameters of one `permessage-deflate` element.
#[derive(Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: named without a value (only allowed in an offer).
    client_max_window_bits: Option<Option<u8>>,
}

/// Why an element's parameters are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter {0}")]
    Unknown(String),
    #[error("parameter {0} given twice")]
    Duplicate(String),
    #[error("bad value for {0}")]
    Value(String),
}

/// Why `--connect` refuses the server's `Sec-WebSocket-Extensions` answer (RFC 7692 §5:
/// the client fails the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the server answered extensions that were not offered: {0:?}")]
    NotOffered(String),
    #[error("the server's permessage-deflate answer is malformed: {0:?}")]
    Malformed(String),
    #[error("the server's permessage-deflate answer {answer:?} is unusable: {cause}")]
    Param { answer: String, cause: ParamError },
    #[error("the server asked for a {0}-bit window, which this client cannot honour (9 to 15)")]
    Window(u8),
}

/// Splits at `sep` outside double quotes.
fn split_quoted(s: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// An extension element's parameters: names and (unquoted) values.
type ParamList<'a> = Vec<(&'a str, Option<String>)>;
/// An extension element: its text, and its name and parameters when it parses.
type Element<'a> = (&'a str, Option<(&'a str, ParamList<'a>)>);

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// One extension element: its name and parameters (values unquoted), or `None` when it
/// does not follow RFC 6455 §9.1's grammar.
fn element(s: &str) -> Option<(&str, ParamList<'_>)> {
    let mut parts = split_quoted(s, ';').into_iter().map(str::trim);
    let name = parts.next().filter(|n| is_token(n))?;
    let mut params = Vec::new();
    for p in parts {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (p, None),
        };
        if !is_token(k) {
            return None;
        }
        let v = match v {
            None => None,
            Some(v) if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
                let mut out = String::new();
                let mut chars = v[1..v.len() - 1].chars();
                while let Some(c) = chars.next() {
                    out.push(if c == '\\' { chars.next()? } else { c });
                }
                // RFC 6455 §9.1: a quoted value must still be a token.
                Some(out).filter(|v| is_token(v))?.into()
            }
            Some(v) if is_token(v) => Some(v.to_owned()),
            Some(_) => return None,
        };
        params.push((k, v));
    }
    Some((name, params))
}

/// Every element of every header value, in order (`None` for a malformed one).
fn elements<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Element<'a>> {
    values
        .into_iter()
        .flat_map(|v| split_quoted(v, ','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| (e, element(e)))
        .collect()
}

/// A window size: 8 to 15, digits only, no leading zero.
fn bits(v: &str) -> Option<u8> {
    match v.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

fn params(list: &[(&str, Option<String>)]) -> Result<Params, ParamError> {
    let mut p = Params::default();
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in list {
        let k = k.to_ascii_lowercase();
        if seen.contains(&k) {
            return Err(ParamError::Duplicate(k));
        }
        let flag = |v: &Option<String>| v.is_none().then_some(true).ok_or(ParamError::Value(k.clone()));
        match k.as_str() {
            "server_no_context_takeover" => p.server_no_context_takeover = flag(v)?,
            "client_no_context_takeover" => p.client_no_context_takeover = flag(v)?,
            "server_max_window_bits" => {
                p.server_max_window_bits = Some(v.as_deref().and_then(bits).ok_or(ParamError::Value(k.clone()))?)
            }
            "client_max_window_bits" => {
                p.client_max_window_bits = Some(match v {
                    None => None,
                    Some(v) => Some(bits(v).ok_or(ParamError::Value(k.clone()))?),
                })
            }
            _ => return Err(ParamError::Unknown(k)),
        }
        seen.push(k);
    }
    Ok(p)
}

/// Server side: the first `permessage-deflate` offer (over every `Sec-WebSocket-Extensions`
/// value, in order) that we can honour within `ours`, what we agree, and the answer
/// header. `None`: no usable offer, answer without the extension.
pub fn accept<'a>(offers: impl IntoIterator<Item = &'a str>, ours: &Compress) -> Option<(Agreed, String)> {
    accept_imposing(offers, ours, false)
}

/// [`accept`] for `--shared`: our direction always without context takeover (answered
/// `server_no_context_takeover` even when the client did not ask, RFC 7692 §7.1.1.1), so
/// a message compressed once is right for every client with the same window, and no
/// client keeps a compressor between messages.
pub fn accept_shared<'a>(offers: impl IntoIterator<Item = &'a str>, ours: &Compress) -> Option<(Agreed, String)> {
    accept_imposing(offers, ours, true)
}

fn accept_imposing<'a>(
    offers: impl IntoIterator<Item = &'a str>,
    ours: &Compress,
    server_no_context_takeover: bool,
) -> Option<(Agreed, String)> {
    for (_, e) in elements(offers) {
        let Some((name, list)) = e else { continue };
        if !name.eq_ignore_ascii_case(NAME) {
            continue;
        }
        let Ok(offer) = params(&list) else { continue };
        let server_bits = offer.server_max_window_bits.unwrap_or(MAX_BITS).min(ours.window_bits);
        if server_bits < MIN_BITS {
            continue;
        }
        let client_bits = match offer.client_max_window_bits {
            None => MAX_BITS,
            Some(None) => ours.window_bits,
            Some(Some(v)) => v.min(ours.window_bits),
        };
        let agreed = Agreed {
            ours: Direction {
                no_context_takeover: offer.server_no_context_takeover
                    || ours.no_context_takeover
                    || server_no_context_takeover,
                window_bits: server_bits,
            },
            theirs: Direction {
                no_context_takeover: offer.client_no_context_takeover || ours.no_context_takeover,
                window_bits: client_bits,
            },
        };
        let mut answer = NAME.to_owned();
        if agreed.ours.no_context_takeover {
            // RFC 7692 §7.1.1.1: a server may add it unasked.
            answer.push_str("; server_no_context_takeover");
        }
        if agreed.theirs.no_context_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if offer.server_max_window_bits.is_some() {
            answer.push_str(&format!("; server_max_window_bits={server_bits}"));
        }
        if offer.client_max_window_bits.is_some() && client_bits < MAX_BITS {
            answer.push_str(&format!("; client_max_window_bits={client_bits}"));
        }
        return Some((agreed, answer));
    }
    None
}

/// `--shared`: a client whose server window is the hub's (`--compress-window-bits`) and
/// has no context takeover (always, in `--shared`) is sent messages compressed once for
/// all such clients ([`once`]); others (a smaller window asked, or no extension) compress
/// their own copy in [`Deflating`], or get it plain.
pub fn precompress(agreed: Option<Agreed>, ours: Option<&Compress>) -> Option<crate::shared::Precompress> {
    let (agreed, ours) = (agreed?, ours?);
    #[cfg(feature = "compress")]
    if agreed.ours.no_context_takeover && agreed.ours.window_bits == ours.window_bits {
        return Some(crate::shared::Precompress {
            deflate: once,
            window_bits: ours.window_bits,
        });
    }
    let _ = (agreed, ours);
    None
}

/// Client side: the offer `--connect` sends.
pub fn offer(ours: &Compress) -> String {
    let mut offer = format!("{NAME}; client_max_window_bits");
    if ours.window_bits < MAX_BITS {
        offer.push_str(&format!("; server_max_window_bits={}", ours.window_bits));
    }
    if ours.no_context_takeover {
        offer.push_str("; server_no_context_takeover; client_no_context_takeover");
    }
    offer
}

/// Client side: checks the server's answer to [`offer`]. `Ok(None)`: it declined.
pub fn check_answer<'a>(
    answer: impl IntoIterator<Item = &'a str>,
    ours: &Compress,
) -> Result<Option<Agreed>, AnswerError> {
    let all = elements(answer);
    let (text, e) = match all.as_slice() {
        [] => return Ok(None),
        [one] => one,
        _ => {
            let names: Vec<&str> = all.iter().map(|(t, _)| *t).collect();
            return Err(AnswerError::NotOffered(names.join(", ")));
        }
    };
    let Some((name, list)) = e else {
        return Err(AnswerError::Malformed(text.to_string()));
    };
    if !name.eq_ignore_ascii_case(NAME) {
        return Err(AnswerError::NotOffered(text.to_string()));
    }
    let p = params(list).map_err(|cause| AnswerError::Param {
        answer: text.to_string(),
        cause,
    })?;
    let bad_value = |k: &str| AnswerError::Param {
        answer: text.to_string(),
        cause: ParamError::Value(k.to_owned()),
    };
    let server_bits = p.server_max_window_bits.unwrap_or(MAX_BITS);
    if ours.window_bits < MAX_BITS && server_bits > ours.window_bits {
        return Err(bad_value("server_max_window_bits"));
    }
    let client_bits = match p.client_max_window_bits {
        None => ours.window_bits,
        Some(None) => return Err(bad_value("client_max_window_bits")),
        Some(Some(v)) => v.min(ours.window_bits),
    };
    if client_bits < MIN_BITS {
        return Err(AnswerError::Window(client_bits));
    }
    Ok(Some(Agreed {
        ours: Direction {
            no_context_takeover: p.client_no_context_takeover || ours.no_context_takeover,
            window_bits: client_bits,
        },
        theirs: Direction {
            no_context_takeover: p.server_no_context_takeover,
            window_bits: server_bits,
        },
    }))
}

#[cfg(test)]
mod tests;
