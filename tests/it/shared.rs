//! `--shared`: one program for every client (the real binary, real clients, the
//! `tests/fixtures/shared.py` program). 200 clients get the same stream in order; a
//! stalled client is dropped with 1008 while the others keep every line; the program is
//! restarted when it dies and clients stay; `once` closes everyone with the status and
//! exits with it; `eager` starts at startup; `ids` addresses one client.

use std::time::Duration;

use crate::common::*;
use futures_util::future::join_all;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Waits until the server's log contains `needle`.
async fn log_shows(server: &BinServer, needle: &str) {
    let deadline = std::time::Instant::now() + STEP;
    while !server.log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "log never showed {needle:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pid_in(line: &str) -> i32 {
    line.strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected `pid N`, got {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_get_the_same_stream_in_order() {
    let server = BinServer::start(&["--shared", &fixture("shared.py")]);
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(connect(&server.url("/")).await);
    }
    // Every client is registered before its 101, so all of them see the answer.
    send_text(&mut clients[0], "pid").await;
    let pids: Vec<i32> = join_all(clients.iter_mut().map(|c| async { pid_in(&recv_text(c).await) })).await;
    assert!(pids.iter().all(|p| *p == pids[0]), "one program for everyone: {pids:?}");

    send_text(&mut clients[199], "go 2000").await;
    within(
        Duration::from_secs(60),
        join_all(clients.iter_mut().map(|c| async {
            for want in 1..=2000 {
                assert_eq!(recv_text(c).await, want.to_string());
            }
        })),
    )
    .await;
    for c in &mut clients {
        within(STEP, c.close(None)).await.expect("close");
    }
    assert!(alive(pids[0]), "the shared program outlives its clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_while_the_others_keep_every_line() {
    const LINES: usize = 20_000;
    // The flood comes at up to 10 MB/s; a 2 MiB queue lets a reader that is busy for a
    // moment (a loaded 2-core machine: the three readers share one task) catch up, and
    // the stalled client, which takes almost none of the 20 MB, still overflows it.
    let server = BinServer::start(&["--shared", "--sharedqueue=2097152", &fixture("shared.py")]);
    // A client that completes the handshake with a tiny receive buffer and never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = within(STEP, socket.connect(server.addr)).await.expect("connect");
    let mut stalled = raw_upgrade_on(tcp, server.addr, "/", b"").await;

    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(connect(&server.url("/")).await);
    }
    send_text(&mut readers[0], &format!("flood {LINES}")).await;
    within(
        Duration::from_secs(90),
        join_all(readers.iter_mut().map(|c| async {
            for want in 0..LINES {
                let line = recv_text(c).await;
                assert_eq!(&line[..8], format!("{want:08}"), "in order, none lost");
            }
        })),
    )
    .await;
    log_shows(&server, "client too slow").await;
    // Its Close 1008 cannot get through a socket it does not read, so none is logged as sent.
    log_shows(&server, "ended_by=dropped").await;
    // The stalled client's connection is closed: reading it now reaches EOF.
    let mut sink = vec![0u8; 1 << 16];
    within(STEP, async {
        while stalled.read(&mut sink).await.map_or(0, |n| n) > 0 {}
    })
    .await;
    // The readers are still served.
    send_text(&mut readers[1], "go 1").await;
    for r in &mut readers {
        assert_eq!(recv_text(r).await, "1");
    }
}

#[tokio::test]
async fn the_program_is_restarted_and_clients_stay_connected() {
    let server = BinServer::start(&["--shared", &fixture("shared.py")]);
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "pid").await;
    let first = pid_in(&recv_text(&mut ws).await);
    send_text(&mut ws, "exit 3").await;
    assert!(gone_within(first, STEP).await, "the program exited");
    log_shows(&server, "shared program ended; restarting").await;
    // Sent while the program may be down: waits for the next one.
    send_text(&mut ws, "pid").await;
    let second = pid_in(&recv_text(&mut ws).await);
    assert_ne!(first, second, "a new program");
    assert!(server.log().contains("exit status 3"), "{}", server.log());
}

