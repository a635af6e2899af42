//! Property tests (proptest) for the pure parts of wsbridge: the output line framer (and
//! its NUL-record mode), text validation, the `lenprefix` decoder, the origin policy, the
//! CGI environment and percent-decoding. Each property states its exact invariant above
//! the test; case counts are kept modest so `cargo test` stays fast. The
//! same invariants are checked by the cargo-fuzz targets in `fuzz/` (run by
//! `tools/fuzz.sh`).

use std::os::unix::ffi::OsStrExt;

use bytes::Bytes;
use hyper::http::header::{HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::http::{HeaderMap, Version};
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::Message;
use wsbridge::framing::{encode, Decoder, FrameError, Framing};
use wsbridge::origin::{parse_host, OriginPolicy};
use wsbridge::relay::LineFramer;
use wsbridge::{env, net};

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// LineFramer
// ---------------------------------------------------------------------------------------

/// Bytes shown as an escaped byte string in failure reports.
#[derive(Clone, PartialEq, Eq)]
struct Input(Vec<u8>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::borrow::Borrow<[u8]> for Input {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Bytes rich in what the framer cares about: `\n`, `\r`, multi-byte UTF-8 and stray
/// continuation/lead bytes.
fn framer_bytes() -> impl Strategy<Value = Input> {
    let byte = prop_oneof![
        4 => Just(b'x'),
        3 => Just(b'\n'),
        2 => Just(b'\r'),
        1 => Just(0xC3u8), // lead byte of a 2-byte sequence
        1 => Just(0xA9u8), // continuation byte
        1 => Just(0xE2u8), // lead byte of a 3-byte sequence
        2 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..160).prop_map(Input)
}

/// Valid UTF-8 with newlines, CRs and characters of every encoded length.
fn framer_text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => Just('x'),
        2 => Just('\n'),
        1 => Just('\r'),
        2 => Just('é'),
        2 => Just('€'),
        2 => Just('𝄞'),
        1 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..120).prop_map(|v| v.into_iter().collect())
}

/// `max_line` as given to `LineFramer::new` (which raises it to at least 4).
fn max_line() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0usize..=16, 1 => 17usize..=200]
}

fn frame(chunks: &[&[u8]], max_line: usize) -> Vec<Input> {
    frame_with(LineFramer::new(max_line), chunks)
}

fn frame_with(mut framer: LineFramer, chunks: &[&[u8]]) -> Vec<Input> {
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(Bytes::copy_from_slice(chunk), &mut out);
    }
    framer.finish(&mut out);
    out.into_iter().map(|b| Input(b.to_vec())).collect()
}

/// Splits `input` at the given offsets (taken modulo `len + 1`, sorted, duplicates kept so
/// empty chunks are fed too).
fn chunks_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for end in at {
        chunks.push(&input[start..end]);
        start = end;
    }
    chunks.push(&input[start..]);
    chunks
}

/// The logical lines of `input`, before any cutting: split on `\n`; a `\n`-terminated
/// segment loses one `\r` just before its `\n`; an unterminated last segment is a line
/// only when non-empty and keeps a trailing `\r`.
fn reference_lines(input: &[u8]) -> Vec<Input> {
    let mut lines = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..i];
        lines.push(Input(line.strip_suffix(b"\r").unwrap_or(line).to_vec()));
        rest = &rest[i + 1..];
    }
    if !rest.is_empty() {
        lines.push(Input(rest.to_vec()));
    }
    lines
}

