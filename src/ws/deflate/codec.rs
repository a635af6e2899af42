//! The DEFLATE side of permessage-deflate (RFC 7692 §7.2): one message at a time, sync
//! flush with the trailing `00 00 ff ff` removed on the way out and added back on the
//! way in. Inflating is bounded while it runs: it stops as soon as the output passes the
//! limit, so a small message that would inflate to gigabytes costs about the limit in
//! memory and work.
//!
//! With no context takeover the state is dropped after each message (a compressor costs
//! about 256 KiB at a 15-bit window, an inflater 32 KiB plus its window) and built again
//! for the next one; otherwise it lives as long as the connection. Either way it is built
//! on first use, so a connection that sends nothing pays nothing.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Direction;
use crate::error::InflateError;

/// What every message ends with before the sender strips it (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
/// Messages shorter than this go out uncompressed (RSV1 clear): a fresh DEFLATE block
/// costs about a byte and a half more than the bytes it carries, so below 16 bytes even a
/// back-reference into the window saves a few bytes at most, for a compressor call each
/// (unit test `tiny_messages_do_not_pay`). 16 and up are compressed: Autobahn 12.x.1 and
/// 13.x.1 send 16-byte messages and its kosoku driver expects them compressed.
pub const MIN_COMPRESSED: usize = 16;
/// zlib level 1 (zlib-rs's "quick" strategy). Level 2 made 1 KiB JSON-like echoes 15%
/// smaller on the wire (125 instead of 146 bytes) for 1.6x the server CPU per message, and
/// random bytes 1.7x (see BENCHMARKS.md).
const LEVEL: u32 = 1;
/// Inflated output grows by at most this much per step, so the bound is checked often.
const INFLATE_STEP: usize = 64 * 1024;

/// After a message that did not pay, this many next messages at most are sent as
/// [`stored`] blocks without trying (doubling from 1 while they keep not paying): a stream
/// of incompressible messages then costs one try in 64, not a compression and a reset of
/// the window (a 128 KiB memset) each. Skipping is safe: the compressor was restarted at
/// the miss and refers to nothing sent before its next message.
const MAX_SKIP: u32 = 64;

/// Appends `input` as DEFLATE stored blocks, ready to send as a compressed message:
/// each block is a header byte (not final, stored), LEN and its complement, the bytes;
/// then the header byte of the empty stored block whose `00 00 ff ff` the receiver
/// appends: 5 bytes per 64 KiB and one more. Used for what does not compress, so
/// that once the extension is agreed every message of 16 bytes or more carries RSV1
/// (kosoku, the Autobahn driver, fails an uncompressed echo then) at almost no cost.
pub fn stored(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len() + 6 * (input.len() / 0xffff + 1));
    for chunk in input.chunks(0xffff) {
        let len = chunk.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0);
}

