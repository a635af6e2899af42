//! The frame bytes [`super::stream`] reads and writes: RFC 6455 §5.2 headers parsed and
//! written, masking, and the byte buffer both directions use. Pure, no I/O.

pub(super) const OP_CONT: u8 = 0;
pub(super) const OP_TEXT: u8 = 1;
pub(super) const OP_BINARY: u8 = 2;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
    /// Bytes of the header itself.
    pub size: usize,
}

/// Parses the header at the start of `b`; `None` until it is all there.
pub(super) fn parse_head(b: &[u8]) -> Option<Head> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    let (len, mut size) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as u64, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (n as u64, 2),
    };
    let mask = match b1 & 0x80 != 0 {
        true => {
            let m: [u8; 4] = b.get(size..size + 4)?.try_into().ok()?;
            size += 4;
            Some(m)
        }
        false => None,
    };
    Some(Head {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        mask,
        len,
        size,
    })
}

/// Appends a header (RSV2 and RSV3 clear).
pub(super) fn put_head(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: u8, mask: Option<[u8; 4]>, len: usize) {
    out.push(u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(m | len as u8),
        126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

pub(super) fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A byte buffer filled at the back and read from the front. `data` stays initialised
/// up to its length, so reads go straight into it.
#[derive(Default)]
pub(super) struct Buf {
    pub(super) data: Vec<u8>,
    pub(super) start: usize,
    end: usize,
}

impl Buf {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
    pub(super) fn len(&self) -> usize {
        self.end - self.start
    }
    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            // Nothing kept between messages: an idle connection holds no buffer here.
            *self = Buf::default();
        }
    }
    /// Room for at least `n` more bytes after `end`.
    pub(super) fn make_room(&mut self, n: usize) {
        if self.data.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < n {
            self.data.resize(self.end + n, 0);
        }
    }
    pub(super) fn push(&mut self, b: &[u8]) {
        // Appending, not zero-filling and then copying: the bytes after `end` are spare.
        self.data.truncate(self.end);
        self.data.extend_from_slice(b);
        self.end = self.data.len();
    }
    /// The free space after `end`; [`Buf::filled`] says how much of it was written.
    pub(super) fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }
    pub(super) fn filled(&mut self, n: usize) {
        self.end += n;
    }
}