fn replace_crlf(input: &[u8]) -> Input {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(b"\r\n") {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Input(out)
}

proptest! {
    #![proptest_config(config())]

    /// Invariant: for any split of the input into chunks (including empty chunks), pushing
    /// the chunks one by one and then calling `finish` yields exactly the lines that one
    /// `push` of the whole input plus `finish` yields.
    #[test]
    fn framer_chunking_does_not_change_lines(
        input in framer_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max in max_line(),
    ) {
        let whole = frame(&[&input], max);
        let chunked = frame(&chunks_at(&input, &cuts), max);
        prop_assert_eq!(chunked, whole, "chunks {:?}", chunks_at(&input, &cuts));
    }

    /// Invariant: no emitted line or piece is longer than `max(max_line, 4)` bytes, whatever
    /// the chunking.
    #[test]
    fn framer_lines_never_exceed_max_line(
        input in framer_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max in max_line(),
    ) {
        let bound = max.max(4);
        for line in frame(&chunks_at(&input, &cuts), max).into_iter().chain(frame(&[&input], max)) {
            prop_assert!(line.len() <= bound, "line of {} bytes > {}", line.len(), bound);
        }
    }

    /// Invariant (one `push` of the whole input, then `finish`): when every logical line
    /// (see `reference_lines`) is at most `max(max_line, 4)` bytes, the output is exactly
    /// those lines, and so joining the output with `\n`, plus a final `\n` when the input
    /// ends with one, equals the input with every `\r\n` replaced by `\n` (a `\r` not
    /// directly before `\n`, including a trailing one at EOF, is kept).
    #[test]
    fn framer_reconstructs_input_when_no_line_is_cut(input in framer_bytes(), max in max_line()) {
        let expected = reference_lines(&input);
        prop_assume!(expected.iter().all(|l| l.len() <= max.max(4)));
        let got = frame(&[&input], max);
        prop_assert_eq!(&got, &expected);
        let mut joined = got.join(&b'\n');
        if input.ends_with(b"\n") {
            joined.push(b'\n');
        }
        prop_assert_eq!(Input(joined), replace_crlf(&input));
    }

    /// Invariant (one `push`, then `finish`): the output splits into consecutive runs, one
    /// per logical line, whose concatenation is that line; a run of more than one piece
    /// (a cut line) has no empty piece, and every piece but the last of a run is at least
    /// `max(max_line, 4) - 3` bytes (a cut moves back at most 3 bytes to a char boundary).
    #[test]
    fn framer_cut_pieces_are_consecutive(input in framer_bytes(), max in max_line()) {
        let bound = max.max(4);
        let got = frame(&[&input], max);
        let mut pieces = got.iter();
        for line in reference_lines(&input) {
            let mut run: Vec<&Input> = vec![pieces.next().expect("a piece for every line")];
            while run.iter().map(|p| p.len()).sum::<usize>() < line.len() {
                run.push(pieces.next().expect("more pieces for a cut line"));
            }
            prop_assert_eq!(Input(run.iter().flat_map(|p| p.iter().copied()).collect()), line);
            if run.len() > 1 {
                for p in &run[..run.len() - 1] {
                    prop_assert!(p.len() >= bound - 3 && !p.is_empty());
                }
                prop_assert!(!run[run.len() - 1].is_empty());
            }
        }
        prop_assert!(pieces.next().is_none(), "pieces left over");
    }

    /// Invariant: when the input is valid UTF-8, every emitted line or piece is valid UTF-8
    /// (cuts fall on char boundaries), whatever the chunking.
    #[test]
    fn framer_cuts_valid_utf8_at_char_boundaries(
        input in framer_text(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max in max_line(),
    ) {
        let bytes = input.as_bytes();
        for line in frame(&chunks_at(bytes, &cuts), max).into_iter().chain(frame(&[bytes], max)) {
            prop_assert!(std::str::from_utf8(&line).is_ok(), "piece {:?} is not UTF-8", line);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Invariant: `to_text` (SIMD validation, then U+FFFD for invalid sequences) gives
    /// exactly what std's lossy conversion gives, for valid text of any length (crossing
    /// the validator's 32- and 64-byte blocks) and for text with stray bytes anywhere.
    #[test]
    fn to_text_matches_std(
        text in framer_text(),
        prefix in 0usize..70,
        stray in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
    ) {
        let mut bytes = "a".repeat(prefix).into_bytes();
        bytes.extend_from_slice(text.as_bytes());
        let valid = bytes.clone();
        for (at, b) in stray {
            let at = at % (bytes.len() + 1);
            bytes.insert(at, b);
        }
        for input in [valid, bytes] {
            let mut warned = false;
            let got = wsbridge::framing::to_text(Bytes::from(input.clone()), &mut warned);
            prop_assert_eq!(got.as_str(), String::from_utf8_lossy(&input));
            prop_assert_eq!(warned, std::str::from_utf8(&input).is_err());
        }
    }
}

/// Bytes that look like `lenprefix` output: headers (some with leading zeros or too many
/// digits), payload bytes and stray newlines.
fn lenprefix_bytes() -> impl Strategy<Value = Input> {
    let piece = prop_oneof![
        4 => (prop_oneof![Just("t"), Just("b")], 0usize..12, "[a-zé\n]{0,12}").prop_map(|(k, n, body)| {
            let mut v = format!("{k} {n}\n").into_bytes();
            v.extend_from_slice(body.as_bytes());
            v
        }),
        1 => (prop_oneof![Just("t"), Just("b")], "0{0,22}[0-9]{1,3}").prop_map(|(k, d)| format!("{k} {d}\n").into_bytes()),
        1 => prop::collection::vec(prop_oneof![Just(b'\n'), Just(b' '), Just(b't'), Just(b'0'), any::<u8>()], 0..8),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| Input(v.concat()))
}

fn decode_lenprefix(chunks: &[&[u8]], max: usize) -> (Vec<Message>, Result<(), FrameError>) {
    let mut decoder = Decoder::new(Framing::LenPrefix, max);
    let mut out = Vec::new();
    for chunk in chunks {
        if let Err(e) = decoder.push(Bytes::copy_from_slice(chunk), &mut out) {
            return (out, Err(e));
        }
    }
    let end = decoder.finish(&mut out);
    (out, end)
}

proptest! {
    #![proptest_config(config())]

    /// Invariant: NUL-record mode (`LineFramer::with_separator(0, false, max)`) yields the
    /// same records for any chunking of the input.
    #[test]
    fn framer_nul_records_chunking_does_not_change_records(
        input in framer_bytes().prop_map(|i| Input(i.0.iter().map(|&b| if b == b'\n' { 0 } else { b }).collect())),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max in max_line(),
    ) {
        let whole = frame_with(LineFramer::with_separator(0, false, max), &[&input]);
        let chunked = frame_with(LineFramer::with_separator(0, false, max), &chunks_at(&input, &cuts));
        prop_assert_eq!(chunked, whole);
    }

    /// Invariant: any sequence of text and binary messages, each at most `max` bytes,
    /// encoded with `encode(Framing::LenPrefix, _)` and fed to the `lenprefix` decoder in
    /// any chunking, decodes to the same messages, and `finish` is `Ok`.
    #[test]
    fn lenprefix_round_trips_messages_in_any_chunking(
        msgs in prop::collection::vec(
            prop_oneof![
                ".{0,12}".prop_map(Message::text),
                prop::collection::vec(any::<u8>(), 0..24).prop_map(Message::binary),
            ],
            0..6,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for m in msgs.clone() {
            let e = encode(Framing::LenPrefix, m).unwrap().expect("data message");
            stream.extend_from_slice(e.head());
            stream.extend_from_slice(&e.payload);
            stream.extend_from_slice(e.tail);
        }
        let (got, end) = decode_lenprefix(&chunks_at(&stream, &cuts), 64);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(got, msgs);
    }

    /// Invariant: for any bytes and any chunking, the `lenprefix` decoder yields the same
    /// messages, and the same error (offset and reason) or none, as one `push` of the whole
    /// input followed by `finish`.
    #[test]
    fn lenprefix_chunking_does_not_change_result(
        input in lenprefix_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max in 0usize..16,
    ) {
        let whole = decode_lenprefix(&[&input], max);
        let chunked = decode_lenprefix(&chunks_at(&input, &cuts), max);
        prop_assert_eq!(chunked, whole, "input {:?}", input);
    }

    /// Invariant (the doc of `Decoder::new`): no message the `lenprefix` decoder produces is
    /// longer than `max_message` bytes, text messages included.
    #[test]
    fn lenprefix_messages_never_exceed_max(input in lenprefix_bytes(), max in 0usize..16) {
        // Binary payloads are at most `max`; a text payload repaired with U+FFFD (3 bytes
        // for each invalid byte) at most three times that.
        for m in decode_lenprefix(&[&input], max).0 {
            let bound = if m.is_text() { 3 * max } else { max };
            prop_assert!(m.len() <= bound, "message of {} bytes > {}: {:?}", m.len(), bound, m);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Origin policy
// ---------------------------------------------------------------------------------------

/// Strings made of URL-ish characters, so parsing gets past its first checks often.
fn urlish() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9.:/\\[\\]@?# *,%_-]{0,30}"
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![urlish(), any::<String>()]
}

/// A valid DNS hostname: 1–4 labels of letters, digits and inner hyphens, mixed case.
fn hostname() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", 1..5).prop_map(|labels| labels.join("."))
}

/// A host as it may appear in `Host` and `Origin`: a hostname, an IPv4 address or a
/// bracketed IPv6 address.
fn host_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => hostname(),
        1 => any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        1 => any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

/// `--origin` values: absent, empty, `*`, or lists of plausible and arbitrary entries.
fn origin_flag() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        Just(Some("*".to_owned())),
        prop::collection::vec(
            prop_oneof![
                (hostname(), prop::option::of(any::<u16>())).prop_map(|(h, p)| match p {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                }),
                (prop_oneof![Just("http"), Just("https"), Just("HTTP")], hostname())
                    .prop_map(|(s, h)| format!("{s}://{h}")),
                Just("null".to_owned()),
                urlish(),
            ],
            1..4
        )
        .prop_map(|v| Some(v.join(","))),
        any::<String>().prop_map(Some),
    ]
}

fn decision(policy: &OriginPolicy, origin: Option<&str>, host: Option<&str>, tls: bool) -> bool {
    policy.check(origin, host, tls).is_ok()
}

proptest! {
    #![proptest_config(config())]

    /// Invariant: `from_flags`, `check` (and the refusal's `Display`) and `parse_host`
    /// return without panicking for arbitrary strings.
    #[test]
    fn origin_never_panics(
        flag in origin_flag(),
        sameorigin in any::<bool>(),
        origin in prop::option::of(any_text()),
        host in prop::option::of(any_text()),
        tls in any::<bool>(),
        raw in any_text(),
    ) {
        let _ = parse_host(&raw);
        if let Ok(policy) = OriginPolicy::from_flags(flag.as_deref(), sameorigin) {
            if let Err(refusal) = policy.check(origin.as_deref(), host.as_deref(), tls) {
                let _ = refusal.to_string();
            }
        }
    }

    /// Invariant: `--origin='*'` (possibly surrounded by white space) without `--sameorigin`
    /// allows every request, with or without `Origin` and `Host`.
    #[test]
    fn origin_star_allows_everything(
        pad in "[ \t]{0,2}",
        origin in prop::option::of(any_text()),
        host in prop::option::of(any_text()),
        tls in any::<bool>(),
    ) {
        let policy = OriginPolicy::from_flags(Some(&format!("{pad}*{pad}")), false).unwrap();
        prop_assert!(decision(&policy, origin.as_deref(), host.as_deref(), tls));
    }

    /// Invariant: the default policy (no `--origin`, or an empty/blank one, without
    /// `--sameorigin`) allows any request that carries no `Origin` header.
    #[test]
    fn origin_default_policy_allows_missing_origin(
        flag in prop_oneof![Just(None), "[ \t]{0,3}".prop_map(Some)],
        host in prop::option::of(any_text()),
        tls in any::<bool>(),
    ) {
        let policy = OriginPolicy::from_flags(flag.as_deref(), false).unwrap();
        prop_assert!(decision(&policy, None, host.as_deref(), tls));
    }

    /// Invariant: ASCII case never changes a decision: upper- or lower-casing the
    /// `--origin` value, the `Origin` header and the `Host` header (all at once or each
    /// alone) gives the same accept/refuse as the original strings.
    #[test]
    fn origin_case_does_not_change_decision(
        flag in origin_flag(),
        sameorigin in any::<bool>(),
        origin in prop::option::of(any_text()),
        host in prop::option::of(any_text()),
        tls in any::<bool>(),
    ) {
        let Ok(policy) = OriginPolicy::from_flags(flag.as_deref(), sameorigin) else {
            return Ok(());
        };
        let up = |s: &Option<String>| s.as_deref().map(str::to_ascii_uppercase);
        let low = |s: &Option<String>| s.as_deref().map(str::to_ascii_lowercase);
        let want = decision(&policy, origin.as_deref(), host.as_deref(), tls);
        prop_assert_eq!(decision(&policy, up(&origin).as_deref(), host.as_deref(), tls), want);
        prop_assert_eq!(decision(&policy, origin.as_deref(), up(&host).as_deref(), tls), want);
        prop_assert_eq!(decision(&policy, low(&origin).as_deref(), low(&host).as_deref(), tls), want);
        let upper_policy = OriginPolicy::from_flags(up(&flag).as_deref(), sameorigin).unwrap();
        prop_assert_eq!(decision(&upper_policy, origin.as_deref(), host.as_deref(), tls), want);
    }

    /// Invariant: for a host name `H` that has no trailing dot (and no `:`, `[`, `]`), using
    /// `H.` instead of `H` in the `Host` header, in the `Origin` header, or in both, gives the
    /// same decision, for any policy, scheme and optional ports.
    #[test]
    fn origin_trailing_dot_does_not_change_decision(
        flag in origin_flag(),
        sameorigin in any::<bool>(),
        h in prop_oneof![hostname(), "[a-zA-Z0-9./@?# _-]{0,12}"],
        oh in prop_oneof![hostname(), "[a-zA-Z0-9./@?# _-]{0,12}"],
        scheme in prop_oneof![Just("http"), Just("https"), Just("ws")],
        host_port in prop::option::of(any::<u16>()),
        origin_port in prop::option::of(any::<u16>()),
        same_host in any::<bool>(),
        tls in any::<bool>(),
    ) {
        prop_assume!(!h.ends_with('.') && !oh.ends_with('.'));
        let Ok(policy) = OriginPolicy::from_flags(flag.as_deref(), sameorigin) else {
            return Ok(());
        };
        let oh = if same_host { h.clone() } else { oh };
        let port = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
        let host = |dot: &str| format!("{h}{dot}{}", port(host_port));
        let origin = |dot: &str| format!("{scheme}://{oh}{dot}{}", port(origin_port));
        let want = decision(&policy, Some(&origin("")), Some(&host("")), tls);
        prop_assert_eq!(decision(&policy, Some(&origin("")), Some(&host(".")), tls), want);
        prop_assert_eq!(decision(&policy, Some(&origin(".")), Some(&host("")), tls), want);
        prop_assert_eq!(decision(&policy, Some(&origin(".")), Some(&host(".")), tls), want);
    }

    /// Invariant: under the same-origin policy (default, or `--sameorigin`), an `Origin` of
    /// `http://H:P` with `Host: H:P` over plain HTTP, and `https://H:P` with `Host: H:P`
    /// over TLS, are allowed for every valid host name H (any case, DNS name, IPv4 or
    /// bracketed IPv6) and every port P; so is an `Origin` without port when the `Host`
    /// names the scheme's default port, and the reverse.
    #[test]
    fn origin_same_origin_allows_matching_host_and_port(
        h in host_name(),
        p in any::<u16>(),
        tls in any::<bool>(),
        require in any::<bool>(),
    ) {
        let policy = OriginPolicy::from_flags(None, require).unwrap();
        let (scheme, default) = if tls { ("https", 443) } else { ("http", 80) };
        let host = format!("{h}:{p}");
        let origin = format!("{scheme}://{h}:{p}");
        let origin_no_port = format!("{scheme}://{h}");
        let host_default = format!("{h}:{default}");
        let origin_default = format!("{scheme}://{h}:{default}");
        prop_assert!(decision(&policy, Some(&origin), Some(&host), tls));
        prop_assert!(decision(&policy, Some(&origin_no_port), Some(&host_default), tls));
        prop_assert!(decision(&policy, Some(&origin_default), Some(&h), tls));
        // `--origin` listing the same host and `--sameorigin` together also allow it.
        let both = OriginPolicy::from_flags(Some(&host), true).unwrap();
        prop_assert!(decision(&both, Some(&origin), Some(&host), tls));
    }
}

// ---------------------------------------------------------------------------------------
// CGI environment and percent-decoding
// ---------------------------------------------------------------------------------------

/// Header (name, value) byte strings; a share are plausible, the rest arbitrary. Pairs that
/// `HeaderName::from_bytes` / `HeaderValue::from_bytes` reject are skipped when the map is
/// built, as hyper would never hand them over.
fn header_pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        3 => "[a-zA-Z0-9_-]{1,12}".prop_map(String::into_bytes),
        1 => prop_oneof![Just("proxy"), Just("Proxy"), Just("host"), Just("x_foo"), Just("x-foo"), Just("x.y")]
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    let value = prop_oneof![
        3 => "[ -~\t]{0,20}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..20),
    ];
    prop::collection::vec((name, value), 0..10)
}

fn header_map(pairs: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            map.append(n, v);
        }
    }
    map
}

/// A request target as hyper parses it: arbitrary text through `PathAndQuery`, skipped
/// when rejected; biased towards `%` escapes (including `%00`).
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "/[a-zA-Z0-9/%?=&.+ 0-9a-fA-F-]{0,24}",
        1 => "/([a-z]{0,3}%(00|2[fF]|41|[0-9a-fA-F]{0,2})){0,4}(\\?[a-z=&%0-9]{0,8})?",
        1 => any::<String>().prop_map(|s| format!("/{s}")),
    ]
}