#[tokio::test]
async fn once_closes_everyone_with_the_status_and_exits_with_it() {
    let mut server = BinServer::start(&["--shared=once", &fixture("shared.py")]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    send_text(&mut a, "go 3").await;
    send_text(&mut a, "exit 3").await;
    for ws in [&mut a, &mut b] {
        let (data, code, reason) = recv_until_close(ws).await;
        assert_eq!(data.len(), 3, "the last lines arrive before the Close: {data:?}");
        assert_eq!(code, CloseCode::Error);
        assert_eq!(reason, "exit status 3");
    }
    let status = server.wait_exit(STEP).await;
    assert_eq!(status.code(), Some(3), "{}", server.log());
}

#[tokio::test]
async fn eager_starts_the_program_before_anyone_connects() {
    let server = BinServer::start(&["--shared=eager", &fixture("shared.py")]);
    log_shows(&server, "shared program started").await;
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "pid").await;
    let pid = pid_in(&recv_text(&mut ws).await);
    assert!(server.log().contains(&format!("pid={pid}")), "{}", server.log());
}

#[tokio::test]
async fn ids_tell_clients_apart_and_address_one() {
    let server = BinServer::start(&["--shared=ids", &fixture("shared.py")]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    send_text(&mut b, "whoami").await;
    let me = recv_text(&mut b).await;
    let id: u64 = me
        .strip_prefix("you are ")
        .expect("an answer to b only")
        .parse()
        .expect("id");
    send_text(&mut a, "say hi there").await;
    let said = recv_text(&mut b).await;
    assert!(
        said.ends_with(" says hi there") && !said.starts_with(&id.to_string()),
        "{said}"
    );
    // a got the broadcast but not b's private answer.
    assert_eq!(recv_text(&mut a).await, said);
}

#[tokio::test]
async fn bad_shared_command_lines_are_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_wsbridge");
    for args in [
        vec!["--shared=bogus", "cat"],
        vec!["--shared=ids", "--binary", "cat"],
        vec!["--shared", "--pty", "cat"],
        vec!["--shared", "--dir=/tmp"],
        vec!["--shared", "--sharedqueue=0", "cat"],
    ] {
        let out = within(STEP, tokio::process::Command::new(bin).args(&args).output())
            .await
            .expect("run wsbridge");
        let err = String::from_utf8_lossy(&out.stderr);
        crate::common::assert_usage_error(out.status.code(), &err, "shared");
    }
}

#[tokio::test]
async fn the_sensor_example_shows_every_client_the_same_readings() {
    let server = BinServer::start(&["--shared", &example("sensor.sh"), "0.02"]);
    let mut a = connect(&server.url("/")).await;
    let first = recv_text(&mut a).await;
    let mut b = connect(&server.url("/")).await;
    let seen_by_b: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(recv_text(&mut b).await);
        }
        v
    };
    // a saw everything from its first reading on, so b's readings are a run of a's.
    let mut seen_by_a = vec![first];
    while seen_by_a.last() != seen_by_b.last() {
        seen_by_a.push(recv_text(&mut a).await);
        assert!(seen_by_a.len() < 1000, "b's readings never showed up for a");
    }
    assert!(seen_by_a.ends_with(&seen_by_b), "{seen_by_a:?} / {seen_by_b:?}");
    assert!(seen_by_b[0].starts_with("{\"seq\":"), "{}", seen_by_b[0]);
}

#[tokio::test]
async fn the_chat_example_relays_between_clients() {
    let server = BinServer::start(&["--shared=ids", &example("chat.sh")]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    send_text(&mut a, "/who").await;
    let me = recv_text(&mut a).await;
    let id = me.strip_prefix("you are ").expect("answered to a only").to_owned();
    send_text(&mut a, "hello, b").await;
    let line = format!("{id}: hello, b");
    assert_eq!(recv_text(&mut b).await, line);
    assert_eq!(recv_text(&mut a).await, line);
}
