//! # Fan-out: one program's output to many clients, locally and through NATS
//!
//! Messages delivered per second to `--clients` WebSocket clients (default 1000), and the
//! server CPU per delivered message, in three setups, each started fresh per run on
//! 127.0.0.1:
//!
//! - `floor`: an in-process broadcast to the same sockets: this binary re-run as a minimal
//!   server (`FANOUT_FLOOR=1`, tokio-tungstenite, one task per socket fed from a
//!   `tokio::sync::broadcast` of the messages); what any WebSocket server must spend.
//! - `local`: `target/release/wsbridge --shared` with every client.
//! - `nats`: a `nats-server`, a producer (`--shared --broker`) and an edge (`--broker`),
//!   half the clients on each; the server CPU is both wsbridges' (the nats-server's whole
//!   run, in ms, is shown beside it: it carries each message once per edge, not per
//!   client).
//!
//! The program prints `seq 1 N` (`--messages`, default 2000) when a client sends `N`; each
//! client counts the text frames it receives (a raw-frame reader, so the client's cost
//! stays small) until it has N. Delivered = clients × N. Time runs from the trigger to
//! the last client's last message; CPU is `/proc/PID/stat` user + system over the same
//! span. Everything is bounded: 60 s per run, `--runs` runs (default 3), median shown.
//!
//! Run: `cargo build --release && cargo bench --bench fanout -- [--clients N]
//! [--messages N] [--runs N]` (nats-server on PATH for the `nats` setup; skipped without).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const RUN_LIMIT: Duration = Duration::from_secs(60);
const PROGRAM: &str = "while read n; do seq 1 \"$n\"; done";

fn main() {
    if std::env::var_os("FANOUT_FLOOR").is_some() {
        return floor_server();
    }
    let mut clients = 1000usize;
    let mut messages = 2000usize;
    let mut runs = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--clients" => clients = num("--clients"),
            "--messages" => messages = num("--messages"),
            "--runs" => runs = num("--runs"),
            _ => {} // cargo bench passes --bench
        }
    }
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/wsbridge");
    assert!(
        std::path::Path::new(bin).exists(),
        "build it first: cargo build --release"
    );
    let has_nats = Command::new("nats-server").arg("--version").output().is_ok();
    println!("fan-out: {clients} clients, {messages} messages each, {runs} runs (median [min - max])");
    println!(
        "{:<8} {:>14} {:>22} {:>20}",
        "setup", "deliveries/s", "server CPU us/delivery", "nats-server CPU ms"
    );
    for setup in ["floor", "local", "nats"] {
        if setup == "nats" && !has_nats {
            println!("nats     skipped: nats-server is not installed");
            continue;
        }
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        let mut broker_cpus = Vec::new();
        for _ in 0..runs {
            let r = run(setup, bin, clients, messages);
            rates.push(r.rate);
            cpus.push(r.cpu_us);
            broker_cpus.push(r.broker_cpu_ms);
        }
        let broker = match setup {
            "nats" => summary(&mut broker_cpus, 0),
            _ => "-".into(),
        };
        println!(
            "{setup:<8} {:>14} {:>22} {:>20}",
            summary(&mut rates, 0),
            summary(&mut cpus, 3),
            broker
        );
    }
}

fn summary(v: &mut [f64], digits: usize) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    let med = v[v.len() / 2];
    format!("{med:.digits$} [{:.digits$}-{:.digits$}]", v[0], v[v.len() - 1])
}

struct RunResult {
    rate: f64,
    cpu_us: f64,
    broker_cpu_ms: f64,
}

/// A server process whose stderr is read for its startup lines.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let (tx, rx) = mpsc::channel();
        for out in [
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().expect("stdout")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }
        Server { child, lines: rx }
    }

    /// Reads lines until one contains `needle`; returns it.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no {needle:?} from the server");
    }

    /// The address of a `listening on ws://ADDR/` line.
    fn ws_addr(&self) -> SocketAddr {
        let line = self.wait_for("listening on ws://");
        let rest = line.split("ws://").nth(1).expect("address");
        rest.trim_end_matches('/').parse().expect("socket address")
    }

    fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system time of `pid` (all threads), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after `) `.
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

fn wsbridge(bin: &str, args: &[&str]) -> Server {
    let mut c = Command::new(bin);
    c.args([
        "--port=0",
        "--address=127.0.0.1",
        "--loglevel=info",
        "--sharedqueue=67108864",
    ])
    .args(args);
    Server::spawn(c)
}