fn remote() -> impl Strategy<Value = std::net::SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| (std::net::Ipv4Addr::from(ip), p).into()),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, p)| (std::net::Ipv6Addr::from(ip), p).into()),
    ]
}

fn var<'a>(built: &'a env::Built, name: &str) -> Option<&'a [u8]> {
    built.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_bytes())
}

/// The environment name a header becomes, when its name is allowed.
fn header_var(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.eq_ignore_ascii_case("proxy");
    ok.then(|| format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")))
}

proptest! {
    #![proptest_config(config())]

    /// Invariants, for headers hyper accepts and a request target hyper parses: `build`
    /// does not panic; it returns `Err` exactly when `percent_decode(path)` contains NUL;
    /// otherwise every variable name is `[A-Z0-9_]+`, no name repeats, there is no
    /// `HTTP_PROXY`, the `HTTP_*` names are exactly those of the headers whose names are
    /// `[A-Za-z0-9-]+` (other than `Proxy`), every dropped-name header is reported in
    /// `dropped`, no value contains NUL, and `PATH_INFO` equals `percent_decode(path)`.
    #[test]
    fn env_build_is_safe_for_any_request(
        pairs in header_pairs(),
        target in target(),
        tls in any::<bool>(),
        remote in remote(),
        unique_id in any::<u64>(),
        method in prop_oneof![Just("GET"), Just("POST"), Just("X-CUSTOM")],
    ) {
        let Ok(pq) = PathAndQuery::try_from(target.as_str()) else {
            return Ok(());
        };
        let headers = header_map(&pairs);
        let req = env::Request {
            remote: remote.into(),
            version: Version::HTTP_11,
            method,
            raw_path: pq.path(),
            query: pq.query(),
            headers: &headers,
            tls,
            unique_id,
            script_name: "/",
            protocol: None,
        };
        let passenv = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        let decoded = net::percent_decode(pq.path().as_bytes());
        let built = match env::build(&req, &passenv) {
            Err(_) => {
                prop_assert!(decoded.contains(&0), "Err for a path without NUL: {:?}", pq.path());
                return Ok(());
            }
            Ok(built) => built,
        };
        prop_assert!(!decoded.contains(&0), "Ok for a path that decodes to NUL: {:?}", pq.path());
        let mut names = Vec::new();
        for (k, v) in &built.vars {
            let k = k.to_str().expect("names are UTF-8");
            prop_assert!(
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "bad name {:?}", k
            );
            prop_assert!(!v.as_bytes().contains(&0), "{} contains NUL", k);
            prop_assert!(!names.contains(&k), "{} repeats", k);
            names.push(k);
        }
        prop_assert!(var(&built, "HTTP_PROXY").is_none());
        prop_assert_eq!(var(&built, "PATH_INFO"), Some(&decoded[..]));
        let mut expected: Vec<String> = headers.keys().filter_map(|n| header_var(n.as_str())).collect();
        expected.sort();
        expected.dedup();
        let mut got: Vec<String> = names.iter().filter(|k| k.starts_with("HTTP_")).map(|k| k.to_string()).collect();
        got.sort();
        prop_assert_eq!(got, expected);
        for name in headers.keys().filter(|n| header_var(n.as_str()).is_none()) {
            prop_assert!(
                built.dropped.contains(&env::Dropped::HeaderName(name.as_str().to_owned())),
                "{} not reported as dropped", name
            );
        }
    }

    /// Invariant: a raw path whose percent-decoding contains NUL (a literal NUL or `%00`
    /// anywhere) makes `build` return `Err`, whatever the headers.
    #[test]
    fn env_path_with_nul_is_refused(
        before in "[a-z/%0-9]{0,8}",
        after in "[a-z/%0-9]{0,8}",
        nul in prop_oneof![Just("%00"), Just("\0")],
        pairs in header_pairs(),
    ) {
        let path = format!("/{before}{nul}{after}");
        let headers = header_map(&pairs);
        let req = env::Request {
            remote: "127.0.0.1:1234".parse().unwrap(),
            version: Version::HTTP_11,
            method: "GET",
            raw_path: &path,
            query: None,
            headers: &headers,
            tls: false,
            unique_id: 1,
            script_name: "/",
            protocol: None,
        };
        prop_assert!(env::build(&req, &[]).is_err());
    }

    /// Invariant: decoding never makes the input longer.
    #[test]
    fn percent_decode_never_grows(input in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "[%0-9a-fA-Fxz]{0,40}".prop_map(String::into_bytes),
    ]) {
        prop_assert!(net::percent_decode(&input).len() <= input.len());
    }

    /// Invariant: input without `%` decodes to itself.
    #[test]
    fn percent_decode_without_percent_is_identity(input in prop::collection::vec(any::<u8>(), 0..64)) {
        let input: Vec<u8> = input.into_iter().filter(|&b| b != b'%').collect();
        prop_assert_eq!(net::percent_decode(&input), input);
    }

    /// Invariant: encoding every byte as `%XX` (upper- or lower-case hex digits) and
    /// decoding gives the bytes back; so does decoding a mix of escaped and plain bytes
    /// other than `%`.
    #[test]
    fn percent_decode_inverts_percent_encoding(
        input in prop::collection::vec((any::<u8>(), any::<bool>(), any::<bool>()), 0..48),
    ) {
        let mut encoded = Vec::new();
        for &(b, escape, lower) in &input {
            if escape || b == b'%' {
                let hex = if lower { format!("%{b:02x}") } else { format!("%{b:02X}") };
                encoded.extend_from_slice(hex.as_bytes());
            } else {
                encoded.push(b);
            }
        }
        let plain: Vec<u8> = input.iter().map(|&(b, _, _)| b).collect();
        prop_assert_eq!(net::percent_decode(&encoded), plain);
    }
}

