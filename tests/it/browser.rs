//! A real browser (headless Chromium from Debian) against the real binary: the
//! `--devconsole` page, used as a person would (clicks and typing through DevTools),
//! talks to an echo program, and a page on another site that sends the browser to the
//! console cannot make it connect or send; a page served from another port reaches
//! wsbridge only when `--origin` allows that page; with `--compress` the page sees
//! permessage-deflate answered (`ws.extensions`). What the page shows, read through
//! DevTools, is the evidence. The test fails (it does not skip) when Chromium is missing:
//! tools/test.sh installs it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::deploy::TempDir;
use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The longest one Chromium run may take, start to DOM dump.
const BROWSER_RUN: Duration = Duration::from_secs(60);

fn chromium() -> &'static str {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).exists() {
            return c;
        }
    }
    panic!(
        "headless Chromium is needed for this test and was not found at /usr/bin/chromium: \
         install it with `apt-get install -y chromium` (tools/test.sh does this)"
    );
}

/// Opens `url` in a fresh headless Chromium and evaluates `expr` (JavaScript that yields
/// a string) in the page until the result contains `until` or [`BROWSER_RUN`] passes;
/// returns the last result. Driven over the DevTools protocol, because a DOM dump cannot
/// wait for a WebSocket reply. Chromium's process group is killed afterwards whatever
/// happened.
async fn eval_in_page(url: &str, expr: &str, until: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "wsbridge-chromium-{}-{}",
        std::process::id(),
        NEXT_PROFILE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&profile);
    let mut cmd = std::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--remote-debugging-port=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg("about:blank")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");
    let pgid = nix::unistd::Pid::from_raw(child.id().expect("chromium pid") as i32);
    let stderr = child.stderr.take().expect("stderr");
    let result = tokio::time::timeout(BROWSER_RUN, drive(stderr, url, expr, until)).await;
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&profile);
    match result {
        Ok(v) => v,
        Err(_) => panic!("chromium did not finish within {BROWSER_RUN:?} for {url}"),
    }
}

