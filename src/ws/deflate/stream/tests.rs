//! The transport in memory: tungstenite on both ends of a `tokio::io::duplex`, each over
//! a [`Deflating`], and raw frames written by hand.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::super::{Deflater, Direction};
use super::*;

const MAX: usize = 1 << 20;

fn agreed(no_context_takeover: bool) -> Agreed {
    let d = Direction {
        no_context_takeover,
        window_bits: 15,
    };
    Agreed { ours: d, theirs: d }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

#[test]
fn heads_round_trip() {
    for len in [0, 1, 125, 126, 65535, 65536, 1 << 20] {
        for mask in [None, Some([1, 2, 3, 4])] {
            let mut b = Vec::new();
            put_head(&mut b, true, true, OP_BINARY, mask, len);
            let h = parse_head(&b).unwrap();
            assert_eq!(
                (h.fin, h.rsv1, h.opcode, h.mask, h.len, h.size),
                (true, true, OP_BINARY, mask, len as u64, b.len())
            );
            assert_eq!(parse_head(&b[..b.len() - 1]), None);
        }
    }
}

#[tokio::test]
async fn messages_round_trip_both_ways_compressed() {
    for nct in [false, true] {
        let (a, b) = tokio::io::duplex(4096);
        let server = Deflating::server(a, agreed(nct), MAX);
        let client = Deflating::new(b, false, agreed(nct), MAX, Phase::Frames);
        let mut s = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let msgs = [
            Message::text("short"),
            Message::text("{\"k\":\"value\"}".repeat(200)),
            Message::binary(vec![7u8; 300_000]),
            Message::Ping("p".into()),
            Message::text(""),
        ];
        for m in msgs {
            within(c.send(m.clone())).await.unwrap();
            let got = within(s.next()).await.unwrap().unwrap();
            assert_eq!(got, m);
            if !matches!(m, Message::Ping(_)) {
                within(s.send(m.clone())).await.unwrap();
                let mut back = within(c.next()).await.unwrap().unwrap();
                if matches!(back, Message::Pong(_)) {
                    back = within(c.next()).await.unwrap().unwrap();
                }
                assert_eq!(back, m);
            }
        }
    }
}

/// A client frame (masked) with these bits and payload.
fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [9, 8, 7, 6];
    let mut f = Vec::new();
    put_head(&mut f, fin, rsv1, opcode, Some(mask), payload.len());
    let mut p = payload.to_vec();
    apply_mask(&mut p, mask);
    f.extend_from_slice(&p);
    f
}

async fn server_reads(raw: Vec<u8>, max: usize) -> Result<Message, WsError> {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut s = WebSocketStream::from_raw_socket(Deflating::server(a, agreed(false), max), Role::Server, None).await;
    tokio::spawn(async move {
        b.write_all(&raw).await.unwrap();
        // Keep the peer open until the server is done reading.
        let _ = b.read(&mut [0; 64]).await;
    });
    within(s.next()).await.unwrap()
}

#[tokio::test]
async fn a_fragmented_compressed_message_is_one_message() {
    let mut z = Vec::new();
    Deflater::new(agreed(false).ours).message(b"hello fragmented compressed world", &mut z);
    let mut raw = client_frame(false, true, OP_TEXT, &z[..3]);
    raw.extend(client_frame(true, false, 0x9, b"ping in between"));
    raw.extend(client_frame(false, false, OP_CONT, &z[3..5]));
    raw.extend(client_frame(true, false, OP_CONT, &z[5..]));
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut s = WebSocketStream::from_raw_socket(Deflating::server(a, agreed(false), MAX), Role::Server, None).await;
    b.write_all(&raw).await.unwrap();
    assert_eq!(
        within(s.next()).await.unwrap().unwrap(),
        Message::Ping("ping in between".into())
    );
    assert_eq!(
        within(s.next()).await.unwrap().unwrap(),
        Message::text("hello fragmented compressed world")
    );
}

#[tokio::test]
async fn rsv1_on_control_or_continuation_is_a_protocol_error() {
    let e = server_reads(client_frame(true, true, 0x9, b"x"), MAX)
        .await
        .unwrap_err();
    assert!(matches!(e, WsError::Protocol(_)), "{e:?}");
    let mut raw = client_frame(false, false, OP_TEXT, b"a");
    raw.extend(client_frame(true, true, OP_CONT, b"b"));
    let e = server_reads(raw, MAX).await.unwrap_err();
    assert!(matches!(e, WsError::Protocol(_)), "{e:?}");
}

fn inflate_error(e: WsError) -> InflateError {
    match e {
        WsError::Io(e) => e
            .get_ref()
            .and_then(|i| i.downcast_ref::<InflateError>())
            .cloned()
            .expect("an InflateError"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_bomb_and_a_corrupt_stream_are_typed_errors() {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut z = Vec::with_capacity(64 << 10);
    c.compress_vec(&vec![0u8; 8 << 20], &mut z, flate2::FlushCompress::Sync)
        .unwrap();
    z.truncate(z.len() - 4);
    let e = server_reads(client_frame(true, true, OP_BINARY, &z), 100_000)
        .await
        .unwrap_err();
    assert_eq!(inflate_error(e), InflateError::TooBig { max: 100_000 });
    let e = server_reads(client_frame(true, true, OP_BINARY, &[0xff; 10]), MAX)
        .await
        .unwrap_err();
    assert!(matches!(inflate_error(e), InflateError::Corrupt(_)));
}

#[tokio::test]
async fn tiny_and_precompressed_frames_go_out_as_they_are() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut s = WebSocketStream::from_raw_socket(Deflating::server(a, agreed(false), MAX), Role::Server, None).await;
    within(s.send(Message::text("tiny"))).await.unwrap();
    let mut buf = [0u8; 6];
    within(b.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, *b"\x81\x04tiny");
    within(s.send(Message::text("x".repeat(100)))).await.unwrap();
    let mut head = [0u8; 2];
    within(b.read_exact(&mut head)).await.unwrap();
    assert_eq!(head[0], 0xc1, "FIN, RSV1, text");
    assert!(head[1] < 20, "{} bytes for 100 x", head[1]);
}

#[tokio::test]
async fn a_client_keeps_a_compressed_frame_sent_with_the_101() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let shake = Arc::new(Negotiated::default());
    let transport = Deflating::client(a, MAX, Arc::clone(&shake));
    let server = tokio::spawn(async move {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            b.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("sec-websocket-key: ")
                    .or_else(|| l.strip_prefix("Sec-WebSocket-Key: "))
            })
            .unwrap()
            .trim()
            .to_owned();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
        .into_bytes();
        // The first message in the same write as the 101, compressed.
        let mut z = Vec::new();
        assert!(
            Deflater::new(agreed(false).ours).message(&b"sent at once, sent at once, sent at once".repeat(3), &mut z)
        );
        put_head(&mut answer, true, true, OP_TEXT, None, z.len());
        answer.extend_from_slice(&z);
        b.write_all(&answer).await.unwrap();
        let _ = b.read(&mut [0; 64]).await;
    });
    let (mut ws, _) = within(tokio_tungstenite::client_async("ws://localhost/", transport))
        .await
        .unwrap();
    shake.settle(Some(agreed(false)));
    let got = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(got, Message::text("sent at once, sent at once, sent at once".repeat(3)));
    server.abort();
}