fn run(setup: &str, bin: &str, clients: usize, messages: usize) -> RunResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut _nats = None;
    let mut servers = Vec::new();
    let mut targets = Vec::new();
    match setup {
        "floor" => {
            let mut c = Command::new(std::env::current_exe().expect("exe"));
            c.env("FANOUT_FLOOR", "1");
            let s = Server::spawn(c);
            targets.push((s.ws_addr(), clients));
            servers.push(s);
        }
        "local" => {
            let s = wsbridge(bin, &["--shared", "sh", "-c", PROGRAM]);
            targets.push((s.ws_addr(), clients));
            servers.push(s);
        }
        _ => {
            let mut c = Command::new("nats-server");
            c.args(["-a", "127.0.0.1", "-p", "-1"]);
            let n = Server::spawn(c);
            let line = n.wait_for("Listening for client connections on ");
            let port = line.rsplit(':').next().expect("port").trim().to_owned();
            let url = format!("--broker=nats://127.0.0.1:{port}");
            let p = wsbridge(bin, &["--shared", &url, "--topic=bench", "sh", "-c", PROGRAM]);
            let e = wsbridge(bin, &[&url, "--topic=bench"]);
            let (pa, ea) = (p.ws_addr(), e.ws_addr());
            p.wait_for("broker subscribed");
            e.wait_for("broker subscribed");
            targets.push((pa, clients / 2));
            targets.push((ea, clients - clients / 2));
            servers.push(p);
            servers.push(e);
            _nats = Some(n);
        }
    }
    let (elapsed, cpu, broker_cpu) = rt.block_on(async {
        let mut socks = Vec::new();
        for (addr, n) in &targets {
            for _ in 0..*n {
                socks.push(client(*addr).await);
            }
        }
        // Every client has its 101; give the servers a moment to register the last.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu0: f64 = servers.iter().map(Server::cpu_secs).sum();
        let b0 = _nats.as_ref().map_or(0.0, Server::cpu_secs);
        let start = Instant::now();
        let trigger = format!("{messages}\n");
        let mut frame = vec![0x81, 0x80 | trigger.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(trigger.as_bytes());
        socks[0].0.write_all(&frame).await.expect("trigger");
        let counting = socks.into_iter().map(|s| tokio::spawn(count(s, messages)));
        let all = futures_util::future::join_all(counting);
        tokio::time::timeout(RUN_LIMIT, all).await.expect("run within 60 s");
        let elapsed = start.elapsed();
        let cpu1: f64 = servers.iter().map(Server::cpu_secs).sum();
        let b1 = _nats.as_ref().map_or(0.0, Server::cpu_secs);
        (elapsed, cpu1 - cpu0, b1 - b0)
    });
    let deliveries = (clients * messages) as f64;
    RunResult {
        rate: deliveries / elapsed.as_secs_f64(),
        cpu_us: cpu * 1e6 / deliveries,
        broker_cpu_ms: broker_cpu * 1e3,
    }
}

/// A WebSocket client after its handshake: the stream and bytes read past the 101.
async fn client(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("handshake");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.expect("read 101");
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
            return (s, buf.split_off(end + 4));
        }
    }
}

/// Reads server frames until `want` text frames came.
async fn count((mut s, mut buf): (TcpStream, Vec<u8>), want: usize) {
    let mut got = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Parse every whole frame in `buf` (server frames are unmasked).
        let mut at = 0;
        while buf.len() - at >= 2 {
            let (op, len7) = (buf[at] & 0x0f, (buf[at + 1] & 0x7f) as usize);
            let (head, len) = match len7 {
                126 if buf.len() - at >= 4 => (4, u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize),
                127 if buf.len() - at >= 10 => (
                    10,
                    u64::from_be_bytes(buf[at + 2..at + 10].try_into().expect("8 bytes")) as usize,
                ),
                126 | 127 => break,
                n => (2, n),
            };
            if buf.len() - at < head + len {
                break;
            }
            if op == 1 {
                got += 1;
            }
            at += head + len;
        }
        buf.drain(..at);
        if got >= want {
            return;
        }
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "server closed after {got} of {want}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The floor: a minimal broadcast server in this process. Prints its address like
/// wsbridge; on a client's text `N` it sends "1".."N" to every socket.
fn floor_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on ws://{}/", l.local_addr().expect("addr"));
        let (tx, _) = tokio::sync::broadcast::channel::<Message>(1 << 16);
        loop {
            let (s, _) = l.accept().await.expect("accept");
            let (tx, mut rx) = (tx.clone(), tx.subscribe());
            tokio::spawn(async move {
                let ws = tokio_tungstenite::accept_async(s).await.expect("accept ws");
                let (mut sink, mut stream) = ws.split();
                let reading = async {
                    while let Some(Ok(m)) = stream.next().await {
                        if let Message::Text(t) = m {
                            let n: usize = t.trim().parse().unwrap_or(0);
                            for i in 1..=n {
                                let _ = tx.send(Message::text(i.to_string()));
                            }
                        }
                    }
                };
                let writing = async {
                    while let Ok(m) = rx.recv().await {
                        if sink.feed(m).await.is_err() {
                            return;
                        }
                        while let Ok(m) = rx.try_recv() {
                            if sink.feed(m).await.is_err() {
                                return;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! { () = reading => {}, () = writing => {} }
            });
        }
    });
}
