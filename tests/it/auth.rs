//! Who may connect (issue 26): `--htpasswd` basic auth with password files made by the
//! real tools (`htpasswd` from apache2-utils, `mkpasswd` from whois), the `--authcmd`
//! hook in sh and in Python, and `--authurl` against a real small HTTP server (Python's
//! http.server). Clients are Python's `websockets` and raw HTTP; the server is the real
//! binary. The tools are installed by tools/test.sh; without one a test says why and
//! skips, except under CI=true, where it fails.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::deploy::{run_to_exit, TempDir};
use crate::common::rawhttp;
use crate::common::*;

/// Whether `name` is on PATH; prints why the test skips when not (and fails under CI).
fn have(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is needed here and CI=true: tools/test.sh installs it"
        );
        eprintln!("skipping: {name} is not installed (tools/test.sh installs it)");
    }
    found
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("run sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Connects with Python's `websockets` (credentials in the URL or as an `Authorization`
/// value) and returns `OPEN <first message>` or `STATUS <code> <WWW-Authenticate>`.
async fn py_ws(url: &str, authorization: Option<&str>) -> String {
    let script = "import asyncio, sys\n\
        from websockets.asyncio.client import connect\n\
        from websockets.exceptions import InvalidStatus\n\
        async def main():\n\
        \x20   h = {'Authorization': sys.argv[2]} if len(sys.argv) > 2 else {}\n\
        \x20   try:\n\
        \x20       async with connect(sys.argv[1], additional_headers=h, open_timeout=15, max_size=None) as ws:\n\
        \x20           print('OPEN', await asyncio.wait_for(ws.recv(), 15))\n\
        \x20   except InvalidStatus as e:\n\
        \x20       r = e.response\n\
        \x20       print('STATUS', r.status_code, r.headers.get('WWW-Authenticate', ''))\n\
        asyncio.run(main())\n";
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-c", script, url]).kill_on_drop(true);
    if let Some(a) = authorization {
        cmd.arg(a);
    }
    let out = within(STEP * 2, cmd.output()).await.expect("run python3");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn b64(s: &str) -> String {
    data_encoding::BASE64.encode(s.as_bytes())
}

/// What the endpoint program prints first: the access variables it got.
const SHOW: &str = r#"echo "$AUTH_TYPE|$REMOTE_USER|$AUTH_USER|$PATH|$LD_PRELOAD|$AUTH_FOR|$AUTH_URI"; exec cat"#;

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A password file with a bcrypt user (htpasswd -B), and SHA-512 and SHA-256 users
/// (mkpasswd), all made by the real tools.
fn password_file(dir: &TempDir) -> Option<String> {
    if !(have("htpasswd") && have("mkpasswd")) {
        return None;
    }
    let file = dir.path("users");
    let f = file.display();
    sh(&format!("htpasswd -cbB {f} alice 'open sesame'"));
    sh(&format!("printf 'bob:%s\\n' \"$(mkpasswd -m sha-512 hunter2)\" >> {f}"));
    sh(&format!("printf 'carol:%s\\n' \"$(mkpasswd -m sha-256 pw3)\" >> {f}"));
    Some(file.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_upgrades_and_plain_http() {
    let dir = TempDir::new("basic");
    let Some(users) = password_file(&dir) else { return };
    std::fs::create_dir(dir.path("cgi")).expect("mkdir");
    write_exec(
        &dir.path("cgi/who.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s|%s|%s\\n' \"$AUTH_TYPE\" \"$REMOTE_USER\" \"$HTTP_AUTHORIZATION\"\n",
    );
    let cgi = format!("--cgidir={}", dir.path("cgi").display());
    let s = BinServer::start(&[
        &format!("--htpasswd={users}"),
        "--realm=Board 7",
        &cgi,
        "sh",
        "-c",
        SHOW,
    ]);
    let a = s.addr;
    let creds = |u: &str, p: &str| format!("ws://{u}:{p}@{a}/");

    // No credentials, wrong ones, and malformed ones: 401 with the challenge.
    assert_eq!(
        py_ws(&s.url("/"), None).await,
        r#"STATUS 401 Basic realm="Board 7", charset="UTF-8""#
    );
    let opened = py_ws(&creds("alice", "open%20sesame"), None).await;
    assert!(opened.starts_with("OPEN Basic|alice||"), "bcrypt user: {opened}");
    let opened = py_ws(&s.url("/"), Some(&format!("Basic {}", b64("bob:hunter2")))).await;
    assert!(opened.starts_with("OPEN Basic|bob||"), "sha-512 user: {opened}");
    let opened = py_ws(&creds("carol", "pw3"), None).await;
    assert!(opened.starts_with("OPEN Basic|carol||"), "sha-256 user: {opened}");
    // Again: from the cache this time, and still right.
    let opened = py_ws(&creds("alice", "open%20sesame"), None).await;
    assert!(opened.starts_with("OPEN Basic|alice||"), "{opened}");
    for (why, value) in [
        ("wrong password", format!("Basic {}", b64("alice:open sesamE"))),
        ("unknown user", format!("Basic {}", b64("mallory:open sesame"))),
        ("bad base64", "Basic !!!notbase64".to_owned()),
        ("no colon", format!("Basic {}", b64("alicepassword"))),
        ("empty user", format!("Basic {}", b64(":open sesame"))),
        ("another scheme", "Bearer abc".to_owned()),
        ("huge value", format!("Basic {}", "QUFB".repeat(4000))),
        (
            "huge password",
            format!("Basic {}", b64(&format!("alice:{}", "x".repeat(3000)))),
        ),
    ] {
        let got = py_ws(&s.url("/"), Some(&value)).await;
        assert!(got.starts_with("STATUS 401 Basic realm="), "{why}: {got}");
    }

    // Plain HTTP (CGI) too, and the script gets the user.
    let get = |auth: &str| format!("GET /who.sh HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes();
    let r = rawhttp::send(a, &get(""), false).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some_and(|c| c.starts_with("Basic ")));
    let r = rawhttp::send(
        a,
        &get(&format!("Authorization: Basic {}\r\n", b64("bob:hunter2"))),
        false,
    )
    .await;
    // The script learns who, not the password.
    assert_eq!((r.status, r.text().as_str()), (200, "Basic|bob|\n"));
    assert!(s.log().contains("basic auth refused"), "{}", s.log());
}

#[test]
fn unsupported_password_formats_are_refused_at_startup() {
    let dir = TempDir::new("badformat");
    if !have("htpasswd") {
        return;
    }
    let f = dir.path("users");
    sh(&format!("htpasswd -cbB {} alice x", f.display()));
    // Apache's MD5 ($apr1$), which we do not verify.
    sh(&format!("htpasswd -bm {} bob y", f.display()));
    let (code, err) = run_to_exit(&[&format!("--htpasswd={}", f.display()), "cat"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 2") && err.contains("$apr1$"), "{err}");
    std::fs::write(&f, "carol:plaintext\n").expect("write");
    let (code, err) = run_to_exit(&[&format!("--htpasswd={}", f.display()), "cat"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 1") && err.contains("plain text"), "{err}");
    let (code, err) = run_to_exit(&["--htpasswd=/no/such/file", "cat"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot read --htpasswd=/no/such/file"), "{err}");
}

/// A verification slower than --authtimeout answers 503 at the deadline, like a slow
/// hook, instead of keeping the client waiting as long as the hash takes; and a hash
/// whose cost would hold a thread for days is refused at startup, naming the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_password_check_answers_503_at_authtimeout() {
    let dir = TempDir::new("slowhash");
    let f = dir.path("users");
    // Well-formed bcrypt at cost 14 (allowed), made up so no password matches: about
    // four seconds per check in a debug build (cost 12 takes 0.9 s).
    let slow = "slow:$2y$14$oHDoqjaahT.px2fSebrXqO5p7t/DaCduttAW9RWkUUixAg.RP7M.y\n";
    std::fs::write(&f, slow).expect("write");
    let s = BinServer::start(&[&format!("--htpasswd={}", f.display()), "--authtimeout=300ms", "cat"]);
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        b64("slow:guess")
    );
    let start = std::time::Instant::now();
    let r = rawhttp::send(s.addr, raw.as_bytes(), false).await;
    let took = start.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    s.wait_log("password check did not finish within --authtimeout").await;

    std::fs::write(&f, slow.replacen("$14$", "$31$", 1)).expect("write");
    let (code, err) = run_to_exit(&[&format!("--htpasswd={}", f.display()), "cat"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 1") && err.contains("bcrypt cost 31"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_password_file() {
    let dir = TempDir::new("hup");
    if !have("htpasswd") {
        return;
    }
    let f = dir.path("users");
    sh(&format!("htpasswd -cbB {} alice old", f.display()));
    let s = BinServer::start(&[&format!("--htpasswd={}", f.display()), "sh", "-c", SHOW]);
    let url = |p: &str| format!("ws://alice:{p}@{}/", s.addr);
    assert!(py_ws(&url("old"), None).await.starts_with("OPEN Basic|alice"));
    // A broken file is refused and the old users stay.
    std::fs::write(&f, "alice:$apr1$x$y\n").expect("write");
    s.signal(nix::sys::signal::Signal::SIGHUP);
    s.wait_log("--htpasswd reload failed").await;
    assert!(py_ws(&url("old"), None).await.starts_with("OPEN Basic|alice"));
    sh(&format!("htpasswd -cbB {} alice new", f.display()));
    s.signal(nix::sys::signal::Signal::SIGHUP);
    s.wait_log("--htpasswd reloaded").await;
    assert!(
        py_ws(&url("old"), None).await.starts_with("STATUS 401"),
        "cached old password"
    );
    assert!(py_ws(&url("new"), None).await.starts_with("OPEN Basic|alice"));
}

/// The sh hook: decides by the query; its hanging case records its own pid (the group)
/// and its child's.
fn sh_hook(dir: &TempDir) -> String {
    let path = dir.path("hook.sh");
    let d = dir.0.display();
    write_exec(
        &path,
        &format!(
            "#!/bin/sh\n\
             echo \"hook saw $REMOTE_ADDR $HTTP_X_TOKEN\" >&2\n\
             case \"$QUERY_STRING\" in\n\
             allow) echo AUTH_USER=alice; echo PATH=/evil; echo LD_PRELOAD=/x.so; exit 0;;\n\
             deny401) echo 'Status: 401'; echo 'WWW-Authenticate: Bearer realm=\"hook\"'; exit 1;;\n\
             hang) echo $$ > {d}/hook.pid; sleep 60 & echo $! > {d}/sleep.pid; wait; exit 0;;\n\
             *) exit 3;;\n\
             esac\n"
        ),
    );
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sh_hook_allows_denies_and_sets_only_auth_variables() {
    let dir = TempDir::new("shhook");
    let hook = sh_hook(&dir);
    let s = BinServer::start(&[&format!("--authcmd={hook}"), "--authtimeout=2s", "sh", "-c", SHOW]);
    let got = py_ws(&s.url("/?allow"), None).await;
    let fields: Vec<&str> = got.trim_start_matches("OPEN ").split('|').collect();
    assert_eq!(fields[..3], ["", "", "alice"], "{got}");
    assert!(
        fields[3] != "/evil" && !fields[3].is_empty(),
        "PATH was set by the hook: {got}"
    );
    assert_eq!(fields[4], "", "LD_PRELOAD was set by the hook: {got}");
    s.wait_log("only AUTH_* and REMOTE_USER may be set").await;
    assert!(
        s.log().contains("name=\"PATH\"") || s.log().contains("name=PATH"),
        "{}",
        s.log()
    );

    assert_eq!(
        py_ws(&s.url("/?deny401"), None).await,
        r#"STATUS 401 Bearer realm="hook""#
    );
    assert_eq!(py_ws(&s.url("/?other"), None).await, "STATUS 403");
    // Plain HTTP is not checked without --authcmd-http.
    let r = rawhttp::get(s.addr, "/?other").await;
    assert_eq!(r.status, 426);

    // A hook that hangs: 503 after --authtimeout, and its whole group is stopped.
    let started = std::time::Instant::now();
    assert_eq!(py_ws(&s.url("/?hang"), None).await, "STATUS 503");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let pid = |name: &str| -> i32 {
        std::fs::read_to_string(dir.path(name))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    };
    assert!(
        gone_within(pid("hook.pid"), LADDER + STEP).await,
        "the hook outlived its timeout"
    );
    assert!(
        gone_within(pid("sleep.pid"), LADDER + STEP).await,
        "the hook's child outlived it"
    );
    assert!(s.log().contains("auth hook timed out"), "{}", s.log());
}

/// A hook that prints more than the pipe holds is answered (503) as soon as it is over
/// the bound, not after --authtimeout with the hook stuck writing; one that prints a
/// lot of allowed output under the bound is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_prints_too_much_is_refused_at_once() {
    let dir = TempDir::new("loudhook");
    let hook = dir.path("hook.sh");
    write_exec(
        &hook,
        "#!/bin/sh
         case \"$QUERY_STRING\" in
         loud) head -c 200000 /dev/zero | tr '\\0' a; echo; exit 0;;
         *) i=0; while [ $i -lt 300 ]; do echo \"AUTH_PAD=$i.........................\"; i=$((i+1)); done; echo AUTH_USER=alice;;
         esac
",
    );
    let s = BinServer::start(&[
        &format!("--authcmd={}", hook.display()),
        "--authtimeout=12s",
        "sh",
        "-c",
        SHOW,
    ]);
    let started = std::time::Instant::now();
    assert_eq!(py_ws(&s.url("/?loud"), None).await, "STATUS 503");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    s.wait_log("printed more than").await;
    let got = py_ws(&s.url("/?quiet"), None).await;
    assert!(got.starts_with("OPEN ||alice|"), "{got}");
}

/// An upgrade the handshake checks refuse anyway (another site's Origin, a bad
/// version) is refused before the hook runs: a hostile page cannot have its visitors'
/// browsers run the hook with their cookies, nor spend --authmax slots on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_does_not_run_for_an_upgrade_refused_anyway() {
    let dir = TempDir::new("hookorder");
    let hook = dir.path("hook.sh");
    let runs = dir.path("runs");
    write_exec(
        &hook,
        &format!("#!/bin/sh\necho run >> {}\necho AUTH_USER=alice\n", runs.display()),
    );
    let s = BinServer::start(&[&format!("--authcmd={}", hook.display()), "sh", "-c", SHOW]);
    let upgrade = |extra: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n",
            s.addr
        )
    };
    let r = rawhttp::send(
        s.addr,
        upgrade("Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n").as_bytes(),
        false,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = rawhttp::send(s.addr, upgrade("Sec-WebSocket-Version: 8\r\n").as_bytes(), false).await;
    assert_eq!(r.status, 426, "{}", r.text());
    assert!(!runs.exists(), "the hook ran for an upgrade refused anyway");
    // A same-origin upgrade still runs it.
    let got = py_ws(&s.url("/"), None).await;
    assert!(got.starts_with("OPEN ||alice|"), "{got}");
    assert!(runs.exists(), "the hook did not run for a good upgrade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hook_reads_cookies_and_guards_plain_http_with_authcmd_http() {
    let dir = TempDir::new("pyhook");
    let hook = dir.path("hook.py");
    write_exec(
        &hook,
        "#!/usr/bin/env python3\n\
         import os, sys\n\
         cookie = os.environ.get('HTTP_COOKIE', '')\n\
         if 'token=good' in cookie:\n\
         \x20   print('AUTH_USER=bob')\n\
         \x20   print('REMOTE_USER=bob')\n\
         \x20   sys.exit(0)\n\
         if 'token=expired' in cookie:\n\
         \x20   print('Status: 401')\n\
         \x20   print('WWW-Authenticate: Cookie realm=\"py\"')\n\
         \x20   sys.exit(1)\n\
         sys.exit(1)\n",
    );
    std::fs::create_dir(dir.path("www")).expect("mkdir");
    std::fs::write(dir.path("www/index.html"), "hi\n").expect("write");
    let s = BinServer::start(&[
        &format!("--authcmd={}", hook.display()),
        "--authcmd-http",
        &format!("--staticdir={}", dir.path("www").display()),
        "sh",
        "-c",
        SHOW,
    ]);
    let ws = |cookie: &str| {
        let url = s.url("/");
        let cookie = cookie.to_owned();
        async move {
            let script = "import asyncio, sys\n\
                from websockets.asyncio.client import connect\n\
                from websockets.exceptions import InvalidStatus\n\
                async def main():\n\
                \x20   try:\n\
                \x20       async with connect(sys.argv[1], additional_headers={'Cookie': sys.argv[2]}, open_timeout=15) as ws:\n\
                \x20           print('OPEN', await asyncio.wait_for(ws.recv(), 15))\n\
                \x20   except InvalidStatus as e:\n\
                \x20       print('STATUS', e.response.status_code, e.response.headers.get('WWW-Authenticate', ''))\n\
                asyncio.run(main())\n";
            let out = within(
                STEP * 2,
                tokio::process::Command::new("python3")
                    .args(["-c", script, &url, &cookie])
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("python3");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    let got = ws("token=good").await;
    assert!(got.starts_with("OPEN |bob|bob|"), "{got}");
    assert_eq!(ws("token=expired").await, r#"STATUS 401 Cookie realm="py""#);
    assert_eq!(ws("token=nope").await, "STATUS 403");
    let get = |cookie: &str| {
        format!("GET /index.html HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    assert_eq!(rawhttp::send(s.addr, &get("token=nope"), false).await.status, 403);
    let r = rawhttp::send(s.addr, &get("token=good"), false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hi\n"));
}

/// 200 clients at once against a slow hook that denies: never more than --authmax hooks
/// run at once (each counts, as it starts, the hook process groups whose leader is
/// alive: a leader is reaped before its slot is given back), every client gets a clear answer (403, or 503 when no slot came in
/// time), none takes a --maxforks slot, and an allowed client still gets in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_against_a_slow_hook_keeps_to_authmax_and_leaves_maxforks_free() {
    if !(have("pgrep") && have("ps")) {
        return;
    }
    let dir = TempDir::new("flood");
    let hook = dir.path("slow.sh");
    let d = dir.0.display();
    write_exec(
        &hook,
        &format!(
            "#!/bin/sh\n\
             n=0\n\
             for g in $(ps -o pgid= -p \"$(pgrep -d, -f -- \"$0\")\" | sort -u); do\n\
             grep -qa slow.sh /proc/$g/cmdline 2>/dev/null && n=$((n+1))\n\
             done\n\
             echo $n >> {d}/counts\n\
             sleep 0.2\n\
             [ \"$QUERY_STRING\" = allow ]\n"
        ),
    );
    let s = BinServer::start(&[
        &format!("--authcmd={}", hook.display()),
        "--authmax=4",
        "--maxforks=1",
        "--authtimeout=3s",
        "cat",
    ]);
    let addr = s.addr;
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(tokio::spawn(async move {
            let req = format!(
                "GET /?flood HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            rawhttp::send(addr, req.as_bytes(), false).await.status
        }));
    }
    let mut answers = std::collections::BTreeMap::new();
    for c in clients {
        let status = within(STEP * 3, c).await.expect("client task");
        *answers.entry(status).or_insert(0) += 1;
    }
    assert!(answers.keys().all(|s| *s == 403 || *s == 503), "answers: {answers:?}");
    assert!(answers.get(&403).copied().unwrap_or(0) >= 4, "answers: {answers:?}");
    let counts = std::fs::read_to_string(dir.path("counts")).expect("counts");
    let most = counts
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    assert!((1..=4).contains(&most), "{most} hooks ran at once (--authmax=4)");
    // The one --maxforks slot is still free.
    let mut ws = connect(&s.url("/?allow")).await;
    send_text(&mut ws, "after the flood").await;
    assert_eq!(recv_text(&mut ws).await, "after the flood");
}

/// The small auth service: a Python http.server that allows `token=good` (with
/// X-Auth-* headers echoing what it was told), answers 401 for `token=expired`, hangs
/// for `token=slow` and fails (500) otherwise. Prints its port.
const AUTH_SERVICE: &str = "import http.server, sys, time\n\
class H(http.server.BaseHTTPRequestHandler):\n\
\x20   def do_GET(self):\n\
\x20       c = self.headers.get('Cookie', '')\n\
\x20       if 'token=good' in c:\n\
\x20           self.send_response(204)\n\
\x20           self.send_header('X-Auth-User', 'carol')\n\
\x20           self.send_header('X-Remote-User', 'carol')\n\
\x20           self.send_header('X-Auth-For', self.headers.get('X-Forwarded-For', ''))\n\
\x20           self.send_header('X-Auth-Uri', self.headers.get('X-Original-URI', '') + ' ' + self.path)\n\
\x20       elif 'token=expired' in c:\n\
\x20           self.send_response(401)\n\
\x20           self.send_header('WWW-Authenticate', 'Bearer error=\"expired\"')\n\
\x20       elif 'token=slow' in c:\n\
\x20           time.sleep(5)\n\
\x20           self.send_response(204)\n\
\x20       else:\n\
\x20           self.send_response(500)\n\
\x20       self.send_header('Content-Length', '0')\n\
\x20       self.end_headers()\n\
\x20   def log_message(self, *a):\n\
\x20       pass\n\
s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\n\
print(s.server_address[1], flush=True)\n\
s.serve_forever()\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authurl_asks_a_real_http_service() {
    use tokio::io::AsyncBufReadExt;
    let mut service = tokio::process::Command::new("python3")
        .args(["-c", AUTH_SERVICE])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the auth service");
    let mut lines = tokio::io::BufReader::new(service.stdout.take().expect("stdout")).lines();
    let port = within(STEP, lines.next_line())
        .await
        .expect("read")
        .expect("a port line");
    let s = BinServer::start(&[
        &format!("--authurl=http://127.0.0.1:{port}/check?from=wsbridge"),
        "--authtimeout=2s",
        "sh",
        "-c",
        SHOW,
    ]);
    let ws = |cookie: &'static str, path: &'static str| {
        let url = s.url(path);
        async move {
            let mut req = url.as_str().into_client_request_for_test();
            req.headers_mut().insert("cookie", cookie.parse().expect("header"));
            req.headers_mut()
                .insert("x-forwarded-for", "6.6.6.6".parse().expect("header"));
            match within(STEP, tokio_tungstenite::connect_async(req)).await {
                Ok((mut ws, _)) => format!("OPEN {}", recv_text(&mut ws).await),
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => format!(
                    "STATUS {} {}",
                    r.status().as_u16(),
                    r.headers()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap_or("").to_owned())
                        .unwrap_or_default()
                ),
                Err(e) => format!("ERROR {e}"),
            }
        }
    };
    let got = ws("token=good", "/room?x=1").await;
    assert_eq!(
        got.split('|').map(str::to_owned).collect::<Vec<_>>()[..3],
        ["OPEN ", "carol", "carol"],
        "{got}"
    );
    // The client's own X-Forwarded-For is not believed (no --trusted-proxy).
    assert!(got.ends_with("|127.0.0.1|/room?x=1 /check?from=wsbridge"), "{got}");
    assert_eq!(ws("token=expired", "/").await, r#"STATUS 401 Bearer error="expired""#);
    // The log names the check that refused: the service, not a hook.
    s.wait_log(r#"access check refused by="--authurl" status=401"#).await;
    assert_eq!(ws("token=other", "/").await, "STATUS 503 ");
    assert_eq!(ws("token=slow", "/").await, "STATUS 503 ");
    let _ = service.kill().await;
    assert_eq!(ws("token=good", "/").await, "STATUS 503 ", "service gone");
}

trait TestRequest {
    fn into_client_request_for_test(self) -> tokio_tungstenite::tungstenite::handshake::client::Request;
}

impl TestRequest for &str {
    fn into_client_request_for_test(self) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        self.into_client_request().expect("a ws:// URL")
    }
}

#[test]
fn access_flags_that_cannot_work_are_usage_errors() {
    let (code, err) = run_to_exit(&["--authcmd=/bin/true", "--authurl=http://127.0.0.1:1/", "cat"]);
    assert_usage_error(code, &err, "--authcmd and --authurl");
    let (code, err) = run_to_exit(&["--authcmd-http", "cat"]);
    assert_usage_error(code, &err, "--authcmd-http needs");
    let (code, err) = run_to_exit(&["--authcmd=/bin/true", "--authtimeout=5 parsecs", "cat"]);
    assert_usage_error(code, &err, "--authtimeout");
    let (code, err) = run_to_exit(&["--authurl=https://auth/", "cat"]);
    assert_usage_error(code, &err, "--authurl");
    let (code, err) = run_to_exit(&["--realm=x", "cat"]);
    assert_usage_error(code, &err, "--realm");
    // Bounds with nothing to bound would be accepted and do nothing.
    let (code, err) = run_to_exit(&["--authtimeout=1s", "cat"]);
    assert_usage_error(code, &err, "--authtimeout bounds the access checks");
    let (code, err) = run_to_exit(&["--authmax=3", "cat"]);
    assert_usage_error(code, &err, "--authmax bounds the access checks");
}

/// The hook recipe of README.md ("Who may connect"), run as it is written: the holder
/// of a listed session cookie gets in as that user, anyone else (no cookie, a prefix of
/// a token, an unlisted one) gets its 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_hook_recipe_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let start = readme.find("#!/bin/sh\n# token.sh").expect("token.sh in README.md");
    let script = &readme[start..start + readme[start..].find("```").expect("end of the block")];
    let dir = TempDir::new("recipe");
    write_exec(&dir.path("token.sh"), script);
    std::fs::write(dir.path("sessions.txt"), "s3cr3t-token alice\nother-token bob\n").expect("write");
    let hook = format!("--authcmd={}", dir.path("token.sh").display());
    let s = BinServer::start(&[&hook, "sh", "-c", SHOW]);
    let with_cookie = |cookie: &'static str| {
        let url = s.url("/");
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = url.into_client_request().expect("request");
            if !cookie.is_empty() {
                req.headers_mut().insert("cookie", cookie.parse().expect("header"));
            }
            match within(STEP, tokio_tungstenite::connect_async(req)).await {
                Ok((mut ws, _)) => format!("OPEN {}", recv_text(&mut ws).await),
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => format!("STATUS {}", r.status().as_u16()),
                Err(e) => format!("ERROR {e}"),
            }
        }
    };
    let got = with_cookie("theme=dark; session=s3cr3t-token").await;
    assert!(got.starts_with("OPEN ||alice|"), "{got}");
    for cookie in [
        "",
        "session=s3cr3t",
        "session=",
        "session=nope",
        "xsession=s3cr3t-token",
    ] {
        assert_eq!(with_cookie(cookie).await, "STATUS 401", "cookie {cookie:?}");
    }
}
