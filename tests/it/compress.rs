#![cfg(feature = "compress")]
//! permessage-deflate (`--compress`, RFC 7692) with real peers: Python `websockets` as the
//! client (text, binary, TLS, pty, `--passstderr`, `--shared`) and as the server of
//! `--connect`; raw frames for what no polite client sends (a compression bomb, RSV1 where
//! it is not allowed, a stream that does not inflate) and offers that must be declined.

use std::process::Stdio;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::deploy::{make_ca, make_leaf, tls_server, TempDir};
use crate::common::*;

/// Runs tests/compress_client.py against `url` with a JSON spec; panics with its output
/// (and the server's log) unless it succeeded.
async fn python_client(url: &str, spec: serde_json::Value, log: impl Fn() -> String) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compress_client.py");
    let run = tokio::process::Command::new("python3")
        .args([script, url, &spec.to_string()])
        .kill_on_drop(true)
        .output();
    let out = within(STEP * 2, run).await.expect("run python client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_negotiates_and_round_trips_text_and_binary() {
    let json = r#"{"sensor":"t1","value":21.5,"unit":"C","ok":true}"#.repeat(30);
    let msgs = ["hi", "a message long enough to be compressed", json.as_str(), ""];
    let text = BinServer::start(&["--compress", "cat"]);
    let out = python_client(
        &text.url("/"),
        serde_json::json!({"send": msgs, "expect": msgs}),
        || text.log(),
    )
    .await;
    assert_eq!(out.trim(), "ok permessage-deflate");
    let binary = BinServer::start(&["--compress", "--framing=lenprefix", "cat"]);
    python_client(
        &binary.url("/"),
        serde_json::json!({"send": msgs, "expect": msgs, "binary": true}),
        || binary.log(),
    )
    .await;
    // The operator's limits show in the answer.
    let small = BinServer::start(&[
        "--compress",
        "--compress-window-bits=10",
        "--compress-no-context-takeover",
        "cat",
    ]);
    let out = python_client(
        &small.url("/"),
        serde_json::json!({"send": [json], "expect": [json]}),
        || small.log(),
    )
    .await;
    assert_eq!(
        out.trim(),
        "ok permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_works_with_tls_pty_passstderr_and_shared() {
    let dir = TempDir::new("compress-tls");
    make_ca(&dir.0, "ca");
    make_leaf(&dir.0, "ca", "server", false);
    let tls = tls_server(&dir, &["--compress", "cat"]);
    let url = format!("wss://localhost:{}/", tls.tcp_addr().port());
    let long = "over TLS, compressed, ".repeat(20);
    python_client(&url, serde_json::json!({"send": [&long], "expect": [&long]}), || {
        tls.log()
    })
    .await;

    let pty = BinServer::start(&["--compress", "--pty", "cat"]);
    python_client(
        &pty.url("/"),
        serde_json::json!({"send": [&long], "expect": [&long]}),
        || pty.log(),
    )
    .await;

    let stderr = BinServer::start(&[
        "--compress",
        "--passstderr",
        "sh",
        "-c",
        "echo 'to stdout, long enough to compress'; echo 'to stderr, long enough to compress' >&2; sleep 5",
    ]);
    python_client(
        &stderr.url("/"),
        serde_json::json!({"send": [], "expect": [
            r#"{"stream":"stdout","data":"to stdout, long enough to compress"}"#,
            r#"{"stream":"stderr","data":"to stderr, long enough to compress"}"#,
        ]}),
        || stderr.log(),
    )
    .await;

    let shared = BinServer::start(&["--compress", "--shared", "cat"]);
    python_client(
        &shared.url("/"),
        serde_json::json!({"send": [&long], "expect": [&long]}),
        || shared.log(),
    )
    .await;
}

/// A raw upgrade offering `offer`; returns the stream and the answer head.
async fn upgrade_offering(addr: std::net::SocketAddr, offer: &str) -> (TcpStream, String) {
    let mut tcp = within(STEP, TcpStream::connect(addr)).await.expect("connect");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {offer}\r\n\r\n"
    );
    within(STEP, tcp.write_all(req.as_bytes())).await.expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (tcp, head)
}

