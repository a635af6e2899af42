//! Hostile and broken frames the Autobahn cases do not cover, over a raw TCP socket: each
//! gets a defined Close code, never a hang, and the program is always stopped.

use crate::common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A client frame: `b0` is FIN/RSV/opcode, payload masked unless `masked` is false.
fn frame(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![b0];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n < 65536 => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

const TEXT: u8 = 0x81;

/// A server frame: (opcode, payload).
async fn read_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    read_raw_frame(tcp).await.map(|(b0, payload)| (b0 & 0x0f, payload))
}

/// Reads frames until the server's Close; returns the data payloads before it and the
/// close code (`None` if the connection ended without a Close frame).
async fn until_close(tcp: &mut TcpStream) -> (Vec<Vec<u8>>, Option<u16>) {
    let mut data = Vec::new();
    while let Some((op, payload)) = read_frame(tcp).await {
        match op {
            0x8 => return (data, payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
            0x1 | 0x2 => data.push(payload),
            _ => {}
        }
    }
    (data, None)
}

async fn close_code_for(bytes: Vec<u8>) -> Option<u16> {
    let server = TestServer::start(&["--maxframesize=4096", "cat"]).await;
    let mut tcp = raw_upgrade(server.addr, "/", &[]).await;
    within(STEP, tcp.write_all(&bytes)).await.expect("write");
    until_close(&mut tcp).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_1002() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked frame", frame(TEXT, b"hi", false)),
        ("reserved bit", frame(0x80 | 0x40 | 0x1, b"hi", true)),
        ("reserved data opcode", frame(0x83, b"hi", true)),
        ("reserved control opcode", frame(0x8b, b"", true)),
        ("fragmented ping", frame(0x09, b"p", true)),
        ("oversized ping", frame(0x89, &[0u8; 126], true)),
        ("continuation without start", frame(0x80, b"x", true)),
        ("close code 999", frame(0x88, &999u16.to_be_bytes(), true)),
        ("one-byte close payload", frame(0x88, &[3], true)),
        (
            "new message inside a fragmented one",
            [frame(0x01, b"a", true), frame(TEXT, b"b", true)].concat(),
        ),
    ];
    for (what, bytes) in cases {
        assert_eq!(close_code_for(bytes).await, Some(1002), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007_even_across_fragments() {
    assert_eq!(close_code_for(frame(TEXT, b"bad\xff", true)).await, Some(1007), "whole");
    // "é" is C3 A9: split between two fragments it is valid; a broken tail is not.
    let split_ok = [frame(0x01, b"caf\xc3", true), frame(0x80, b"\xa9", true)].concat();
    let server = TestServer::start(&["cat"]).await;
    let mut tcp = raw_upgrade(server.addr, "/", &[]).await;
    within(STEP, tcp.write_all(&split_ok)).await.expect("write");
    assert_eq!(read_frame(&mut tcp).await, Some((0x1, "café".as_bytes().to_vec())));
    let split_bad = [frame(0x01, b"caf\xc3", true), frame(0x80, b"(", true)].concat();
    assert_eq!(close_code_for(split_bad).await, Some(1007), "split");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_declared_lengths_are_refused_at_the_header() {
    // 2^40 bytes announced, none sent: refused at once, nothing allocated or awaited.
    let mut huge = vec![TEXT, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(close_code_for(huge).await, Some(1009));
    // The top bit of a 64-bit length must be zero (RFC 6455 §5.2).
    let mut top = vec![TEXT, 0x80 | 127];
    top.extend_from_slice(&(1u64 << 63).to_be_bytes());
    top.extend_from_slice(&[1, 2, 3, 4]);
    let code = close_code_for(top).await;
    assert!(matches!(code, Some(1002 | 1009)), "{code:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_tiny_continuations_hit_the_message_limit() {
    let mut bytes = frame(0x01, b"a", true);
    for _ in 0..5000 {
        bytes.extend(frame(0x00, b"a", true));
    }
    assert_eq!(close_code_for(bytes).await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_sent_with_the_handshake_is_kept() {
    let server = TestServer::start(&["cat"]).await;
    let mut tcp = raw_upgrade(server.addr, "/", &frame(TEXT, b"early", true)).await;
    assert_eq!(read_frame(&mut tcp).await, Some((0x1, b"early".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_without_reading_keeps_one_pending_pong() {
    let server = TestServer::start(&["cat"]).await;
    let mut tcp = raw_upgrade(server.addr, "/", &[]).await;
    let flood: Vec<u8> = (0..20_000).flat_map(|_| frame(0x89, b"0123456789", true)).collect();
    within(STEP, tcp.write_all(&flood)).await.expect("flood");
    within(STEP, tcp.write_all(&frame(TEXT, b"after", true)))
        .await
        .expect("write");
    // Pongs are answered as the socket allows; the echo still arrives.
    loop {
        let (op, payload) = read_frame(&mut tcp).await.expect("frame");
        if op == 0x1 {
            assert_eq!(payload, b"after");
            break;
        }
        assert_eq!(op, 0xA, "only pongs before the echo");
    }
}
