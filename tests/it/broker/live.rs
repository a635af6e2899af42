//! The tests that need a real `nats-server` (see the parent module).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A `nats-server` on 127.0.0.1, stopped (SIGTERM, then SIGKILL) by pid on drop.
pub struct Nats {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Nats {
    /// A server on a free port, or `None` (a skip) when nats-server is not installed;
    /// with `CI=true` that fails the test instead.
    pub fn start() -> Option<Nats> {
        if Command::new("nats-server").arg("--version").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "nats-server is not installed (tools/test.sh installs it)"
            );
            eprintln!("nats-server is not installed; skipping (tools/test.sh installs it)");
            return None;
        }
        Some(Self::on_port(-1))
    }

    /// `-p PORT` (-1: any free port, read from its log).
    pub fn on_port(port: i32) -> Nats {
        Self::with_args(port, &[])
    }

    /// [`Nats::on_port`] with more nats-server flags (TLS, users).
    pub fn with_args(port: i32, extra: &[&str]) -> Nats {
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    let _ = tx.send(addr.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok()));
                }
                let mut l = log2.lock().expect("log");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let port = match rx.recv_timeout(STEP) {
            Ok(Some(p)) => p,
            _ => panic!(
                "nats-server did not announce its port; log:\n{}",
                log.lock().expect("log")
            ),
        };
        Nats { child, port, log }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGTERM by pid, SIGKILL after [`STEP`]) and waits for it.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("nats-server ignored SIGTERM; log:\n{}", self.log.lock().expect("log"));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

macro_rules! need_nats {
    () => {
        match Nats::start() {
            Some(n) => n,
            None => return,
        }
    };
}