fn extension_answer(head: &str) -> Option<&str> {
    head.lines()
        .find_map(|l| l.strip_prefix("sec-websocket-extensions: "))
        .map(str::trim)
}

/// A masked client frame.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x21, 0x43, 0x65, 0x87];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// `data` as one permessage-deflate payload (sync flush, tail removed).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut z = Vec::with_capacity(data.len() / 100 + 1024);
    while c.total_in() < data.len() as u64 || z.len() == z.capacity() {
        z.reserve(64 * 1024);
        let used = c.total_in() as usize;
        c.compress_vec(&data[used..], &mut z, FlushCompress::Sync)
            .expect("deflate");
    }
    assert!(z.ends_with(&[0, 0, 0xff, 0xff]));
    z.truncate(z.len() - 4);
    z
}

/// The server's Close code after `bytes`, with `--compress` negotiated.
async fn close_code_after(server: &std::net::SocketAddr, bytes: &[u8]) -> Option<u16> {
    let (mut tcp, head) = upgrade_offering(*server, "permessage-deflate").await;
    assert_eq!(extension_answer(&head), Some("permessage-deflate"), "{head}");
    within(STEP, tcp.write_all(bytes)).await.expect("write");
    while let Some((b0, payload)) = read_raw_frame(&mut tcp).await {
        if b0 & 0x0f == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_compresses_its_answer_and_inflates_fragments() {
    let server = TestServer::start(&["--compress", "--framing=binary", "cat"]).await;
    let (mut tcp, _) = upgrade_offering(server.addr, "permessage-deflate; client_max_window_bits").await;
    let msg = b"{\"temperature\": 21.5, \"humidity\": 40}\n".repeat(50);
    let z = deflate(&msg);
    let (a, b) = z.split_at(z.len() / 2);
    let mut bytes = frame(0x42, a); // RSV1, binary, not final
    bytes.extend(frame(0x80, b)); // FIN, continuation
    within(STEP, tcp.write_all(&bytes)).await.expect("write");
    let mut got = Vec::new();
    let mut inflate = Decompress::new(false);
    while got.len() < msg.len() {
        let (b0, mut payload) = read_raw_frame(&mut tcp).await.expect("an echo");
        assert_eq!(b0 & 0x40, 0x40, "the echo is compressed (RSV1)");
        assert!(
            payload.len() * 3 < msg.len(),
            "{} bytes for {}",
            payload.len(),
            msg.len()
        );
        payload.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(msg.len() * 2);
        inflate
            .decompress_vec(&payload, &mut out, FlushDecompress::Sync)
            .expect("inflate");
        got.extend(out);
    }
    assert_eq!(got, msg);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compression_bomb_closes_1009_without_inflating_it() {
    // 512 MiB of zeros in about 500 KiB, against a 1 MiB --maxframesize: one MiB
    // compressed, then a second one (which only refers back to zeros) repeated.
    let mut c = Compress::new(Compression::best(), false);
    let zeros = vec![0u8; 1 << 20];
    let mut bomb = Vec::with_capacity(1 << 20);
    c.compress_vec(&zeros, &mut bomb, FlushCompress::Sync).expect("deflate");
    let mut again = Vec::with_capacity(64 << 10);
    c.compress_vec(&zeros, &mut again, FlushCompress::Sync)
        .expect("deflate");
    for _ in 1..512 {
        bomb.extend_from_slice(&again);
    }
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let server = BinServer::start(&["--compress", "--framing=binary", "cat"]);
    let before = status_kib(server.pid(), "VmRSS");
    let code = close_code_after(&server.addr, &frame(0xc2, &bomb)).await;
    assert_eq!(code, Some(1009), "{}", server.log());
    let peak = status_kib(server.pid(), "VmHWM");
    assert!(peak < before + 32 * 1024, "peak RSS {peak} KiB (before: {before} KiB)");
    assert!(
        server
            .log()
            .contains("compressed message inflates past --maxframesize 1048576"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rsv1_is_1002_and_a_stream_that_does_not_inflate_is_1007() {
    let server = TestServer::start(&["--compress", "cat"]).await;
    // RSV1 on a Ping.
    assert_eq!(close_code_after(&server.addr, &frame(0xc9, b"x")).await, Some(1002));
    // RSV1 on a continuation frame.
    let mut bytes = frame(0x01, b"plain start");
    bytes.extend(frame(0xc0, b"x"));
    assert_eq!(close_code_after(&server.addr, &bytes).await, Some(1002));
    // Not DEFLATE (an invalid block type).
    assert_eq!(
        close_code_after(&server.addr, &frame(0xc1, &[0xff; 16])).await,
        Some(1007)
    );
    // Compressed, but not UTF-8 in a text message.
    assert_eq!(
        close_code_after(&server.addr, &frame(0xc1, &deflate(&[0xc3, 0x28]))).await,
        Some(1007)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_that_cannot_be_honoured_are_declined() {
    let server = TestServer::start(&["--compress", "cat"]).await;
    for offer in [
        "permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "x-webkit-deflate-frame",
    ] {
        let (mut tcp, head) = upgrade_offering(server.addr, offer).await;
        assert_eq!(extension_answer(&head), None, "{offer}: {head}");
        // The connection goes on uncompressed.
        within(STEP, tcp.write_all(&frame(0x81, b"plain")))
            .await
            .expect("write");
        assert_eq!(
            read_raw_frame(&mut tcp).await,
            Some((0x81, b"plain".to_vec())),
            "{offer}"
        );
    }
    // The second offer is taken when the first cannot be.
    let (_, head) = upgrade_offering(
        server.addr,
        "permessage-deflate; foo, permessage-deflate; server_max_window_bits=10",
    )
    .await;
    assert_eq!(
        extension_answer(&head),
        Some("permessage-deflate; server_max_window_bits=10"),
        "{head}"
    );
    server.stop().await;
    // Without --compress every offer is declined.
    let plain = TestServer::start(&["cat"]).await;
    let (_, head) = upgrade_offering(plain.addr, "permessage-deflate").await;
    assert_eq!(extension_answer(&head), None, "{head}");
    plain.stop().await;
}

/// Python `websockets` serving an echo with compression on a free port: the port, and
/// the lines it prints about each handshake.
struct PythonServer {
    port: u16,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    _child: tokio::process::Child,
}

impl PythonServer {
    async fn start() -> Self {
        let script = r#"
import asyncio, sys, websockets
async def echo(ws):
    print("offer:", ws.request.headers.get("Sec-WebSocket-Extensions"), flush=True)
    print("answer:", ws.response.headers.get("Sec-WebSocket-Extensions"), flush=True)
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = within(STEP, lines.next_line())
            .await
            .expect("port line")
            .expect("a port");
        PythonServer {
            port: port.trim().parse().expect("a port number"),
            lines,
            _child: child,
        }
    }
}

/// Runs the binary as a `--connect` client with `input` on stdin.
async fn connect_client(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsbridge"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().expect("stdin");
    within(STEP, stdin.write_all(input)).await.expect("write stdin");
    drop(stdin);
    within(STEP * 2, child.wait_with_output()).await.expect("client output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_compresses_with_a_python_websockets_server() {
    let mut server = PythonServer::start().await;
    let url = format!("--connect=ws://127.0.0.1:{}/", server.port);
    let long = "a line long enough to be worth compressing, ".repeat(10);
    let input = format!("hello\n{long}\n");
    let out = connect_client(&[&url, "--compress"], input.as_bytes()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), input, "{stderr}");
    let offer = within(STEP, server.lines.next_line())
        .await
        .expect("line")
        .expect("offer");
    let answer = within(STEP, server.lines.next_line())
        .await
        .expect("line")
        .expect("answer");
    assert_eq!(offer, "offer: permessage-deflate; client_max_window_bits");
    assert!(answer.starts_with("answer: permessage-deflate"), "{answer}");
}

/// A server that answers every upgrade with a 101 carrying `extensions`.
async fn answering_server(extensions: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if sock.read_exact(&mut b).await.is_err() {
                    break;
                }
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let key = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key"))
                })
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default();
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"
            );
            let _ = sock.write_all(answer.as_bytes()).await;
            tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_an_answer_it_cannot_use() {
    for (answer, with_compress, needle) in [
        ("permessage-deflate; foo", true, "is unusable: unknown parameter foo"),
        ("permessage-deflate; client_max_window_bits=8", true, "8-bit window"),
        ("x-unknown", true, "were not offered"),
        ("permessage-deflate", false, "were not offered"),
    ] {
        let addr = answering_server(answer).await;
        let url = format!("--connect=ws://{addr}/");
        let mut args = vec![url.as_str()];
        if with_compress {
            args.push("--compress");
        }
        let out = connect_client(&args, b"").await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{answer}: {stderr}");
        assert!(stderr.contains(needle), "{answer}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// Runs tests/shared_compress_clients.py: the clients' answers, one per line.
pub(crate) async fn python_shared_clients(url: &str, spec: serde_json::Value, log: impl Fn() -> String) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/shared_compress_clients.py");
    let run = tokio::process::Command::new("python3")
        .args([script, url, &spec.to_string()])
        .kill_on_drop(true)
        .output();
    let out = within(STEP * 2, run).await.expect("run python clients");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python clients failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    stdout.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_clients_get_one_stream_and_no_server_context_takeover() {
    let json = r#"{"id":7,"sensor":"temp-3","value":21.37,"unit":"C","ok":true}"#.repeat(20);
    let msgs = [
        "tiny",
        json.as_str(),
        "a message long enough to be compressed",
        json.as_str(),
        "",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!?",
    ];
    let clients = ["default", "10", "off", "default"];
    for framing in ["line", "lenprefix"] {
        let server = BinServer::start(&["--compress", "--shared", &format!("--framing={framing}"), "cat"]);
        let spec = serde_json::json!({"clients": clients, "send": msgs, "binary": framing == "lenprefix"});
        let answers = python_shared_clients(&server.url("/"), spec, || server.log()).await;
        assert_eq!(
            answers,
            [
                "permessage-deflate; server_no_context_takeover",
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
                "-",
                "permessage-deflate; server_no_context_takeover",
            ],
            "{framing}"
        );
    }
    // The operator's smaller window is the hub's: a client asking for it shares it.
    let small = BinServer::start(&["--compress", "--compress-window-bits=10", "--shared", "cat"]);
    let spec = serde_json::json!({"clients": ["10", "default", "12"], "send": msgs});
    let answers = python_shared_clients(&small.url("/"), spec, || small.log()).await;
    assert_eq!(answers.len(), 3);
    assert!(
        answers.iter().all(|a| a.contains("server_no_context_takeover")),
        "{answers:?}"
    );
}

/// `data` inflated with a fresh window, as a message sent without context takeover must.
fn inflate_alone(z: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = z.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(64 * 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("inflates on its own");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_clients_are_sent_the_same_compressed_bytes_each_standing_alone() {
    let server = BinServer::start(&["--compress", "--shared", "cat"]);
    let addr = server.tcp_addr();
    let (mut a, head_a) = upgrade_offering(addr, "permessage-deflate; client_max_window_bits").await;
    let (mut b, head_b) = upgrade_offering(addr, "permessage-deflate").await;
    for head in [&head_a, &head_b] {
        assert_eq!(
            extension_answer(head),
            Some("permessage-deflate; server_no_context_takeover"),
            "{head}"
        );
    }
    // The same line twice: with context takeover the second would refer to the first.
    let line = r#"{"id":1,"sensor":"temp-1","value":20.5,"unit":"C","ok":true}"#.repeat(4);
    let payload = deflate(format!("{line}\n{line}\n").as_bytes());
    within(STEP, a.write_all(&frame(0xc1, &payload))).await.expect("write");
    for _ in 0..2 {
        let (fa, pa) = read_raw_frame(&mut a).await.expect("a frame");
        let (fb, pb) = read_raw_frame(&mut b).await.expect("b frame");
        assert_eq!((fa, fb), (0xc1, 0xc1), "text, FIN and RSV1");
        assert_eq!(pa, pb, "the same bytes for both clients");
        assert_eq!(inflate_alone(&pa), line.as_bytes());
    }
}
