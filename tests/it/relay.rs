//! Relay behaviour end to end: real server in-process, real programs, real client.

use crate::common::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_through_cat_keeps_order_and_line_rules() {
    let server = TestServer::start(&["cat"]).await;
    let mut ws = connect(&server.url("/")).await;
    for m in ["hello", "", "a\r\nb", "ünïcødé"] {
        send_text(&mut ws, m).await;
    }
    for want in ["hello", "", "a", "b", "ünïcødé"] {
        assert_eq!(recv_text(&mut ws).await, want);
    }
    within(STEP, ws.close(None)).await.expect("close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_example_sends_each_line_then_close_1000() {
    let server = TestServer::start(&[&example("count.sh"), "5", "0"]).await;
    let mut ws = connect(&server.url("/")).await;
    let (data, code, _) = recv_until_close(&mut ws).await;
    let got: Vec<String> = data
        .into_iter()
        .map(|m| m.into_text().expect("text").to_string())
        .collect();
    assert_eq!(got, ["1", "2", "3", "4", "5"]);
    assert_eq!(code, CloseCode::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_unterminated_line_is_delivered() {
    let server = TestServer::start(&[&fixture("partial.sh")]).await;
    let mut ws = connect(&server.url("/")).await;
    let (data, code, reason) = recv_until_close(&mut ws).await;
    let got: Vec<String> = data
        .into_iter()
        .map(|m| m.into_text().expect("text").to_string())
        .collect();
    assert_eq!(got, ["line1", "line2-crlf", "", "partial-without-newline"]);
    assert_eq!((code, reason.as_str()), (CloseCode::Error, "exit status 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_output_is_replaced_not_sent_raw() {
    let server = TestServer::start(&[&fixture("badutf8.sh")]).await;
    let mut ws = connect(&server.url("/")).await;
    assert_eq!(recv_text(&mut ws).await, "bad-utf8:\u{fffd}\u{fffd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_message_in_text_mode_closes_1003() {
    let server = TestServer::start(&["cat"]).await;
    let mut ws = connect(&server.url("/")).await;
    within(STEP, ws.send(Message::binary(vec![1u8, 2, 3])))
        .await
        .expect("send");
    let (_, code, reason) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Unsupported);
    assert!(reason.contains("--binary"), "{reason}");
}

/// Sends `messages` as binary messages with at most `window` of them in flight, reading
/// the echo concurrently, and returns the bytes that came back (message boundaries in
/// --binary follow pipe reads, so only the byte stream is compared).
async fn binary_echo(ws: Ws, messages: Vec<Vec<u8>>, window: usize) -> Vec<u8> {
    let bounds: Vec<usize> = messages
        .iter()
        .scan(0, |acc, m| {
            *acc += m.len();
            Some(*acc)
        })
        .collect();
    let total = bounds.last().copied().unwrap_or(0);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(window));
    let (mut tx, mut rx) = ws.split();
    let writer_slots = std::sync::Arc::clone(&slots);
    let writer = async move {
        for m in messages {
            writer_slots.acquire().await.expect("window").forget();
            tx.send(Message::binary(m)).await.expect("send");
        }
    };
    let reader = async move {
        let mut got = Vec::with_capacity(total);
        let mut next = 0;
        while got.len() < total {
            match rx.next().await.expect("stream ended").expect("ws error") {
                Message::Binary(b) => got.extend_from_slice(&b),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
            while next < bounds.len() && got.len() >= bounds[next] {
                slots.add_permits(1);
                next += 1;
            }
        }
        got
    };
    let ((), got) = within(STEP * 3, async { tokio::join!(writer, reader) }).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_round_trip_of_all_byte_values() {
    let server = TestServer::start(&["--binary", "cat"]).await;
    let ws = connect(&server.url("/")).await;
    let all: Vec<u8> = (0..=255u8).collect();
    let got = binary_echo(ws, vec![all.clone()], 1).await;
    assert_eq!(got, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_binary_echo_does_not_deadlock() {
    let server = TestServer::start(&["--binary", "--maxframesize=8388608", "cat"]).await;
    let ws = connect(&server.url("/")).await;
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let got = binary_echo(ws, vec![big.clone()], 1).await;
    assert!(got == big, "4 MiB echo differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_of_eight_64k_messages_does_not_deadlock() {
    // websocketd 0.4.1 deadlocks here (more than ~128 KiB in flight through cat).
    let server = TestServer::start(&["--binary", "cat"]).await;
    let ws = connect(&server.url("/")).await;
    let msgs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 64 * 1024]).collect();
    let want: Vec<u8> = msgs.concat();
    let got = binary_echo(ws, msgs, 8).await;
    assert!(got == want, "64 KiB x 64 echo differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_window_of_64k_lines_round_trips() {
    let server = TestServer::start(&["cat"]).await;
    let mut ws = connect(&server.url("/")).await;
    let line = "x".repeat(64 * 1024);
    let (mut tx, mut rx) = ws.split();
    let sender = async {
        for _ in 0..32 {
            tx.send(Message::text(line.clone())).await.expect("send");
        }
    };
    let receiver = async {
        for _ in 0..32 {
            match rx.next().await.expect("ended").expect("error") {
                Message::Text(t) => assert_eq!(t.len(), line.len()),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    within(STEP * 3, async { tokio::join!(sender, receiver) }).await;
    ws = tx.reunite(rx).expect("reunite");
    within(STEP, ws.close(None)).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_grow_only_when_a_large_message_passes() {
    // The fixture echoes each line, then reports its stdin and stdout pipe sizes.
    let server = TestServer::start(&[&fixture("pipe_sizes.py")]).await;
    let mut ws = connect(&server.url("/")).await;
    let sizes = |s: String| -> Vec<usize> { s.split(' ').map(|n| n.parse().expect("size")).collect() };

    send_text(&mut ws, "small").await;
    assert_eq!(recv_text(&mut ws).await, "small");
    let default = sizes(recv_text(&mut ws).await);
    assert_eq!(default[0], default[1]);
    let grown = wsbridge::pipesize::GROWN;
    assert!(
        default[0] < grown,
        "this kernel's pipes are already {} bytes",
        default[0]
    );

    // 100 KB does not fit the stdin pipe: it grows before the write. The echo then
    // fills the stdout pipe, which grows when wsbridge finds it full.
    let big = "x".repeat(100_000);
    send_text(&mut ws, &big).await;
    assert_eq!(recv_text(&mut ws).await, big);
    assert_eq!(sizes(recv_text(&mut ws).await), [grown, default[1]]);
    send_text(&mut ws, "after").await;
    assert_eq!(recv_text(&mut ws).await, "after");
    assert_eq!(sizes(recv_text(&mut ws).await), [grown, grown]);
    within(STEP, ws.close(None)).await.expect("close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_maxframesize_closes_1009() {
    let server = TestServer::start(&["--maxframesize=1024", "cat"]).await;
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, &"y".repeat(1000)).await;
    assert_eq!(recv_text(&mut ws).await.len(), 1000);
    within(STEP, ws.send(Message::text("z".repeat(2000))))
        .await
        .expect("send");
    let (_, code, _) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_long_lines_and_floods_never_block_the_program() {
    let server = TestServer::start(&[&fixture("stderr_flood.sh")]).await;
    let mut ws = connect(&server.url("/")).await;
    let (data, code, _) = recv_until_close(&mut ws).await;
    assert_eq!(data, vec![Message::Text("done".into())]);
    assert_eq!(code, CloseCode::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_output_is_sent_unchanged() {
    let server = TestServer::start(&["--binary", "printf", "a\\000b\\nc"]).await;
    let mut ws = connect(&server.url("/")).await;
    let (data, code, _) = recv_until_close(&mut ws).await;
    let bytes: Vec<u8> = data
        .into_iter()
        .flat_map(|m| match m {
            Message::Binary(b) => b.to_vec(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(Bytes::from(bytes), Bytes::from_static(b"a\0b\nc"));
    assert_eq!(code, CloseCode::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenprefix_with_cat_is_a_perfect_echo() {
    let server = TestServer::start(&["--framing=lenprefix", "cat"]).await;
    let mut ws = connect(&server.url("/")).await;
    let sent = vec![
        Message::text("two\nlines\r\n"),
        Message::binary(vec![0u8, b'\n', 255, 13]),
        Message::text(""),
        Message::binary(Vec::<u8>::new()),
        Message::text("x".repeat(100_000)),
    ];
    for m in &sent {
        within(STEP, ws.send(m.clone())).await.expect("send");
    }
    for want in &sent {
        assert_eq!(&recv(&mut ws).await, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenprefix_program_frames_become_typed_messages() {
    let server = TestServer::start(&["--framing=lenprefix", "printf", "t 2\\nhib 3\\n\\000\\001\\002"]).await;
    let mut ws = connect(&server.url("/")).await;
    let (data, code, _) = recv_until_close(&mut ws).await;
    assert_eq!(data, vec![Message::text("hi"), Message::binary(vec![0u8, 1, 2])]);
    assert_eq!(code, CloseCode::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lenprefix_output_closes_1011_naming_the_offset() {
    let server = TestServer::start(&["--framing=lenprefix", "printf", "t 2\\nhix 1\\na"]).await;
    let mut ws = connect(&server.url("/")).await;
    let (data, code, reason) = recv_until_close(&mut ws).await;
    assert_eq!(data, vec![Message::text("hi")]);
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Error, "malformed frame from the program at byte 6")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_framing_lets_messages_contain_newlines() {
    let server = TestServer::start(&["--framing=nul", "cat"]).await;
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "a\nb\r\nc").await;
    send_text(&mut ws, "").await;
    assert_eq!(recv_text(&mut ws).await, "a\nb\r\nc");
    assert_eq!(recv_text(&mut ws).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenprefix_python_example_keeps_types_and_newlines() {
    let server = TestServer::start(&["--framing=lenprefix", &example("lenprefix_echo.py")]).await;
    let mut ws = connect(&server.url("/")).await;
    within(STEP, ws.send(Message::binary(vec![0u8, 1, b'\n'])))
        .await
        .expect("send");
    assert_eq!(recv(&mut ws).await, Message::binary(vec![0u8, 1, b'\n']));
    send_text(&mut ws, "a\nb").await;
    assert_eq!(recv_text(&mut ws).await, "a\nb");
    assert_eq!(recv_text(&mut ws).await, "3 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_gets_all_output_after_the_program_exits() {
    // seq exits as soon as the rest of its 300000 lines fits in pipe and socket buffers;
    // the client takes at most 100000 messages a second, so delivering what is left after
    // the exit takes longer than the 2 s a stalled client is given. All of it must
    // arrive, in order, then a normal close.
    let server = TestServer::start(&["seq", "1", "300000"]).await;
    let mut ws = connect(&server.url("/")).await;
    for i in 1..=300_000u32 {
        assert_eq!(recv_text(&mut ws).await, i.to_string());
        if i % 1000 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let (data, code, _) = recv_until_close(&mut ws).await;
    assert!(data.is_empty());
    assert_eq!(code, CloseCode::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passstderr_sends_both_streams_as_tagged_json() {
    let script = r#"echo out1; echo 'e"rr' >&2; printf 'tab\tx\n' >&2; echo out2"#;
    let server = TestServer::start(&["--passstderr", "sh", "-c", script]).await;
    let mut ws = connect(&server.url("/")).await;
    let (data, code, _) = recv_until_close(&mut ws).await;
    let mut got: Vec<String> = data
        .into_iter()
        .map(|m| m.into_text().expect("text").to_string())
        .collect();
    got.sort();
    let mut want = vec![
        r#"{"stream":"stdout","data":"out1"}"#,
        r#"{"stream":"stdout","data":"out2"}"#,
        r#"{"stream":"stderr","data":"e\"rr"}"#,
        r#"{"stream":"stderr","data":"tab\tx"}"#,
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(code, CloseCode::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_example_sends_results_and_progress_apart() {
    let server = TestServer::start(&["--passstderr", &example("progress.sh")]).await;
    let mut ws = connect(&server.url("/")).await;
    let readme = format!("{}/README.md", env!("CARGO_MANIFEST_DIR"));
    send_text(&mut ws, &readme).await;
    let mut got = vec![recv_text(&mut ws).await, recv_text(&mut ws).await];
    got.sort(); // the two streams are separate pipes: either may come first
    assert!(
        got[0].starts_with("{\"stream\":\"stderr\",\"data\":\"counting "),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("{\"stream\":\"stdout\",\"data\":\"") && got[1].ends_with(" lines\"}"),
        "{got:?}"
    );
    drop(ws);
    server.stop().await;
}

/// Messages sent just before a Close reach a program that is slow to read them: the write
/// under way when the Close arrives is finished (bounded), not abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_a_close_reach_a_slow_reader() {
    const COUNT: usize = 100;
    const SIZE: usize = 2000;
    let out = std::env::temp_dir().join(format!("wsbridge-slow-reader-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    // Ignoring SIGINT and SIGTERM leaves it the ladder's 850 ms to finish after stdin ends.
    let script = format!(
        "trap '' INT TERM; sleep 0.3; wc -c > {}.tmp; mv {0}.tmp {0}",
        out.display()
    );
    let server = TestServer::start(&["sh", "-c", &script]).await;
    let mut ws = connect(&server.url("/")).await;
    let line = "x".repeat(SIZE);
    for _ in 0..COUNT {
        within(STEP, ws.feed(Message::text(line.clone()))).await.expect("feed");
    }
    // More than a pipe holds, so the write is still under way when the Close comes.
    within(STEP, ws.close(None)).await.expect("close");
    let deadline = std::time::Instant::now() + STEP;
    let counted = loop {
        if let Ok(s) = std::fs::read_to_string(&out) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the program never finished counting"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let _ = std::fs::remove_file(&out);
    assert_eq!(counted.trim(), (COUNT * (SIZE + 1)).to_string());
    server.stop().await;
}
