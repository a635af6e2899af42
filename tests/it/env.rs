//! The program's environment, compared field by field with what websocketd 0.4.1 gives
//! (reference §2.1) plus our documented differences.

use crate::common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Connects with extra headers and returns the program's `env` output as (name, value)
/// pairs in order, plus the client's local port.
async fn env_of(url: &str, headers: &[(&'static str, &'static str)]) -> (Vec<(String, String)>, u16) {
    let mut req = url.into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().append(*k, HeaderValue::from_static(v));
    }
    let (mut ws, _) = within(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake");
    let port = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().expect("local addr").port(),
        _ => unreachable!("plain connection"),
    };
    let (data, _, _) = recv_until_close(&mut ws).await;
    let vars = data
        .into_iter()
        .map(|m| m.into_text().expect("text").to_string())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value line");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (vars, port)
}

fn get<'a>(vars: &'a [(String, String)], k: &str) -> Option<&'a str> {
    vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_matches_websocketd_field_by_field() {
    let server = BinServer::start_with_env(
        &["--passenv=PATH,WSB_PASSED,WSB_EMPTY,HTTPS", "env"],
        &[
            ("FOO", "bar"),
            ("WSB_PASSED", "yes"),
            ("WSB_EMPTY", ""),
            ("HTTPS", "on"),
        ],
    );
    let url = server.url("/some/path?x=1&y=two%20words");
    let headers = [
        ("X-Custom-Thing", "a"),
        ("X-Custom-Thing", "b"),
        ("User-Agent", "probe/1.0"),
        ("Cookie", "k=v"),
    ];
    let (vars, client_port) = env_of(&url, &headers).await;
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    let port = server.addr.port().to_string();
    let expected: [(&str, &str); 22] = [
        ("SERVER_SOFTWARE", concat!("wsbridge/", env!("CARGO_PKG_VERSION"))),
        ("PATH", &std::env::var("PATH").unwrap_or_default()),
        ("WSB_PASSED", "yes"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_HOST", "127.0.0.1"),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", &port),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/"),
        ("PATH_INFO", "/some/path"),
        ("PATH_TRANSLATED", "/some/path"),
        ("QUERY_STRING", "x=1&y=two%20words"),
        ("AUTH_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("CONTENT_TYPE", ""),
        ("REMOTE_IDENT", ""),
        ("REMOTE_USER", ""),
        ("UNIQUE_ID", get(&vars, "UNIQUE_ID").unwrap_or("missing")),
        ("REMOTE_PORT", &client_port.to_string()),
        ("REQUEST_URI", "/some/path?x=1&y=two%20words"),
    ];
    // Values field by field. (The order is not websocketd's: std's Command sorts the
    // environment by name; no CGI program can rely on the order.)
    for (k, v) in &expected {
        assert_eq!(get(&vars, k), Some(*v), "{k}; got {names:?}");
    }
    assert!(get(&vars, "UNIQUE_ID").is_some_and(|u| u.parse::<u64>().is_ok()));
    assert_eq!(
        get(&vars, "HTTP_X_CUSTOM_THING"),
        Some("a, b"),
        "repeated headers joined"
    );
    assert_eq!(get(&vars, "HTTP_USER_AGENT"), Some("probe/1.0"));
    assert_eq!(get(&vars, "HTTP_COOKIE"), Some("k=v"));
    assert_eq!(
        get(&vars, "HTTP_HOST"),
        Some(format!("127.0.0.1:{port}").as_str()),
        "HTTP_HOST added"
    );
    assert_eq!(get(&vars, "HTTP_SEC_WEBSOCKET_VERSION"), Some("13"));
    assert_eq!(get(&vars, "HTTP_UPGRADE"), Some("websocket"));
    assert_eq!(get(&vars, "FOO"), None, "only --passenv names are inherited");
    assert_eq!(get(&vars, "WSB_EMPTY"), None, "empty passenv values are skipped");
    assert_eq!(get(&vars, "HTTPS"), None, "HTTPS is never passed through");
    let http_vars = vars.iter().filter(|(k, _)| k.starts_with("HTTP_")).count();
    assert_eq!(vars.len(), expected.len() + http_vars, "no other variables: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpoxy_and_underscore_headers_never_reach_the_program() {
    let server = TestServer::start(&["env"]).await;
    let headers = [
        ("Proxy", "http://evil.example:3128"),
        ("X_Foo", "spoof"),
        ("X-Foo", "real"),
    ];
    let (vars, _) = env_of(&server.url("/"), &headers).await;
    assert_eq!(get(&vars, "HTTP_PROXY"), None, "httpoxy");
    assert_eq!(
        get(&vars, "HTTP_X_FOO"),
        Some("real"),
        "X_Foo must not impersonate X-Foo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_id_differs_per_connection() {
    let server = TestServer::start(&["env"]).await;
    let (a, _) = env_of(&server.url("/"), &[]).await;
    let (b, _) = env_of(&server.url("/"), &[]).await;
    assert_ne!(get(&a, "UNIQUE_ID"), get(&b, "UNIQUE_ID"));
}
