//! Process lifecycle: close codes from exit status, the stop ladder on the whole process
//! group, --maxforks, pings, and shutdown of the real binary.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The ladder's SIGKILL lands at 850 ms + 3 × closems; allow scheduling slack on top.
const LADDER: Duration = Duration::from_millis(850 + 2000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_sets_the_close_code() {
    for (args, code, reason) in [
        (vec![fixture("exit.sh"), "0".into()], CloseCode::Normal, ""),
        (vec![fixture("exit.sh"), "3".into()], CloseCode::Error, "exit status 3"),
        (
            vec![fixture("suicide.sh")],
            CloseCode::Error,
            "killed by signal SIGKILL",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = TestServer::start(&args).await;
        let mut ws = connect(&server.url("/")).await;
        let (data, got_code, got_reason) = recv_until_close(&mut ws).await;
        assert_eq!(data.len(), 1, "{args:?}: the line before the exit arrives first");
        assert_eq!((got_code, got_reason.as_str()), (code, reason), "{args:?}");
        // The server closes the TCP connection after the close handshake.
        assert!(within(STEP, ws.next()).await.is_none());
        server.stop().await;
    }
}

async fn first_line_pids(ws: &mut Ws) -> Vec<i32> {
    recv_text(ws)
        .await
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_stops_the_program_and_its_grandchildren() {
    let server = TestServer::start(&[&fixture("family.sh")]).await;
    let mut ws = connect(&server.url("/")).await;
    let pids = first_line_pids(&mut ws).await;
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| alive(p)));
    within(STEP, ws.close(None)).await.expect("close");
    for p in pids {
        assert!(gone_within(p, LADDER).await, "pid {p} survived the client's close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_client_stops_the_program() {
    let server = TestServer::start(&[&fixture("pid_cat.sh")]).await;
    let mut ws = connect(&server.url("/")).await;
    let pid = first_line_pids(&mut ws).await[0];
    drop(ws); // TCP closed without a Close frame
    assert!(gone_within(pid, LADDER).await, "program survived a vanished client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_ignoring_eof_sigint_and_sigterm_is_killed() {
    let server = TestServer::start(&[&fixture("stubborn.sh")]).await;
    let mut ws = connect(&server.url("/")).await;
    let pid = first_line_pids(&mut ws).await[0];
    within(STEP, ws.close(None)).await.expect("close");
    // Still alive after SIGINT (100 ms) and SIGTERM (350 ms): only SIGKILL ends it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid), "stubborn program should outlive SIGINT and SIGTERM");
    assert!(gone_within(pid, LADDER).await, "stubborn program was not killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxforks_refuses_with_429_and_frees_the_slot_after_reaping() {
    let server = TestServer::start(&["--maxforks=1", &fixture("pid_cat.sh")]).await;
    let mut first = connect(&server.url("/")).await;
    let pid = first_line_pids(&mut first).await[0];
    let refused = within(STEP, tokio_tungstenite::connect_async(server.url("/"))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    within(STEP, first.close(None)).await.expect("close");
    assert!(gone_within(pid, LADDER).await);
    // The slot is released once the program is reaped; poll for it with a deadline.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        match within(STEP, tokio_tungstenite::connect_async(server.url("/"))).await {
            Ok((mut ws, _)) => {
                first_line_pids(&mut ws).await;
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "slot never freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads server frames (unmasked, short) until a Close; returns the opcodes seen and the
/// close code.
async fn read_frames_until_close(tcp: &mut TcpStream) -> (Vec<u8>, u16) {
    let mut ops = Vec::new();
    loop {
        let mut h = [0u8; 2];
        within(STEP, tcp.read_exact(&mut h)).await.expect("frame header");
        let op = h[0] & 0x0f;
        let len = (h[1] & 0x7f) as usize;
        assert!(len < 126, "short frames only");
        let mut payload = vec![0u8; len];
        within(STEP, tcp.read_exact(&mut payload)).await.expect("frame payload");
        ops.push(op);
        if op == 0x8 {
            return (ops, u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_gets_pings_then_close_1001() {
    let server = TestServer::start(&["--pingms=100", &fixture("pid_cat.sh")]).await;
    let mut tcp = raw_upgrade(server.addr, "/", &[]).await;
    let (ops, code) = read_frames_until_close(&mut tcp).await;
    assert!(ops.contains(&0x9), "no ping before the close: {ops:?}");
    assert_eq!(code, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_client_is_kept_alive_by_pings() {
    let server = TestServer::start(&["--pingms=50", "cat"]).await;
    let mut ws = connect(&server.url("/")).await;
    // Six intervals pass while the client reads (and so answers each ping): nothing,
    // not even a Close, may arrive.
    let quiet = tokio::time::timeout(Duration::from_millis(300), recv(&mut ws)).await;
    assert!(quiet.is_err(), "unexpected {quiet:?}");
    send_text(&mut ws, "still here").await;
    assert_eq!(recv_text(&mut ws).await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_closes_sessions_with_1001_and_stops_programs() {
    let server = TestServer::start(&[&fixture("pid_cat.sh")]).await;
    let mut ws = connect(&server.url("/")).await;
    let pid = first_line_pids(&mut ws).await[0];
    let stopping = tokio::spawn(server.stop());
    let (_, code, _) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Away);
    within(STEP, stopping).await.expect("stop");
    assert!(!alive(pid), "program outlived the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_binary_with_20_sessions_closes_all_and_exits_0() {
    let mut server = BinServer::start(&[&fixture("pid_cat.sh")]);
    let mut sessions = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..20 {
        let mut ws = connect(&server.url("/")).await;
        pids.push(first_line_pids(&mut ws).await[0]);
        sessions.push(ws);
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    for ws in &mut sessions {
        let (_, code, reason) = recv_until_close(ws).await;
        assert_eq!((code, reason.as_str()), (CloseCode::Away, "server shutting down"));
    }
    let status = server.wait_exit(STEP).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    for p in pids {
        assert!(!alive(p), "program {p} outlived wsbridge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_that_closes_stdout_but_keeps_running_is_stopped() {
    // `exec >&-` closes stdout; the shell then waits on stdin forever.
    let server = TestServer::start(&["sh", "-c", "echo $$; exec >&-; read x; sleep 1000"]).await;
    let mut ws = connect(&server.url("/")).await;
    let pid = first_line_pids(&mut ws).await[0];
    let (_, code, reason) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Error);
    assert!(
        reason.starts_with("killed by signal") || reason.starts_with("exit status"),
        "{reason}"
    );
    assert!(gone_within(pid, LADDER).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_a_flood_is_dropped_with_pings_on() {
    // `yes` floods; the raw client reads the pid line and then nothing, so the socket
    // fills, no ping can be sent and nothing comes back: the watchdog ends it.
    let server = TestServer::start(&["--pingms=100", "sh", "-c", "echo $$; exec yes"]).await;
    let mut tcp = raw_upgrade(server.addr, "/", &[]).await;
    let mut h = [0u8; 2];
    within(STEP, tcp.read_exact(&mut h)).await.expect("frame header");
    let mut pid = vec![0u8; (h[1] & 0x7f) as usize];
    within(STEP, tcp.read_exact(&mut pid)).await.expect("pid");
    let pid: i32 = String::from_utf8(pid).expect("utf8").parse().expect("pid");
    assert!(
        gone_within(pid, STEP).await,
        "flooding program outlived a client that stopped reading"
    );
    drop(tcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigchld_fallback_for_kernels_without_pidfd() {
    let server = BinServer::start_with_env(&[&fixture("family.sh")], &[("WSBRIDGE_NO_PIDFD", "1")]);
    let mut ws = connect(&server.url("/")).await;
    let pids = first_line_pids(&mut ws).await;
    within(STEP, ws.close(None)).await.expect("close");
    for p in pids {
        assert!(gone_within(p, LADDER).await, "pid {p} survived");
    }
    let exit = BinServer::start_with_env(&[&fixture("exit.sh"), "3"], &[("WSBRIDGE_NO_PIDFD", "1")]);
    let mut ws = connect(&exit.url("/")).await;
    let (_, code, reason) = recv_until_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Error, "exit status 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_refuses_backs_off_and_recovers() {
    // 40 descriptors: a handful of sessions (socket, three pipes and a pidfd each) use
    // them up; further connections fail cleanly (500, or wait in the backlog while accept
    // backs off on EMFILE), and once sessions end the server serves again.
    let server = BinServer::start_with_fd_limit(&["cat"], 40);
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(server.url("/")),
        )
        .await
        {
            Ok(Ok((ws, _))) => open.push(ws),
            Ok(Err(_)) | Err(_) => refused += 1,
        }
    }
    assert!(!open.is_empty(), "no session at all; log:\n{}", server.log());
    assert!(refused > 0, "the limit was never reached ({} sessions)", open.len());
    for mut ws in open {
        let _ = within(STEP, ws.close(None)).await;
    }
    // Recovery: poll with a deadline until a new session echoes.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        if let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(server.url("/")),
        )
        .await
        {
            send_text(&mut ws, "back").await;
            assert_eq!(recv_text(&mut ws).await, "back");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = server.log();
    assert!(
        log.contains("accept failed; backing off") || log.contains("failed to start the program"),
        "no sign of the limit in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_request_head_is_cut_at_the_header_deadline() {
    // An unfinished request head is dropped after the documented 10 s; a well-behaved
    // client is served meanwhile.
    let server = TestServer::start(&["cat"]).await;
    let mut slow = within(STEP, TcpStream::connect(server.addr)).await.expect("connect");
    within(STEP, slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "))
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "served").await;
    assert_eq!(recv_text(&mut ws).await, "served");
    let mut buf = [0u8; 256];
    let n = within(Duration::from_secs(20), slow.read(&mut buf)).await.unwrap_or(0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9), "closed too early: {waited:?}");
    assert!(
        n == 0 || buf[..n].starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}