/// One message compressed on its own (no context takeover) with a `window_bits` window,
/// as the payload of a frame with RSV1 set: what every `--shared` client that agreed that
/// window without context takeover can be sent. `None` below [`MIN_COMPRESSED`] bytes
/// (sent uncompressed, as [`super::Deflating`] does); stored blocks when compressing does
/// not pay. Builds and drops a compressor, as a client without context takeover does for
/// each message.
pub fn once(input: &[u8], window_bits: u8) -> Option<Vec<u8>> {
    if input.len() < MIN_COMPRESSED {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let params = Direction {
        no_context_takeover: true,
        window_bits,
    };
    if !Deflater::new(params).message(input, &mut out) {
        out.clear();
        stored(input, &mut out);
    }
    Some(out)
}

/// Our outgoing direction's compressor.
pub struct Deflater {
    params: Direction,
    state: Option<Box<Compress>>,
    /// Messages still to send without trying, and the next such run's length.
    skip: u32,
    backoff: u32,
}

impl Deflater {
    pub fn new(params: Direction) -> Self {
        Deflater {
            params,
            state: None,
            skip: 0,
            backoff: 0,
        }
    }

    /// Appends `input` compressed as one message to `out` (without the tail); `false` when
    /// that did not pay (random bytes: level 1 has no stored-block fallback), and `out`
    /// must not be sent: the caller sends `input` as [`stored`] blocks instead. The
    /// compressor starts afresh then, since its window has `input` in a form the peer
    /// never saw.
    pub fn message(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        let bits = self.params.window_bits.max(super::MIN_BITS);
        let c = self
            .state
            .get_or_insert_with(|| Box::new(Compress::new_with_window_bits(Compression::new(LEVEL), false, bits)));
        let start_len = out.len();
        let start_in = c.total_in();
        loop {
            let used = (c.total_in() - start_in) as usize;
            out.reserve((input.len() - used) / 2 + 64);
            // compress_vec only fails on a stream error, which a sync flush of a live
            // stream cannot produce; treat it as "no more output" all the same.
            if c.compress_vec(&input[used..], out, FlushCompress::Sync).is_err() {
                break;
            }
            let done = (c.total_in() - start_in) as usize == input.len();
            if done && out.len() < out.capacity() {
                break;
            }
        }
        if out.len() >= start_len + 4 && out.ends_with(&TAIL) {
            out.truncate(out.len() - 4);
        }
        // With context takeover a message that is about its own size still pays: it puts
        // its bytes into both windows, and the next similar message refers back to them
        // (64-byte JSON lines go from ~65 bytes to ~20). Past a few percent of growth it is
        // noise (level 1 sends random bytes 6% bigger) and goes uncompressed.
        let grown = out.len() - start_len;
        let paid = match self.params.no_context_takeover {
            true => grown < input.len(),
            false => grown <= input.len() + input.len() / 32 + 8,
        };
        if self.params.no_context_takeover {
            self.state = None;
        } else if !paid {
            c.reset();
        }
        match paid {
            true => self.backoff = 0,
            false => {
                self.backoff = (self.backoff * 2).clamp(1, MAX_SKIP);
                self.skip = self.backoff;
            }
        }
        paid
    }
}

/// The peer's direction's decompressor.
pub struct Inflater {
    params: Direction,
    state: Option<Box<Decompress>>,
}

impl Inflater {
    pub fn new(params: Direction) -> Self {
        Inflater { params, state: None }
    }

    /// Inflates one frame's payload of a compressed message onto `out`, which must not
    /// pass `limit` bytes; `fin` ends the message.
    pub fn frame(&mut self, input: &[u8], fin: bool, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        let ended = self.feed(input, out, limit)?;
        if fin {
            // After a final block the tail would be read as the start of a new stream.
            if !ended {
                self.feed(&TAIL, out, limit)?;
            }
            if self.params.no_context_takeover {
                self.state = None;
            }
        }
        Ok(())
    }

    /// Inflates `input`; `true` when it ended with a block that has BFINAL set.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<bool, InflateError> {
        let bits = self.params.window_bits.max(super::MIN_BITS);
        let d = self
            .state
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, bits)));
        let mut used = 0;
        loop {
            if out.len() > limit {
                return Err(InflateError::TooBig { max: limit });
            }
            let room = (limit + 1 - out.len()).min(INFLATE_STEP);
            let want = room.min(((input.len() - used) * 4).max(1024));
            if out.capacity() - out.len() < want {
                out.reserve_exact(want);
            }
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&input[used..], out, FlushDecompress::None)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            used += (d.total_in() - in0) as usize;
            let made = d.total_out() - out0;
            if status == Status::StreamEnd {
                // A block with BFINAL set ends the stream (RFC 7692 §7.2.3.4): start a new
                // one for what follows, unless that is only the tail.
                **d = Decompress::new_with_window_bits(false, bits);
                if used == input.len() {
                    return Ok(true);
                }
                continue;
            }
            if out.len() > limit {
                return Err(InflateError::TooBig { max: limit });
            }
            if used == input.len() && out.len() < out.capacity() {
                break;
            }
            if made == 0 && (d.total_in() - in0) == 0 && out.len() < out.capacity() {
                return Err(InflateError::Corrupt("no progress".into()));
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,000 bytes that do not compress (a linear congruential generator from `seed`).
    fn noise(seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..1000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect()
    }

    fn dir(no_context_takeover: bool, window_bits: u8) -> Direction {
        Direction {
            no_context_takeover,
            window_bits,
        }
    }

    fn round(d: &mut Deflater, i: &mut Inflater, msg: &[u8]) -> Vec<u8> {
        let mut z = Vec::new();
        if !d.message(msg, &mut z) {
            z.clear();
            stored(msg, &mut z);
        }
        let mut out = Vec::new();
        i.frame(&z, true, &mut out, 1 << 20).unwrap();
        out
    }

    #[test]
    fn messages_round_trip_with_and_without_context_takeover() {
        for (nct, bits) in [(false, 15), (true, 15), (false, 9), (true, 9), (false, 8)] {
            let mut d = Deflater::new(dir(nct, bits));
            let mut i = Inflater::new(dir(nct, bits));
            for n in [0, 1, 100, 5000, 70_000] {
                let msg: Vec<u8> = (0..n).map(|k| (k % 251) as u8 ^ (k / 7) as u8).collect();
                assert_eq!(round(&mut d, &mut i, &msg), msg, "nct={nct} bits={bits} n={n}");
            }
        }
    }

    #[test]
    fn context_takeover_makes_a_repeat_smaller() {
        let msg = &br#"{"id":12345,"name":"sensor-7","temperature":21.5,"humidity":40}"#.repeat(2);
        let mut keep = Deflater::new(dir(false, 15));
        let mut reset = Deflater::new(dir(true, 15));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(keep.message(msg, &mut a));
        a.clear();
        assert!(keep.message(msg, &mut a));
        assert!(reset.message(msg, &mut b));
        b.clear();
        assert!(reset.message(msg, &mut b));
        assert!(a.len() < b.len() / 2, "{} vs {}", a.len(), b.len());
        assert!(reset.state.is_none());
    }

    #[test]
    fn stored_blocks_inflate_in_any_window_state() {
        let mut d = Deflater::new(dir(false, 15));
        let mut i = Inflater::new(dir(false, 15));
        let text = b"context first, context first, context first".to_vec();
        assert_eq!(round(&mut d, &mut i, &text), text);
        for n in [0usize, 1, 1000, 0xffff, 0x10000, 200_000] {
            let data: Vec<u8> = (0..n).map(|k| (k * 7 + k / 3) as u8).collect();
            let mut z = Vec::new();
            stored(&data, &mut z);
            assert_eq!(z.len(), n + 5 * n.div_ceil(0xffff) + 1, "{n}");
            let mut out = Vec::new();
            i.frame(&z, true, &mut out, 1 << 20).unwrap();
            assert_eq!(out, data, "{n}");
        }
        // A compressor that starts afresh (as one does after a message that did not pay)
        // is understood after them; one that kept its window would refer to the wrong
        // bytes, which is why `message` restarts it when it returns false.
        let mut fresh = Deflater::new(dir(false, 15));
        assert_eq!(round(&mut fresh, &mut i, &text), text);
    }

    #[test]
    fn once_matches_a_fresh_deflater_and_leaves_tiny_messages_alone() {
        let text = br#"{"id":1,"sensor":"temp-3","value":21.37,"unit":"C","ok":true}"#.repeat(8);
        for bits in [9, 12, 15] {
            let mut z = Vec::new();
            assert!(Deflater::new(dir(true, bits)).message(&text, &mut z));
            assert_eq!(once(&text, bits).unwrap(), z, "{bits}");
            let mut out = Vec::new();
            Inflater::new(dir(true, bits))
                .frame(&z, true, &mut out, 1 << 20)
                .unwrap();
            assert_eq!(out, text);
        }
        assert_eq!(once(&text[..MIN_COMPRESSED - 1], 15), None);
        assert!(once(&text[..MIN_COMPRESSED], 15).is_some());
        // What does not compress goes in stored blocks, still for RSV1.
        let noise = noise(7);
        let mut z = Vec::new();
        stored(&noise, &mut z);
        assert_eq!(once(&noise, 15).unwrap(), z);
    }

    #[test]
    fn empty_message_is_one_byte() {
        let mut z = Vec::new();
        assert!(!Deflater::new(dir(true, 15)).message(b"", &mut z));
        assert_eq!(z, [0]);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut c = Compress::new(Compression::best(), false);
        let mut z = Vec::with_capacity(64 << 10);
        c.compress_vec(&vec![b'a'; 10 << 20], &mut z, FlushCompress::Sync)
            .unwrap();
        assert!(z.len() < 20_000, "{}", z.len());
        let mut out = Vec::new();
        let e = Inflater::new(dir(true, 15))
            .frame(&z, true, &mut out, 100_000)
            .unwrap_err();
        assert!(matches!(e, InflateError::TooBig { max: 100_000 }));
        assert!(out.capacity() < 100_000 + 2 * INFLATE_STEP, "{}", out.capacity());
    }

    #[test]
    fn garbage_does_not_inflate() {
        let mut out = Vec::new();
        let e = Inflater::new(dir(false, 15)).frame(&[0xff, 0xff, 0xff, 0xff], true, &mut out, 1000);
        assert!(matches!(e, Err(InflateError::Corrupt(_))), "{e:?}");
    }

    #[test]
    fn fragments_inflate_across_frames() {
        let msg = b"hello hello hello hello, fragmented world".repeat(20);
        let mut z = Vec::new();
        assert!(Deflater::new(dir(false, 15)).message(&msg, &mut z));
        let mut i = Inflater::new(dir(false, 15));
        let mut out = Vec::new();
        let mut chunks = z.chunks(7).peekable();
        while let Some(c) = chunks.next() {
            i.frame(c, chunks.peek().is_none(), &mut out, 1 << 20).unwrap();
        }
        assert_eq!(out, msg);
    }

    #[test]
    fn a_final_block_ends_the_stream_and_the_next_message_inflates() {
        // "a" as one fixed-Huffman block with BFINAL set (what some senders do).
        let mut c = Compress::new(Compression::fast(), false);
        let mut z = Vec::with_capacity(64);
        c.compress_vec(b"abc", &mut z, FlushCompress::Finish).unwrap();
        let mut i = Inflater::new(dir(false, 15));
        let mut out = Vec::new();
        i.frame(&z, true, &mut out, 100).unwrap();
        assert_eq!(out, b"abc");
        let mut d = Deflater::new(dir(true, 15));
        assert_eq!(round(&mut d, &mut i, b"next"), b"next");
    }

    #[test]
    fn tiny_messages_do_not_pay() {
        for n in [1, 8, 15] {
            let msg: Vec<u8> = (0..n as u8).collect();
            let mut z = Vec::new();
            Deflater::new(dir(true, 15)).message(&msg, &mut z);
            assert!(z.len() + 2 >= msg.len(), "{n}: {}", z.len());
        }
    }

    #[test]
    fn incompressible_messages_go_as_they_are_and_the_window_restarts() {
        let mut d = Deflater::new(dir(false, 15));
        let mut i = Inflater::new(dir(false, 15));
        let text = b"some text that repeats, some text that repeats, some text".to_vec();
        assert_eq!(round(&mut d, &mut i, &text), text);
        let noise = noise(1);
        let mut z = Vec::new();
        assert!(!d.message(&noise, &mut z));
        // The next one is not even tried (it goes in stored blocks).
        assert!(!d.message(&text, &mut Vec::new()));
        // The peer never saw `noise`; the next message must not refer back to it.
        let mut again = noise[..500].to_vec();
        again.extend_from_slice(&text.repeat(10));
        let mut z = Vec::new();
        assert!(d.message(&again, &mut z));
        let mut out = Vec::new();
        i.frame(&z, true, &mut out, 1 << 20).unwrap();
        assert_eq!(out, again);
    }
}