static NEXT_PROFILE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn drive(stderr: tokio::process::ChildStderr, url: &str, expr: &str, until: &str) -> String {
    use tokio::io::AsyncBufReadExt;

    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let devtools = loop {
        let line = lines
            .next_line()
            .await
            .expect("chromium stderr")
            .expect("chromium exited before announcing DevTools");
        if let Some(at) = line.find("ws://") {
            break line[at..].trim().to_owned();
        }
    };
    // Keep draining stderr so Chromium never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (ws, _) = tokio_tungstenite::connect_async(devtools.as_str())
        .await
        .expect("connect to DevTools");
    let mut cdp = Cdp { ws, id: 0 };
    let created = cdp
        .call(
            None,
            "Target.createTarget",
            format!(r#"{{"url":{}}}"#, json_string(url)),
        )
        .await;
    let target = json_field(&created, "targetId").expect("targetId");
    let attached = cdp
        .call(
            None,
            "Target.attachToTarget",
            format!(r#"{{"targetId":"{target}","flatten":true}}"#),
        )
        .await;
    let session = json_field(&attached, "sessionId").expect("sessionId");
    let mut last = String::new();
    for _ in 0..400 {
        let r = cdp
            .call(
                Some(&session),
                "Runtime.evaluate",
                format!(r#"{{"expression":{},"returnByValue":true}}"#, json_string(expr)),
            )
            .await;
        last = json_field(&r, "value").unwrap_or_default();
        if last.contains(until) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

/// A DevTools protocol connection: one call at a time.
struct Cdp {
    ws: Ws,
    id: u32,
}

impl Cdp {
    /// Sends one command and returns the text of its answer (events are skipped).
    async fn call(&mut self, session: Option<&str>, method: &str, params: String) -> String {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        self.id += 1;
        let id = self.id;
        let session = session.map(|s| format!(r#","sessionId":"{s}""#)).unwrap_or_default();
        let msg = format!(r#"{{"id":{id}{session},"method":"{method}","params":{params}}}"#);
        self.ws.send(Message::text(msg)).await.expect("send to DevTools");
        let want = format!(r#"{{"id":{id},"#);
        loop {
            let m = self.ws.next().await.expect("DevTools closed").expect("DevTools error");
            if let Message::Text(t) = m {
                if t.as_str().starts_with(&want) {
                    return t.to_string();
                }
            }
        }
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first string value of `"name":"..."` in a JSON text, unescaped (enough for
/// DevTools answers).
fn json_field(json: &str, name: &str) -> Option<String> {
    let start = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?).unwrap_or('?'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// A minimal page server on its own port: a request for `/NAME` gets `pages[NAME]`.
async fn serve_pages(listener: TcpListener, pages: Vec<(String, String)>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let pages = pages.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head);
            let path = line.split(' ').nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
            let resp = match pages.iter().find(|(name, _)| *name == path) {
                Some((_, page)) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
            };
            let _ = tcp.write_all(resp.as_bytes()).await;
        });
    }
}

/// A page that opens a socket to `ws_url`, sends one message and writes what happens
/// into the DOM.
fn cross_page(ws_url: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out"></pre><script>
const out = document.getElementById("out");
const ws = new WebSocket("{ws_url}");
ws.onopen = () => {{ out.textContent += "open\n"; ws.send("cross-port-hello"); }};
ws.onmessage = (e) => {{ out.textContent += "reply:" + e.data + "\n"; ws.close(1000); }};
ws.onerror = () => {{ out.textContent += "error\n"; }};
ws.onclose = (e) => {{ out.textContent += "closed:" + e.code + "\n"; }};
</script></body></html>"#
    )
}

const OUT: &str = "document.getElementById('out') ? document.getElementById('out').textContent : ''";

/// JavaScript that uses the `--devconsole` page at `host` as a person would: once the page
/// has loaded, it notes what the page's log showed by then, clicks Connect, and when the
/// message box is enabled types `msg` into it and submits the form. It is evaluated again
/// and again, so each step runs once (guarded by flags on `window`, which a navigation
/// resets). Yields `URL | at load: [LOG] | LOG`, each log line as `class:text`.
fn console_user(host: &str, msg: &str) -> String {
    format!(
        r#"(() => {{
  const el = (id) => document.getElementById(id);
  const lines = () => Array.from(document.querySelectorAll('#log div')).map(d => d.className + ':' + d.textContent).join(' | ');
  if (location.host !== {host} || document.readyState !== 'complete' || !el('open')) return 'not on the console: ' + location.href;
  if (window.wsbridgeAtLoad === undefined) window.wsbridgeAtLoad = lines();
  if (!window.wsbridgeClicked && !el('open').disabled) {{ window.wsbridgeClicked = true; el('open').click(); }}
  if (!window.wsbridgeSent && !el('msg').disabled) {{ window.wsbridgeSent = true; el('msg').value = {msg}; el('form').requestSubmit(); }}
  return el('url').value + ' | at load: [' + window.wsbridgeAtLoad + '] | ' + lines();
}})()"#,
        host = json_string(host),
        msg = json_string(msg),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devconsole_page_echoes_through_a_real_browser() {
    chromium();
    let server = BinServer::start(&["--devconsole", "cat"]);
    let url = format!("http://{}/some/path?x=1", server.addr);
    let expr = console_user(&server.addr.to_string(), "hello from chromium");
    let seen = eval_in_page(&url, &expr, "in:\u{2190} hello from chromium").await;
    assert!(
        seen.contains("in:\u{2190} hello from chromium"),
        "the console did not show the echo: {seen}\nlog:\n{}",
        server.log()
    );
    assert!(
        seen.starts_with(&format!("ws://{}/some/path?x=1 |", server.addr)),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_page_cannot_make_the_console_send() {
    chromium();
    let dir = TempDir::new("console-csrf");
    let received = dir.path("received");
    let received_arg = received.to_str().expect("utf-8 temp path");
    // Records every line it receives, then echoes it.
    let recorder = r#"while IFS= read -r l; do printf '%s\n' "$l" >> "$0"; printf '%s\n' "$l"; done"#;
    let server = BinServer::start(&["--devconsole", "sh", "-c", recorder, received_arg]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page server");
    let page_port = listener.local_addr().expect("addr").port();
    // The foreign page sends the browser to the console with a message in the fragment.
    let evil = format!(
        r#"<!doctype html><html><body><script>location.href = "http://{}/#autotest=evil";</script></body></html>"#,
        server.addr
    );
    let pager = tokio::spawn(serve_pages(listener, vec![("evil".to_owned(), evil)]));

    let expr = console_user(&server.addr.to_string(), "user-marker");
    let seen = eval_in_page(
        &format!("http://127.0.0.1:{page_port}/evil"),
        &expr,
        "in:\u{2190} user-marker",
    )
    .await;
    pager.abort();
    let at_load = seen
        .split(" | at load: [")
        .nth(1)
        .and_then(|rest| rest.split("] | ").next())
        .unwrap_or_else(|| panic!("the console page never loaded: {seen}"));
    assert!(
        !at_load.contains("connecting"),
        "the console connected by itself on load: {seen}\nlog:\n{}",
        server.log()
    );
    assert!(
        seen.contains("in:\u{2190} user-marker"),
        "the user's message got no echo: {seen}\nlog:\n{}",
        server.log()
    );
    // The marker's echo came after the program recorded it; anything sent before the
    // user acted would be in the file before it.
    let got = std::fs::read_to_string(&received).expect("the program recorded the marker");
    assert_eq!(got, "user-marker\n", "the program received more than the user sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_from_another_port_needs_origin() {
    chromium();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page server");
    let page_port = listener.local_addr().expect("addr").port();
    let allowed = BinServer::start(&[&format!("--origin=127.0.0.1:{page_port}"), "cat"]);
    let any_port = BinServer::start(&["--origin=127.0.0.1", "cat"]);
    let refused = BinServer::start(&["cat"]);
    let pages = vec![
        ("allowed".to_owned(), cross_page(&format!("ws://{}/", allowed.addr))),
        ("anyport".to_owned(), cross_page(&format!("ws://{}/", any_port.addr))),
        ("refused".to_owned(), cross_page(&format!("ws://{}/", refused.addr))),
    ];
    let pager = tokio::spawn(serve_pages(listener, pages));
    let page = |name: &str| format!("http://127.0.0.1:{page_port}/{name}");

    let seen = eval_in_page(&page("allowed"), OUT, "closed:").await;
    assert!(
        seen.contains("reply:cross-port-hello") && seen.contains("closed:1000"),
        "allowed origin got no reply: {seen:?}\nlog:\n{}",
        allowed.log()
    );
    let seen = eval_in_page(&page("anyport"), OUT, "closed:").await;
    assert!(
        seen.contains("reply:cross-port-hello"),
        "--origin without a port: {seen:?}"
    );
    let seen = eval_in_page(&page("refused"), OUT, "closed:").await;
    assert!(!seen.contains("reply:"), "a refused origin got through: {seen:?}");
    assert!(seen.contains("error") && seen.contains("closed:1006"), "{seen:?}");
    assert!(refused.log().contains("upgrade refused"), "{}", refused.log());
    pager.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_never_reflects_the_request() {
    // No browser needed: the page must be the same bytes whatever the request says.
    let server = TestServer::start(&["--devconsole", "cat"]).await;
    let plain = crate::common::rawhttp::get(server.addr, "/").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(plain
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));
    let nasty = "/%22%3E%3Cscript%3Ealert(1)%3C/script%3E?q=%3Cimg%20src=x%20onerror=alert(2)%3E";
    let extra = "X-Evil: <script>alert(3)</script>\r\nReferer: javascript:alert(4)\r\n";
    let attacked = crate::common::rawhttp::request(server.addr, "GET", nasty, extra).await;
    assert_eq!(attacked.body, plain.body, "the page changed with the request");
    assert!(!attacked.text().contains("alert("));
    let a = crate::common::rawhttp::request(server.addr, "POST", "/", "Content-Length: 0\r\n").await;
    assert_eq!(a.status, 405);
}

/// Basic auth as a person meets it: Chromium opens a page whose URL carries the
/// credentials, is challenged (401), answers with them, and the page's WebSocket to the
/// same server goes through with the same credentials (the browser's auth cache): the
/// program is told who it is. (Headless Chromium without credentials waits at the login
/// prompt, so the refusals are tested with other clients in tests/it/auth.rs.)
#[cfg(feature = "auth")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_passes_basic_auth_to_the_page_and_its_socket() {
    chromium();
    let dir = TempDir::new("browser-auth");
    // `htpasswd -nbB alice secret` (cost 5).
    std::fs::write(
        dir.path("users"),
        "alice:$2y$05$oHDoqjaahT.px2fSebrXqO5p7t/DaCduttAW9RWkUUixAg.RP7M.y\n",
    )
    .expect("write users");
    std::fs::create_dir(dir.path("www")).expect("mkdir");
    std::fs::write(
        dir.path("www/index.html"),
        "<!doctype html><title>auth</title><pre id=out></pre><script>\n\
         const out = document.getElementById('out');\n\
         const ws = new WebSocket('ws://' + location.host + '/');\n\
         ws.onmessage = e => { out.textContent += 'msg:' + e.data + '\\n'; };\n\
         ws.onclose = e => { out.textContent += 'closed:' + e.code + '\\n'; };\n\
         </script>\n",
    )
    .expect("write page");
    let server = BinServer::start(&[
        &format!("--htpasswd={}", dir.path("users").display()),
        &format!("--staticdir={}", dir.path("www").display()),
        "sh",
        "-c",
        r#"echo "$AUTH_TYPE|$REMOTE_USER"; exec cat"#,
    ]);
    let text = "document.body ? document.body.innerText : ''";
    let url = format!("http://alice:secret@{}/index.html", server.addr);
    let seen = eval_in_page(&url, text, "msg:").await;
    assert!(
        seen.contains("msg:Basic|alice"),
        "the page's socket did not get through as alice: {seen:?}\nlog:\n{}",
        server.log()
    );
    // The browser sent nothing until it was challenged: the credentials came from the 401.
    assert!(server.log().contains("credentials needed"), "{}", server.log());
}

#[cfg(feature = "compress")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_negotiates_permessage_deflate_with_compress() {
    chromium();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page server");
    let page_port = listener.local_addr().expect("addr").port();
    let server = BinServer::start(&["--compress", "--origin=127.0.0.1", "cat"]);
    let page = format!(
        r#"<!doctype html><html><body><pre id="out"></pre><script>
const out = document.getElementById("out");
const ws = new WebSocket("ws://{}/");
const msg = JSON.stringify({{sensor: "t1", readings: Array(50).fill(21.5)}});
ws.onopen = () => {{ out.textContent += "ext:" + ws.extensions + "\n"; ws.send(msg); }};
ws.onmessage = (e) => {{ out.textContent += (e.data === msg ? "echo:same" : "echo:different") + "\n"; ws.close(1000); }};
ws.onclose = (e) => {{ out.textContent += "closed:" + e.code + "\n"; }};
</script></body></html>"#,
        server.addr
    );
    let pager = tokio::spawn(serve_pages(listener, vec![("deflate".to_owned(), page)]));
    let seen = eval_in_page(&format!("http://127.0.0.1:{page_port}/deflate"), OUT, "closed:").await;
    assert!(
        seen.contains("ext:permessage-deflate") && seen.contains("echo:same") && seen.contains("closed:1000"),
        "{seen:?}\nlog:\n{}",
        server.log()
    );
    pager.abort();
}
