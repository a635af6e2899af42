//! CGI environment: arbitrary headers and request target.
//!
//! Input layout: `[flags][target]\n[name]\n[value]\n[name]\n[value]...`. The target goes
//! through `PathAndQuery` as hyper would parse it (skipped if rejected); header pairs that
//! `HeaderName::from_bytes`/`HeaderValue::from_bytes` reject are skipped. Flag bits: 0 TLS,
//! 1 IPv6 peer. The target is also given unparsed (lossily UTF-8, no query) as the raw path.
//!
//! Invariants checked (as in tests/it/properties.rs):
//! - `build` never panics; it is `Err` exactly when `percent_decode(path)` contains NUL;
//! - every variable name is `[A-Z0-9_]+` and appears once; there is no `HTTP_PROXY`;
//! - the `HTTP_*` names are exactly those of headers named `[A-Za-z0-9-]+` (not `Proxy`),
//!   and every other header name is reported in `dropped`;
//! - for a hyper-parsed target no value contains NUL; `PATH_INFO` = `percent_decode(path)`.
#![no_main]

use std::os::unix::ffi::OsStrExt;

use hyper::http::header::{HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::http::{HeaderMap, Version};
use libfuzzer_sys::fuzz_target;
use wsbridge::{env, net};

fn header_var(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.eq_ignore_ascii_case("proxy");
    ok.then(|| format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")))
}

fn check(headers: &HeaderMap, raw_path: &str, query: Option<&str>, tls: bool, v6: bool, from_hyper: bool) {
    let remote = if v6 { "[2001:db8::1]:40000" } else { "192.0.2.1:40000" };
    let req = env::Request {
        remote: remote.parse().unwrap(),
        version: Version::HTTP_11,
        method: "GET",
        raw_path,
        query,
        headers,
        tls,
        unique_id: 7,
        script_name: "/",
        protocol: None,
    };
    let passenv = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    let decoded = net::percent_decode(raw_path.as_bytes());
    let built = match env::build(&req, &passenv) {
        Err(_) => {
            assert!(decoded.contains(&0), "Err for a path without NUL: {raw_path:?}");
            return;
        }
        Ok(b) => b,
    };
    assert!(!decoded.contains(&0), "Ok for a path that decodes to NUL: {raw_path:?}");
    let mut names: Vec<&str> = Vec::new();
    for (k, v) in &built.vars {
        let k = k.to_str().expect("names are UTF-8");
        assert!(
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "bad variable name {k:?}"
        );
        if from_hyper {
            assert!(!v.as_bytes().contains(&0), "{k} contains NUL");
        }
        assert!(!names.contains(&k), "{k} repeats");
        names.push(k);
        if k == "PATH_INFO" {
            assert_eq!(v.as_bytes(), &decoded[..], "PATH_INFO is not percent_decode(path)");
        }
    }
    assert!(names.contains(&"PATH_INFO"));
    assert!(!names.contains(&"HTTP_PROXY"), "HTTP_PROXY set");
    let mut expected: Vec<String> = headers.keys().filter_map(|n| header_var(n.as_str())).collect();
    expected.sort();
    expected.dedup();
    let mut got: Vec<&str> = names.into_iter().filter(|k| k.starts_with("HTTP_")).collect();
    got.sort_unstable();
    assert_eq!(got, expected, "HTTP_* names");
    for name in headers.keys().filter(|n| header_var(n.as_str()).is_none()) {
        assert!(
            built
                .dropped
                .contains(&env::Dropped::HeaderName(name.as_str().to_owned())),
            "{name} not reported as dropped"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else { return };
    let tls = flags & 1 != 0;
    let v6 = flags & 2 != 0;
    let mut parts = rest.split(|&b| b == b'\n');
    let target = parts.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    while let (Some(n), Some(v)) = (parts.next(), parts.next()) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            headers.append(n, v);
        }
    }
    if let Ok(pq) = PathAndQuery::try_from(target) {
        check(&headers, pq.path(), pq.query(), tls, v6, true);
    }
    check(&headers, &String::from_utf8_lossy(target), None, tls, v6, false);
});