// ---------------------------------------------------------------------------------------
// Regression cases: the smallest inputs found by the properties and fuzz targets above.
// ---------------------------------------------------------------------------------------

/// `framer_chunking_does_not_change_lines`, minimized by cargo-fuzz: a line of exactly
/// `max_line` bytes ended by `\r\n`, with a read boundary between the `\r` and the `\n`,
/// must not yield an extra empty line.
#[test]
fn framer_crlf_split_after_a_full_line() {
    assert_eq!(frame(&[b"xxxx\r\n"], 4), [Input(b"xxxx".to_vec())]);
    assert_eq!(frame(&[b"xxxx\r", b"\n"], 4), frame(&[b"xxxx\r\n"], 4));
}

/// `lenprefix_chunking_does_not_change_result`: a header with leading zeros that is 23
/// bytes before its `\n` must be accepted or refused the same way whether or not a read
/// boundary falls before the `\n`.
#[test]
fn lenprefix_long_zero_padded_header_split_before_newline() {
    let input = b"t 000000000000000000005\nhello";
    let whole = decode_lenprefix(&[input], 100);
    let (a, b) = input.split_at(23);
    assert_eq!(decode_lenprefix(&[a, b], 100), whole);
}

/// `lenprefix_messages_never_exceed_max`: a 1-byte text frame holding invalid UTF-8
/// becomes U+FFFD (3 bytes), longer than `max_message` = 1.
#[test]
fn lenprefix_invalid_utf8_text_within_max() {
    let (msgs, _) = decode_lenprefix(&[b"t 1\n\xc3"], 1);
    assert!(msgs.iter().all(|m| m.len() <= 3), "{msgs:?}");
}

// ---------------------------------------------------------------------------------------
// URL path → directory (route::segments)
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// An accepted path yields only segments that cannot leave a directory when joined
    /// under it: non-empty, no leading `.`, no `/`, `\` or NUL after decoding.
    #[test]
    fn route_segments_never_escape(raw in "(/(\\.|%2[eEfF]|%5[cC]|%00|[a-z.]){0,4}){0,5}/?") {
        if let Some(seg) = wsbridge::route::segments(&raw) {
            for p in &seg.parts {
                prop_assert!(!p.is_empty() && !p.starts_with(b"."), "{raw:?} -> {p:?}");
                prop_assert!(!p.iter().any(|&b| b == b'/' || b == b'\\' || b == 0), "{raw:?} -> {p:?}");
            }
        }
    }
}
