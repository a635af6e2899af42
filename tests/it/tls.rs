//! `--ssl` with the real binary and certificates made by `openssl` in the test: wss with
//! our client (tokio-rustls with the test CA) and with Python's `websockets`, `HTTPS=on`,
//! ALPN, plain HTTP to the TLS port, client certificates (`--sslca`), SIGHUP reload under
//! a live session, a FIFO in place of the key (at startup and on reload), and the startup
//! errors.
#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::common::deploy::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A CA `srv` with a server certificate `server`, a CA `cli` with a client certificate
/// `client`, and a rogue CA with a client certificate `rogue`.
fn pki(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    make_ca(&dir.0, "srv");
    make_leaf(&dir.0, "srv", "server", false);
    make_ca(&dir.0, "cli");
    make_leaf(&dir.0, "cli", "client", true);
    make_ca(&dir.0, "rogue");
    make_leaf(&dir.0, "rogue", "roguecl", true);
    dir
}

fn start(dir: &TempDir, extra: &[&str]) -> Proc {
    tls_server(dir, &[extra, &REPORTER[..]].concat())
}

async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(c.expect("ca cert")).expect("add ca");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .expect("client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert");
            let key = PrivateKeyDer::from_pem_file(key).expect("client key");
            builder.with_client_auth_cert(certs, key).expect("client auth")
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// TLS handshake then WebSocket handshake; `Err` if either fails.
async fn wss(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>, String> {
    let tls = within(STEP, tls_connect(addr, ca, client))
        .await
        .map_err(|e| e.to_string())?;
    within(STEP, tokio_tungstenite::client_async("wss://localhost/", tls))
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn wss_works_with_https_on_and_http11_alpn() {
    let dir = pki("wss");
    let p = start(&dir, &[]);
    assert!(
        p.announced[0].starts_with("listening on wss://127.0.0.1:"),
        "{:?}",
        p.announced
    );
    let addr = p.tcp_addr();
    let tls = within(STEP, tls_connect(addr, &dir.path("srv-ca.pem"), None))
        .await
        .expect("tls handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]), "never h2");
    let (mut ws, _) = within(STEP, tokio_tungstenite::client_async("wss://localhost/", tls))
        .await
        .expect("websocket handshake");
    let r = report(&mut ws).await;
    assert_eq!(r[0], "127.0.0.1");
    assert_eq!(r[2], "on", "HTTPS=on for programs behind TLS: {r:?}");
    assert_eq!(r[3], "443", "SERVER_PORT defaults to 443 without a port in Host: {r:?}");
    echo(&mut ws, "secret").await;
}

#[tokio::test]
async fn python_websockets_connects_over_tls() {
    let dir = pki("py");
    let p = start(&dir, &[]);
    let url = format!("wss://127.0.0.1:{}/", p.tcp_addr().port());
    let script = "import asyncio, ssl, sys, websockets\n\
        async def main():\n\
        \x20   ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
        \x20   async with websockets.connect(sys.argv[1], ssl=ctx) as ws:\n\
        \x20       print((await ws.recv()).split('|')[2])\n\
        \x20       await ws.send('from python')\n\
        \x20       print(await ws.recv())\n\
        asyncio.run(main())\n";
    let out = within(
        STEP,
        tokio::process::Command::new("python3")
            .args(["-c", script, &url, dir.path("srv-ca.pem").to_str().expect("utf-8")])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run python3");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "on\nfrom python\n");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_cleanly() {
    let dir = pki("plain");
    let p = start(&dir, &[]);
    let addr = p.tcp_addr();
    let got = within(
        STEP,
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(STEP)).expect("timeout");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
                .expect("write");
            let mut buf = Vec::new();
            let r = s.read_to_end(&mut buf);
            (r.map_err(|e| e.kind()), buf)
        }),
    )
    .await
    .expect("task");
    let (result, bytes) = got;
    assert!(
        result.is_ok() || result == Err(std::io::ErrorKind::ConnectionReset),
        "{result:?}"
    );
    assert!(!bytes.starts_with(b"HTTP/"), "plain HTTP answered on the TLS port");
    if let Some(first) = bytes.first() {
        assert_eq!(*first, 0x15, "a TLS alert record, if anything: {bytes:?}");
    }
    // The server is unharmed, and a client that connects and says nothing does not hold
    // up others: the handshake runs in the connection's own task.
    let _silent = std::net::TcpStream::connect(addr).expect("connect");
    let mut ws = wss(addr, &dir.path("srv-ca.pem"), None).await.expect("wss");
    report(&mut ws).await;
}

#[tokio::test]
async fn client_certificates_are_required_with_sslca() {
    let dir = pki("mtls");
    let ca = format!("--sslca={}", dir.path("cli-ca.pem").display());
    let p = start(&dir, &[&ca]);
    let addr = p.tcp_addr();
    let srv_ca = dir.path("srv-ca.pem");
    let (cert, key) = (dir.path("client.pem"), dir.path("client.key"));
    let mut ws = wss(addr, &srv_ca, Some((&cert, &key)))
        .await
        .expect("a CA-signed client is accepted");
    report(&mut ws).await;
    echo(&mut ws, "mutual").await;
    let refused = wss(addr, &srv_ca, None).await;
    assert!(refused.is_err(), "a client without a certificate got through");
    let (rc, rk) = (dir.path("roguecl.pem"), dir.path("roguecl.key"));
    let refused = wss(addr, &srv_ca, Some((&rc, &rk))).await;
    assert!(refused.is_err(), "a client signed by another CA got through");
    echo(&mut ws, "still here").await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_sessions() {
    let dir = pki("reload");
    // A second server certificate from another CA, to swap in.
    make_ca(&dir.0, "srv2");
    make_leaf(&dir.0, "srv2", "server2", false);
    let p = start(&dir, &[]);
    let addr = p.tcp_addr();
    let (ca1, ca2) = (dir.path("srv-ca.pem"), dir.path("srv2-ca.pem"));
    let mut live = wss(addr, &ca1, None).await.expect("first certificate");
    report(&mut live).await;
    assert!(wss(addr, &ca2, None).await.is_err(), "CA 2 does not know certificate 1");

    std::fs::copy(dir.path("server2.pem"), dir.path("server.pem")).expect("copy cert");
    std::fs::copy(dir.path("server2.key"), dir.path("server.key")).expect("copy key");
    p.signal(nix::sys::signal::Signal::SIGHUP);
    p.wait_log("certificate reloaded").await;
    echo(&mut live, "the live session keeps working").await;
    let mut fresh = wss(addr, &ca2, None).await.expect("new connections see certificate 2");
    report(&mut fresh).await;
    assert!(wss(addr, &ca1, None).await.is_err(), "certificate 1 is gone");

    // A key that does not match: logged, the old pair stays.
    std::fs::copy(dir.path("client.key"), dir.path("server.key")).expect("copy wrong key");
    p.signal(nix::sys::signal::Signal::SIGHUP);
    p.wait_log("certificate reload failed").await;
    let mut after = wss(addr, &ca2, None).await.expect("certificate 2 still served");
    report(&mut after).await;
    echo(&mut live, "and still").await;
    echo(&mut fresh, "both").await;
}

#[tokio::test]
async fn sighup_rereads_the_client_ca_too() {
    let dir = pki("reload-ca");
    let ca_file = dir.path("trusted-ca.pem");
    std::fs::copy(dir.path("cli-ca.pem"), &ca_file).expect("copy CA");
    let ca = format!("--sslca={}", ca_file.display());
    let p = start(&dir, &[&ca]);
    let addr = p.tcp_addr();
    let srv_ca = dir.path("srv-ca.pem");
    let (cert, key) = (dir.path("client.pem"), dir.path("client.key"));
    let (rc, rk) = (dir.path("roguecl.pem"), dir.path("roguecl.key"));
    let mut live = wss(addr, &srv_ca, Some((&cert, &key))).await.expect("CA 1's client");
    report(&mut live).await;
    assert!(
        wss(addr, &srv_ca, Some((&rc, &rk))).await.is_err(),
        "CA 2's client refused"
    );

    // Trust the other CA instead: new handshakes follow, the live session stays.
    std::fs::copy(dir.path("rogue-ca.pem"), &ca_file).expect("swap CA");
    p.signal(nix::sys::signal::Signal::SIGHUP);
    p.wait_log("certificate reloaded").await;
    let mut fresh = wss(addr, &srv_ca, Some((&rc, &rk))).await.expect("CA 2's client now");
    report(&mut fresh).await;
    assert!(
        wss(addr, &srv_ca, Some((&cert, &key))).await.is_err(),
        "CA 1's client now refused"
    );
    echo(&mut live, "still connected").await;

    // A CA file that cannot be read: logged, the last good configuration stays.
    std::fs::write(&ca_file, "not a certificate").expect("break CA");
    p.signal(nix::sys::signal::Signal::SIGHUP);
    p.wait_log("certificate reload failed").await;
    let mut after = wss(addr, &srv_ca, Some((&rc, &rk))).await.expect("CA 2 still trusted");
    report(&mut after).await;
}

/// Replaces `path` by a FIFO that nothing writes to: opening it for reading the usual way
/// waits for a writer, forever.
fn fifo_in_place_of(path: &Path) {
    std::fs::remove_file(path).expect("remove the file");
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

#[tokio::test]
async fn sighup_with_a_fifo_key_keeps_serving() {
    let dir = pki("reload-fifo");
    let p = start(&dir, &[]);
    let addr = p.tcp_addr();
    let ca = dir.path("srv-ca.pem");
    let mut live = wss(addr, &ca, None).await.expect("wss before the reload");
    report(&mut live).await;

    fifo_in_place_of(&dir.path("server.key"));
    p.signal(nix::sys::signal::Signal::SIGHUP);
    p.wait_log("not a regular file").await;
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("not a regular file"))
        .expect("the line just waited for");
    assert!(
        line.contains("certificate reload failed") && line.contains("--sslkey="),
        "the failure names the reload and the key: {line}"
    );
    let mut fresh = wss(addr, &ca, None).await.expect("new TLS connections still served");
    report(&mut fresh).await;
    echo(&mut fresh, "after the refused reload").await;
    echo(&mut live, "the live session too").await;
}

#[tokio::test]
async fn a_fifo_key_is_refused_at_startup() {
    let dir = pki("start-fifo");
    fifo_in_place_of(&dir.path("server.key"));
    let cert = format!("--sslcert={}", dir.path("server.pem").display());
    let key = format!("--sslkey={}", dir.path("server.key").display());
    let mut cmd = tokio::process::Command::from(Proc::command());
    cmd.args(["--port=0", "--address=127.0.0.1", "--ssl", &cert, &key, "cat"])
        .kill_on_drop(true);
    let out = within(STEP, cmd.output()).await.expect("run wsbridge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--sslkey=") && err.contains("not a regular file"),
        "names the key and why: {err}"
    );
}

#[test]
fn tls_file_errors_are_one_line_exit_1_and_flag_errors_usage_errors() {
    for args in [
        vec![
            "--ssl",
            "--sslcert=/nonexistent.pem",
            "--sslkey=/nonexistent.key",
            "cat",
        ],
        vec!["--ssl", "--sslcert=Cargo.toml", "--sslkey=Cargo.toml", "cat"],
    ] {
        let (code, err) = run_to_exit(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("wsbridge: "), "{err}");
    }
    // Flags that need each other are usage errors instead, as clap would report them.
    for (args, needle) in [
        (&["--ssl", "cat"][..], "--ssl needs both"),
        (&["--ssl", "--sslcert=/nonexistent.pem", "cat"], "--ssl needs both"),
        (&["--sslcert=a.pem", "--sslkey=b.pem", "cat"], "need --ssl"),
        (&["--sslca=a.pem", "cat"], "need --ssl"),
    ] {
        let (code, err) = run_to_exit(args);
        crate::common::assert_usage_error(code, &err, needle);
    }
    let (_, err) = run_to_exit(&[
        "--ssl",
        "--sslcert=/nonexistent.pem",
        "--sslkey=/nonexistent.key",
        "cat",
    ]);
    assert!(err.contains("/nonexistent.pem"), "names the file: {err}");
}

#[test]
fn ssl_makes_the_default_port_443() {
    let cli = wsbridge::cli::Cli::try_parse_args(
        ["wsbridge", "--ssl", "--sslcert=a", "--sslkey=b", "cat"].map(std::ffi::OsString::from),
    )
    .expect("parses");
    use wsbridge::config::Mode;
    let port = |cli| match wsbridge::Config::try_from(cli).expect("config").mode {
        Mode::Serve(s) => s.port,
        other => panic!("not serving: {other:?}"),
    };
    assert_eq!(port(cli), 443);
    let cli = wsbridge::cli::Cli::try_parse_args(["wsbridge", "cat"].map(std::ffi::OsString::from)).expect("parses");
    assert_eq!(port(cli), 80);
}

#[tokio::test]
async fn redirport_points_plain_http_at_https() {
    let dir = pki("redir");
    let (p, redir) = (0..5)
        .find_map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let arg = format!("--redirport={port}");
            let cert = format!("--sslcert={}", dir.path("server.pem").display());
            let key = format!("--sslkey={}", dir.path("server.key").display());
            let mut c = Proc::command();
            c.args(["--port=0", "--address=127.0.0.1", "--ssl", &cert, &key, &arg, "cat"]);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Proc::spawn(c, 2)))
                .ok()
                .map(|p| (p, port))
        })
        .expect("wsbridge with --redirport started");
    let main = p.tcp_addr();
    assert!(p.announced[0].starts_with("listening on wss://"), "{:?}", p.announced);
    let resp = within(
        STEP,
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", redir)).expect("connect");
            s.set_read_timeout(Some(STEP)).expect("timeout");
            s.write_all(b"GET /x?y=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        }),
    )
    .await
    .expect("task");
    assert!(resp.starts_with("HTTP/1.1 301"), "{resp}");
    let want = format!("location: https://localhost:{}/x?y=1", main.port());
    assert!(resp.to_ascii_lowercase().contains(&want), "{resp}");
}