/// The producer: `--shared[=MODES] --broker --topic PROGRAM...`, subscribed.
pub async fn producer(nats: &Nats, topic: &str, shared: &str, program: &[&str]) -> BinServer {
    let mut args = vec![
        shared.to_owned(),
        format!("--broker={}", nats.url()),
        format!("--topic={topic}"),
    ];
    args.extend(program.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = BinServer::start(&args);
    s.wait_log("broker subscribed").await;
    s
}

/// An edge: `--broker --topic`, no PROGRAM, subscribed.
pub async fn edge(nats: &Nats, topic: &str) -> BinServer {
    let s = BinServer::start(&[&format!("--broker={}", nats.url()), &format!("--topic={topic}")]);
    s.wait_log("broker subscribed").await;
    s
}

/// A program printing 1, 2, 3, ... every 5 ms, forever.
const TICKER: [&str; 3] = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.005; done"];

async fn next_number(ws: &mut Ws) -> u64 {
    let t = recv_text(ws).await;
    t.parse().unwrap_or_else(|_| panic!("expected a number, got {t:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_over_producer_and_two_edges_get_one_ordered_stream() {
    let nats = need_nats!();
    let p = producer(&nats, "seq", "--shared", &[&fixture("shared.py")]).await;
    let (a, b) = (edge(&nats, "seq").await, edge(&nats, "seq").await);
    let mut clients = Vec::new();
    for i in 0..100 {
        let server = [&p, &a, &b][i % 3];
        clients.push(connect(&server.url("/")).await);
    }
    // Input from a client of edge b (clients[2]) reaches the program.
    send_text(&mut clients[2], "go 2000").await;
    within(
        Duration::from_secs(90),
        join_all(clients.iter_mut().enumerate().map(|(i, c)| async move {
            for want in 1..=2000 {
                let got = recv_text(c).await;
                assert_eq!(got, want.to_string(), "client {i} (instance {})", i % 3);
            }
        })),
    )
    .await;
    for c in &mut clients {
        within(STEP, c.close(None)).await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_twenty_thousand_lines_reaches_both_edges_whole() {
    // One read of the program's output can hold thousands of lines, all queued for the
    // broker at once: the publish queue is bounded in bytes (--sharedqueue), not by a
    // small count.
    let nats = need_nats!();
    let _p = producer(&nats, "burst", "--shared", &[&fixture("shared.py")]).await;
    let (a, b) = (edge(&nats, "burst").await, edge(&nats, "burst").await);
    let mut on_a = connect(&a.url("/")).await;
    let mut on_b = connect(&b.url("/")).await;
    send_text(&mut on_a, "go 20000").await;
    within(Duration::from_secs(60), async {
        for want in 1..=20000 {
            assert_eq!(recv_text(&mut on_a).await, want.to_string());
            assert_eq!(recv_text(&mut on_b).await, want.to_string());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_answers_reach_the_right_client_on_another_instance() {
    let nats = need_nats!();
    let p = producer(&nats, "ids", "--shared=ids", &[&fixture("shared.py")]).await;
    let (a, b) = (edge(&nats, "ids").await, edge(&nats, "ids").await);
    let mut on_p = connect(&p.url("/")).await;
    let mut on_a = connect(&a.url("/")).await;
    let mut on_b = connect(&b.url("/")).await;

    send_text(&mut on_a, "whoami").await;
    let answer = recv_text(&mut on_a).await;
    let id: u64 = answer
        .strip_prefix("you are ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{answer:?}"));
    assert!(id >> 32 != 0, "an id carries its instance: {id}");
    assert!(id < 1 << 53, "ids stay exact as JavaScript numbers: {id}");

    send_text(&mut on_b, "whoami").await;
    let b_answer = recv_text(&mut on_b).await;
    assert!(b_answer.starts_with("you are ") && b_answer != answer, "{b_answer:?}");

    // A message for everyone shows that no one else got the answers meant for a and b.
    send_text(&mut on_p, "say hello").await;
    for ws in [&mut on_p, &mut on_a, &mut on_b] {
        let got = recv_text(ws).await;
        assert!(got.ends_with(" says hello"), "{got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_after_the_broker_restarts_and_local_clients_lose_nothing() {
    let mut nats = need_nats!();
    let p = producer(&nats, "tick", "--shared", &TICKER).await;
    // The edge with --metrics: its broker counters are checked at the end.
    let a = BinServer::from_proc(Proc::start(
        &[
            "--port=0",
            "--address=127.0.0.1",
            "--metrics=127.0.0.1:0",
            &format!("--broker={}", nats.url()),
            "--topic=tick",
        ],
        &[],
        2,
    ));
    a.wait_log("broker subscribed").await;
    let mut local = connect(&p.url("/")).await;
    let mut remote = connect(&a.url("/")).await;
    let mut seen_local = vec![next_number(&mut local).await];
    let mut seen_remote = vec![next_number(&mut remote).await];
    for _ in 0..50 {
        seen_remote.push(next_number(&mut remote).await);
    }
    let port = nats.port;
    nats.stop();
    p.wait_log("broker disconnected").await;
    a.wait_log("broker disconnected").await;
    // The outage lasts while the local client reads 100 more numbers (about 0.5 s).
    for _ in 0..100 {
        seen_local.push(next_number(&mut local).await);
    }
    let _nats = Nats::on_port(i32::from(port));
    // The edge's client gets numbers again, past the outage.
    let resumed_after = *seen_local.last().expect("numbers");
    within(Duration::from_secs(30), async {
        loop {
            let n = next_number(&mut remote).await;
            seen_remote.push(n);
            if n > resumed_after + 20 {
                break;
            }
        }
    })
    .await;
    for _ in seen_local.len()..seen_remote.len() {
        if seen_local.last() >= seen_remote.last() {
            break;
        }
        seen_local.push(next_number(&mut local).await);
    }
    // Local clients: every number, in order (the outage is not theirs).
    let first = seen_local[0];
    for (i, n) in seen_local.iter().enumerate() {
        assert_eq!(
            *n,
            first + i as u64,
            "the producer's own client lost or reordered output"
        );
    }
    // Remote clients: in order, none twice (at most once); what they missed is lost. Two
    // gaps are possible: what was in flight when the broker went away, and what the
    // producer published (its backlog first) before the edge had subscribed again.
    assert!(seen_remote.windows(2).all(|w| w[0] < w[1]), "{seen_remote:?}");
    let lost: Vec<u64> = seen_remote
        .windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .flat_map(|w| w[0] + 1..w[1])
        .collect();
    eprintln!(
        "broker outage: the edge's client lost {} numbers ({:?}..={:?}); the producer's lost none",
        lost.len(),
        lost.first(),
        lost.last()
    );
    p.wait_log("broker connected").await;
    assert!(a.log().matches("broker connected").count() >= 2, "{}", a.log());
    // The edge's metrics count the reconnect and the messages it received.
    let m = crate::metrics::scrape(a.metrics_addr()).await;
    let value = |series: &str| *m.get(series).unwrap_or_else(|| panic!("no {series} in {m:?}"));
    assert_eq!(value("wsbridge_broker_reconnects_total"), 1.0);
    assert_eq!(value("wsbridge_broker_connected"), 1.0);
    assert!(value("wsbridge_broker_messages_total{direction=\"in\"}") >= seen_remote.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_stopped_with_sigterm_closes_its_clients_with_1001_and_the_others_go_on() {
    let nats = need_nats!();
    let p = producer(&nats, "term", "--shared", &TICKER).await;
    let (a, b) = (edge(&nats, "term").await, edge(&nats, "term").await);
    let mut on_a: Vec<Ws> = Vec::new();
    for _ in 0..3 {
        on_a.push(connect(&a.url("/")).await);
    }
    let mut on_b = connect(&b.url("/")).await;
    let mut on_p = connect(&p.url("/")).await;
    for ws in on_a.iter_mut().chain([&mut on_b, &mut on_p]) {
        next_number(ws).await;
    }
    a.signal(Signal::SIGTERM);
    for ws in &mut on_a {
        let code = within(STEP, async {
            loop {
                match within(STEP, ws.next()).await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| f.code),
                    Some(Ok(_)) => continue,
                    other => panic!("expected a close, got {other:?}"),
                }
            }
        })
        .await;
        assert_eq!(code, Some(CloseCode::Away));
    }
    for ws in [&mut on_b, &mut on_p] {
        let start = next_number(ws).await;
        for i in 1..=50 {
            assert_eq!(next_number(ws).await, start + i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_credentials_from_the_url_or_a_file_and_never_logged() {
    use crate::common::deploy::{make_ca, make_leaf, TempDir};
    if Nats::start().is_none() {
        return;
    }
    let dir = TempDir::new("nats-tls");
    make_ca(&dir.0, "nats");
    make_leaf(&dir.0, "nats", "server", false);
    let (cert, key) = (dir.path("server.pem"), dir.path("server.key"));
    let nats = Nats::with_args(
        -1,
        &[
            "--tls",
            "--tlscert",
            cert.to_str().expect("utf-8"),
            "--tlskey",
            key.to_str().expect("utf-8"),
            "--user",
            "sensor",
            "--pass",
            "s3cret",
        ],
    );
    let ca = format!("--broker-ca={}", dir.path("nats-ca.pem").display());
    let creds = dir.path("creds");
    std::fs::write(&creds, "# the edge's account\nsensor:s3cret\n").expect("creds");
    let url = format!("tls://sensor:s3cret@127.0.0.1:{}", nats.port);
    let p = BinServer::start(&[
        "--shared",
        &format!("--broker={url}"),
        "--topic=tls",
        &ca,
        &fixture("shared.py"),
    ]);
    let a = BinServer::start(&[
        &format!("--broker=tls://127.0.0.1:{}", nats.port),
        "--topic=tls",
        &ca,
        &format!("--broker-creds={}", creds.display()),
    ]);
    p.wait_log("broker subscribed").await;
    a.wait_log("broker subscribed").await;
    let mut on_a = connect(&a.url("/")).await;
    send_text(&mut on_a, "go 3").await;
    for want in ["1", "2", "3"] {
        assert_eq!(recv_text(&mut on_a).await, want);
    }
    // A wrong password: the broker's refusal is logged, the password is not.
    let wrong = BinServer::start(&[
        &format!("--broker=tls://sensor:wr0ng@127.0.0.1:{}", nats.port),
        "--topic=tls",
        &ca,
    ]);
    wrong.wait_log("authorization violation").await;
    // Without the CA the server's certificate is not trusted.
    let untrusted = BinServer::start(&[&format!("--broker=tls://127.0.0.1:{}", nats.port), "--topic=tls"]);
    untrusted.wait_log("broker client error").await;
    for (who, log) in [("producer", p.log()), ("edge", a.log()), ("wrong", wrong.log())] {
        assert!(
            !log.contains("s3cret") && !log.contains("wr0ng"),
            "{who} logged a password:\n{log}"
        );
        assert!(log.contains("***@") || who == "edge", "{who}: {log}");
    }
}

#[cfg(feature = "compress")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_on_an_edge_and_the_producer_answers_server_no_context_takeover() {
    let nats = need_nats!();
    let p = producer(&nats, "z", "--shared", &["--compress", "cat"]).await;
    let e = BinServer::start(&[&format!("--broker={}", nats.url()), "--topic=z", "--compress"]);
    e.wait_log("broker subscribed").await;
    let long = r#"{"id":3,"sensor":"temp-9","value":19.25,"unit":"C","ok":true}"#.repeat(10);
    let msgs = [
        "short",
        long.as_str(),
        "through the broker and compressed once",
        long.as_str(),
    ];
    for server in [&e, &p] {
        let spec = serde_json::json!({"clients": ["default", "10", "off"], "send": msgs});
        let answers = crate::compress::python_shared_clients(&server.url("/"), spec, || server.log()).await;
        assert_eq!(
            answers,
            [
                "permessage-deflate; server_no_context_takeover",
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
                "-",
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_whose_program_does_not_read_drops_edges_input_past_sharedqueue() {
    let nats = need_nats!();
    // The program never reads its stdin; edges' input may wait in the producer for
    // --sharedqueue bytes (64 KiB here), beyond that it is dropped, counted and logged.
    let p = BinServer::from_proc(Proc::start(
        &[
            "--port=0",
            "--address=127.0.0.1",
            "--metrics=127.0.0.1:0",
            "--shared",
            "--sharedqueue=65536",
            &format!("--broker={}", nats.url()),
            "--topic=stall",
            "sleep",
            "600",
        ],
        &[],
        2,
    ));
    p.wait_log("broker subscribed").await;
    let e = edge(&nats, "stall").await;
    let before = status_kib(p.pid(), "RssAnon");
    let mut c = connect(&e.url("/")).await;
    const MESSAGES: usize = 400;
    let big = "x".repeat(256 * 1024 - 1);
    for _ in 0..MESSAGES {
        within(STEP, futures_util::SinkExt::send(&mut c, Message::text(big.clone())))
            .await
            .expect("send");
    }
    // Every message reached the producer (100 MiB in all)...
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = crate::metrics::scrape(p.metrics_addr()).await;
        let value = |series: &str| m.get(series).copied().unwrap_or(0.0);
        if value("wsbridge_broker_messages_total{direction=\"in\"}") >= MESSAGES as f64 {
            assert!(value("wsbridge_broker_input_dropped_total") > 0.0, "{m:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the producer did not receive the input: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and what it kept is bounded: the program's input queue (64 writes) and
    // --sharedqueue, not the 100 MiB the subscription could have held.
    let grown = status_kib(p.pid(), "RssAnon").saturating_sub(before);
    assert!(grown < 48 * 1024, "the producer grew {grown} KiB; log:\n{}", p.log());
    assert!(
        p.log().contains("dropping edges' input beyond --sharedqueue"),
        "{}",
        p.log()
    );
}
