//! Origin policy: arbitrary `--origin` value, `Origin` and `Host` headers.
//!
//! Input layout: `[flags][text]`; `text` (lossily UTF-8) is split on `\n` into the
//! `--origin` value, the `Origin` header and the `Host` header (missing parts are `None`).
//! Flag bits: 0 `--sameorigin`, 1 TLS, 2 no `--origin`, 3 no `Origin`, 4 no `Host`.
//!
//! Invariants checked (as in tests/it/properties.rs):
//! - `parse_host`, `from_flags`, `check` and the refusal's `Display` never panic;
//! - `--origin='*'` without `--sameorigin` allows every request;
//! - the default policy (no `--origin`, no `--sameorigin`) allows a request without `Origin`;
//! - ASCII case of the `--origin` value and of both headers never changes a decision;
//! - a trailing dot on a host name (not already ending with a dot, no `:[]`) in the `Host`
//!   header does not change a decision;
//! - same-origin: when `parse_host(Host)` gives a non-empty name of `[a-z0-9.-]` and a port,
//!   `Origin: http://<Host>` (https under TLS) is allowed by the default policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsbridge::origin::{parse_host, OriginPolicy};

fn decide(p: &OriginPolicy, origin: Option<&str>, host: Option<&str>, tls: bool) -> bool {
    match p.check(origin, host, tls) {
        Ok(()) => true,
        Err(refusal) => {
            let _ = refusal.to_string();
            false
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let flag = parts.next().filter(|_| flags & 4 == 0);
    let origin = parts.next().filter(|_| flags & 8 == 0);
    let host = parts.next().filter(|_| flags & 16 == 0);
    let sameorigin = flags & 1 != 0;
    let tls = flags & 2 != 0;

    let _ = parse_host(&text);
    if let Some(h) = host {
        let _ = parse_host(h);
    }

    let star = OriginPolicy::from_flags(Some("*"), false).unwrap();
    assert!(decide(&star, origin, host, tls), "'*' refused {origin:?} {host:?}");
    let default = OriginPolicy::from_flags(None, false).unwrap();
    assert!(decide(&default, None, host, tls), "default policy refused no Origin");

    let Ok(policy) = OriginPolicy::from_flags(flag, sameorigin) else {
        return;
    };
    let want = decide(&policy, origin, host, tls);

    let up = |s: Option<&str>| s.map(str::to_ascii_uppercase);
    let low = |s: Option<&str>| s.map(str::to_ascii_lowercase);
    assert_eq!(
        decide(&policy, up(origin).as_deref(), up(host).as_deref(), tls),
        want,
        "upper-case"
    );
    assert_eq!(
        decide(&policy, low(origin).as_deref(), low(host).as_deref(), tls),
        want,
        "lower-case"
    );
    let upper_policy = OriginPolicy::from_flags(up(flag).as_deref(), sameorigin).expect("upper-case --origin parses");
    assert_eq!(decide(&upper_policy, origin, host, tls), want, "upper-case --origin");

    if let Some(h) = host {
        let (name, port) = match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        };
        if !name.ends_with('.') && !name.contains([':', '[', ']']) {
            let dotted = match port {
                Some(p) => format!("{name}.:{p}"),
                None => format!("{name}."),
            };
            assert_eq!(
                decide(&policy, origin, Some(&dotted), tls),
                want,
                "trailing dot in {dotted:?}"
            );
        }
        if let Some((name, Some(_))) = parse_host(h) {
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            {
                let scheme = if tls { "https" } else { "http" };
                let o = format!("{scheme}://{h}");
                assert!(
                    decide(&default, Some(&o), Some(h), tls),
                    "same origin {o:?} refused for Host {h:?}"
                );
            }
        }
    }
});
