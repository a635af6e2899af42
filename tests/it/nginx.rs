//! A real nginx in front of the real binary, with the configuration the README shows
//! (read from README.md, so the documented text is the tested one): upgrades over TCP
//! and over a Unix socket, the real client address through `--trusted-proxy`, idle
//! sessions kept alive through `proxy_read_timeout` by `--pingms`, and two instances
//! behind one upstream, one of them draining on SIGTERM.
//!
//! Skipped (with a note) when `nginx` is not installed; `tools/test.sh` installs it.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::deploy::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const NGINX_MARK: &str = "<!-- nginx.conf: tested by tests/it/nginx.rs -->";

/// The `nginx` block from README.md.
fn readme_site() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let after = &readme[readme.find(NGINX_MARK).expect("nginx block marker in README.md") + NGINX_MARK.len()..];
    let body = after
        .trim_start()
        .strip_prefix("```nginx\n")
        .expect("```nginx fence after the marker");
    body[..body.find("```").expect("closing fence")].to_owned()
}

pub fn nginx_path() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// nginx running in the foreground from a generated prefix directory. Stopped on drop.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx with the README site, `upstream` holding `servers`, and
    /// `proxy_read_timeout` set to `read_timeout`. nginx cannot listen on port 0, so a
    /// port that was just free is tried, and another if that one was taken meanwhile.
    fn start(bin: &Path, servers: &[String], read_timeout: &str) -> Nginx {
        Self::start_as(bin, servers, read_timeout, "root")
    }

    /// [`Nginx::start`] with its worker running as `user` (when the test runs as root).
    fn start_as(bin: &Path, servers: &[String], read_timeout: &str, user: &str) -> Nginx {
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            if let Some(n) = Self::try_start(bin, port, servers, read_timeout, user) {
                return n;
            }
        }
        panic!("nginx did not start on any of 5 ports");
    }

    fn try_start(bin: &Path, port: u16, servers: &[String], read_timeout: &str, user: &str) -> Option<Nginx> {
        let site = readme_site();
        let upstream: String = servers.iter().map(|s| format!("    server {s};\n")).collect();
        let site = replace_once(&site, "    server 127.0.0.1:8080;\n", &upstream);
        let site = replace_once(
            &site,
            "proxy_read_timeout 3600s;",
            &format!("proxy_read_timeout {read_timeout};"),
        );
        Self::try_start_site(bin, port, &site, user)
    }

    /// nginx with `site` (an `http` block's contents whose server has `listen 80;`), on a
    /// port that was just free; for other READMEs' recipes (tests/it/broker).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub fn start_site(bin: &Path, site: &str) -> Nginx {
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            if let Some(n) = Self::try_start_site(bin, port, site, "root") {
                return n;
            }
        }
        panic!("nginx did not start on any of 5 ports");
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn try_start_site(bin: &Path, port: u16, site: &str, user: &str) -> Option<Nginx> {
        let dir = TempDir::new("nginx");
        let site = replace_once(site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        let d = dir.0.display();
        let conf = format!(
            "user {user};\nworker_processes 1;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log off;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             {site}\n}}\n"
        );
        std::fs::write(dir.path("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .args([
                "-e",
                &format!("{d}/error.log"),
                "-p",
                &format!("{d}/"),
                "-c",
                &format!("{d}/nginx.conf"),
            ])
            .args(["-g", &format!("daemon off; pid {d}/nginx.pid;")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so its workers can be found and stopped with it.
            .process_group(0)
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        // Ready once the master starts its worker: it opens every listening socket
        // first, so that line proves this nginx holds the port. A successful connect
        // would not: while a port just handed out is taken by another test's nginx,
        // this one retries bind() for seconds, and the connect reaches the other one.
        // Gone if it could not bind at all.
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = n.child.try_wait() {
                return None;
            }
            if n.error_log().contains("start worker process") {
                return Some(n);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not start within {STEP:?}; error log:\n{}", n.error_log());
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM lets the master stop and reap its workers; if it has not exited within a
    /// few seconds, the whole process group is killed. Either way no worker is left behind.
    fn drop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Workers that outlived the master (they should not) go with the group.
                let _ = killpg(pid, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

pub fn replace_once(s: &str, from: &str, to: &str) -> String {
    assert_eq!(
        s.matches(from).count(),
        1,
        "{from:?} must appear once in the README nginx block"
    );
    s.replacen(from, to, 1)
}

macro_rules! need_nginx {
    () => {
        match nginx_path() {
            Some(p) => p,
            None => {
                eprintln!("nginx is not installed; skipping (tools/test.sh installs it)");
                return;
            }
        }
    };
}

/// A WebSocket to nginx from 127.0.0.2, so the real client differs from the proxy.
async fn client_via(
    nginx: &Nginx,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let tcp = within(STEP, socket.connect(nginx.addr)).await.expect("connect nginx");
    let mut req = format!("ws://{}/", nginx.addr).into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    match within(STEP, tokio_tungstenite::client_async(req, tcp)).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!(
            "websocket handshake through nginx: {e}; nginx log:\n{}",
            nginx.error_log()
        ),
    }
}

fn wsbridge_tcp(extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut args = vec!["--port=0", "--address=127.0.0.1"];
    args.extend(extra);
    args.extend(REPORTER);
    Proc::start(&args, env, 1)
}

#[tokio::test]
async fn nginx_over_tcp_passes_upgrades_and_the_real_client() {
    let bin = need_nginx!();
    let ws = wsbridge_tcp(&["--trusted-proxy=127.0.0.1/32"], &[]);
    let nginx = Nginx::start(&bin, &[ws.tcp_addr().to_string()], "60s");
    // A client-written X-Forwarded-For stays to the left of what nginx appends; its own
    // Forwarded and X-Forwarded-Proto are not believed either.
    let spoof = [
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.7;proto=https"),
        ("x-forwarded-proto", "https"),
    ];
    let mut c = client_via(&nginx, &spoof).await;
    let r = report(&mut c).await;
    assert_eq!(
        r[..3],
        ["127.0.0.2", "", "off"],
        "{r:?}; nginx log:\n{}",
        nginx.error_log()
    );
    assert_eq!(r[3], nginx.addr.port().to_string(), "Host (with port) is kept");
    echo(&mut c, "through nginx").await;
}

#[tokio::test]
async fn nginx_over_a_unix_socket() {
    let bin = need_nginx!();
    let dir = TempDir::new("nginx-unix");
    let sock = dir.path("wsbridge.sock");
    let arg = format!("--unixsocket={}", sock.display());
    let mut args = vec![arg.as_str(), "--trusted-proxy=unix"];
    args.extend(REPORTER);
    let _ws = Proc::start(&args, &[], 1);
    let nginx = Nginx::start(&bin, &[format!("unix:{}", sock.display())], "60s");
    let mut c = client_via(&nginx, &[]).await;
    let r = report(&mut c).await;
    assert_eq!(
        r[..3],
        ["127.0.0.2", "", "off"],
        "{r:?}; nginx log:\n{}",
        nginx.error_log()
    );
    echo(&mut c, "through nginx and a unix socket").await;
}

/// nginx's worker as an unprivileged user (www-data, else nobody) reaches wsbridge's
/// socket through `--unixsocket-mode=0660 --unixsocket-group`; without them the file
/// keeps the umask's mode and root as its group, and the worker is refused (502).
#[tokio::test]
async fn nginx_as_an_unprivileged_user_over_a_unix_socket_with_its_mode_and_group() {
    let bin = need_nginx!();
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: nginx cannot switch its worker to another user; skipping");
        return;
    }
    let Some((user, group)) = [("www-data", "www-data"), ("nobody", "nogroup")]
        .into_iter()
        .find(|(u, _)| nix::unistd::User::from_name(u).ok().flatten().is_some())
    else {
        eprintln!("no www-data or nobody user; skipping");
        return;
    };
    let dir = TempDir::new("nginx-unix-user");
    let sock = dir.path("wsbridge.sock");
    let arg = format!("--unixsocket={}", sock.display());
    let group_arg = format!("--unixsocket-group={group}");
    let mut args = vec![
        arg.as_str(),
        "--trusted-proxy=unix",
        "--unixsocket-mode=0660",
        &group_arg,
    ];
    args.extend(REPORTER);
    let ws = Proc::start(&args, &[], 1);
    let meta = std::fs::metadata(&sock).expect("socket file");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let gid = nix::unistd::Group::from_name(group)
        .expect("group")
        .expect("group exists")
        .gid;
    assert_eq!(meta.gid(), gid.as_raw());
    let nginx = Nginx::start_as(
        &bin,
        &[format!("unix:{}", sock.display())],
        "60s",
        &format!("{user} {group}"),
    );
    let mut c = client_via(&nginx, &[]).await;
    let r = report(&mut c).await;
    assert_eq!(
        r[..3],
        ["127.0.0.2", "", "off"],
        "{r:?}; nginx log:\n{}",
        nginx.error_log()
    );
    echo(&mut c, "through nginx as an unprivileged worker").await;
    drop((c, nginx, ws));

    // The default stays as it was: the worker cannot connect.
    let dir = TempDir::new("nginx-unix-default");
    let sock = dir.path("wsbridge.sock");
    let arg = format!("--unixsocket={}", sock.display());
    let mut args = vec![arg.as_str()];
    args.extend(REPORTER);
    let _ws = Proc::start(&args, &[], 1);
    let nginx = Nginx::start_as(
        &bin,
        &[format!("unix:{}", sock.display())],
        "60s",
        &format!("{user} {group}"),
    );
    let answer = crate::common::rawhttp::get(nginx.addr, "/").await;
    assert_eq!(answer.status, 502, "{}", nginx.error_log());
    assert!(nginx.error_log().contains("Permission denied"), "{}", nginx.error_log());
}

/// Reads (answering pings) for `d`; returns how the stream ended, if it did.
async fn idle_for(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, d: Duration) -> Option<String> {
    let until = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return Some("stream ended".into()),
            Ok(Some(Err(e))) => return Some(format!("error: {e}")),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(format!("message: {m:?}")),
        }
    }
}

#[tokio::test]
async fn pings_keep_idle_sessions_open_through_proxy_read_timeout() {
    let bin = need_nginx!();
    let pinged = wsbridge_tcp(&["--trusted-proxy=127.0.0.1", "--pingms=300"], &[]);
    let silent = wsbridge_tcp(&["--trusted-proxy=127.0.0.1"], &[]);
    let with_pings = Nginx::start(&bin, &[pinged.tcp_addr().to_string()], "1s");
    let without = Nginx::start(&bin, &[silent.tcp_addr().to_string()], "1s");
    let mut a = client_via(&with_pings, &[]).await;
    let mut b = client_via(&without, &[]).await;
    report(&mut a).await;
    report(&mut b).await;
    let (ended_a, ended_b) = tokio::join!(
        idle_for(&mut a, Duration::from_millis(2500)),
        idle_for(&mut b, Duration::from_millis(2500))
    );
    assert_eq!(ended_a, None, "a pinged session was cut");
    echo(&mut a, "still here after 2.5 s idle").await;
    assert!(
        ended_b.is_some(),
        "control: without pings nginx should cut the idle session"
    );
}

#[tokio::test]
async fn two_instances_share_the_load_and_one_drains_on_sigterm() {
    let bin = need_nginx!();
    let mut first = wsbridge_tcp(
        &["--trusted-proxy=127.0.0.1", "--passenv=PATH,INSTANCE"],
        &[("INSTANCE", "a")],
    );
    let second = wsbridge_tcp(
        &["--trusted-proxy=127.0.0.1", "--passenv=PATH,INSTANCE"],
        &[("INSTANCE", "b")],
    );
    let nginx = Nginx::start(
        &bin,
        &[first.tcp_addr().to_string(), second.tcp_addr().to_string()],
        "60s",
    );
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..6 {
        let mut c = client_via(&nginx, &[]).await;
        let r = report(&mut c).await;
        match r[4].as_str() {
            "a" => on_a.push(c),
            "b" => on_b.push(c),
            other => panic!("unknown instance {other:?}"),
        }
    }
    assert!(!on_a.is_empty() && !on_b.is_empty(), "round robin uses both instances");

    first.signal(nix::sys::signal::Signal::SIGTERM);
    for c in &mut on_a {
        let code = loop {
            match within(STEP, c.next()).await {
                Some(Ok(Message::Close(f))) => break f.map(|f| f.code),
                Some(Ok(_)) => continue,
                other => panic!("expected Close 1001, got {other:?}"),
            }
        };
        assert_eq!(code, Some(CloseCode::Away), "draining sessions get 1001");
    }
    assert!(first.wait_exit(STEP).await.success(), "{}", first.log());
    for _ in 0..4 {
        let mut c = client_via(&nginx, &[]).await;
        assert_eq!(
            report(&mut c).await[4],
            "b",
            "new sessions go to the remaining instance"
        );
        echo(&mut c, "served by b").await;
    }
    for c in &mut on_b {
        echo(c, "b sessions untouched").await;
    }
}
