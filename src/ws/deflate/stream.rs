//! [`Deflating`]: a transport under tungstenite that speaks permessage-deflate on the
//! wire and plain RFC 6455 frames to tungstenite.
//!
//! Reading, it parses the frame headers of the raw stream. Frames that are not part of a
//! compressed message pass through untouched (RSV1 on a control frame or a continuation
//! frame too, so tungstenite refuses them: 1002). A compressed message's frames are read
//! whole, unmasked, inflated within `--maxframesize` for the whole message, and handed on
//! with RSV1 clear (a server hands them masked with a zero key, so tungstenite's mask rule
//! still holds). An inflate failure is an `io::Error` carrying [`InflateError`], which the
//! relay maps to 1009 or 1007; the write side keeps working, so the Close still goes out.
//!
//! Writing, it parses the frames tungstenite writes: a whole text or binary message of at
//! least [`MIN_COMPRESSED`] bytes is compressed (or put in stored blocks when that does not
//! pay) and sent with RSV1; everything else (control
//! frames, fragments, frames that already carry RSV1) passes through.
//!
//! For `--connect` it is put under tungstenite's client handshake ([`Deflating::client`]):
//! it passes the request through and hands tungstenite the response head and nothing after
//! it, then takes the negotiated parameters from [`Negotiated`] before the first frame.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::codec::{stored, Deflater, Inflater, MIN_COMPRESSED};
use super::frame::{apply_mask, parse_head, put_head, Buf, Head, OP_BINARY, OP_CONT, OP_TEXT};
use super::Agreed;
use crate::error::InflateError;

/// Raw bytes read at a time (buffers are freed whenever they empty).
const READ_CHUNK: usize = 4 * 1024;
/// Bytes waiting for the socket above which writes push back.
const WRITE_HIGH: usize = 64 * 1024;
/// A response head longer than this is handed over as it is (tungstenite refuses it).
const MAX_HEAD: usize = 16 * 1024;

/// Where a [`Deflating::client`] transport is in the HTTP handshake.
enum Phase {
    /// Handing tungstenite the response head.
    Head(Arc<Negotiated>),
    /// The head went up; the next poll takes the negotiated parameters.
    Switching(Arc<Negotiated>),
    Frames,
}

/// The result of `--connect`'s negotiation, set between tungstenite's handshake and the
/// first frame: `Some` when the server accepted the offer.
#[derive(Default)]
pub struct Negotiated(OnceLock<Option<Agreed>>);

impl Negotiated {
    pub fn settle(&self, agreed: Option<Agreed>) {
        // Set once per connection; a second call changes nothing.
        let _ = self.0.set(agreed);
    }
}

/// See the module documentation.
pub struct Deflating<T> {
    inner: T,
    phase: Phase,
    /// No extension: pass everything (a `--connect` whose server declined).
    off: bool,
    server: bool,
    max: usize,
    // Read side.
    raw: Buf,
    ready: Buf,
    pass_in: u64,
    eof: bool,
    /// Inside a compressed message: its inflated bytes so far.
    inflating: Option<usize>,
    failed: Option<InflateError>,
    inflater: Inflater,
    scratch: Vec<u8>,
    // Write side.
    wraw: Buf,
    wout: Buf,
    pass_out: u64,
    fragmented: bool,
    deflater: Deflater,
}

impl<T> Deflating<T> {
    fn new(inner: T, server: bool, agreed: Agreed, max: usize, phase: Phase) -> Self {
        Deflating {
            inner,
            phase,
            off: false,
            server,
            max,
            raw: Buf::default(),
            ready: Buf::default(),
            pass_in: 0,
            eof: false,
            inflating: None,
            failed: None,
            inflater: Inflater::new(agreed.theirs),
            scratch: Vec::new(),
            wraw: Buf::default(),
            wout: Buf::default(),
            pass_out: 0,
            fragmented: false,
            deflater: Deflater::new(agreed.ours),
        }
    }

    /// A server's transport once the 101 with the extension was sent.
    pub fn server(inner: T, agreed: Agreed, max: usize) -> Self {
        Self::new(inner, true, agreed, max, Phase::Frames)
    }

    /// A client's transport before its handshake: `shake` gets the negotiated parameters
    /// once the response is checked (`agreed` until then is a placeholder).
    pub fn client(inner: T, max: usize, shake: Arc<Negotiated>) -> Self {
        let placeholder = super::Direction {
            no_context_takeover: true,
            window_bits: 15,
        };
        let agreed = Agreed {
            ours: placeholder,
            theirs: placeholder,
        };
        Self::new(inner, false, agreed, max, Phase::Head(shake))
    }

    /// After the response head went up: take what the handshake settled (not yet
    /// settled: stay, and keep what arrives until it is).
    fn switch(&mut self) {
        if let Phase::Switching(shake) = &self.phase {
            let Some(settled) = shake.0.get() else { return };
            match *settled {
                Some(agreed) => {
                    self.inflater = Inflater::new(agreed.theirs);
                    self.deflater = Deflater::new(agreed.ours);
                }
                None => self.off = true,
            }
            self.phase = Phase::Frames;
        }
    }
}

impl<T: AsyncRead + Unpin> Deflating<T> {
    /// Reads more raw bytes; `false` at EOF. With nothing buffered it reads onto the
    /// stack first, so a connection waiting for its next frame holds no buffer.
    fn fill(&mut self, cx: &mut Context<'_>, at_least: usize) -> Poll<io::Result<bool>> {
        if self.raw.len() == 0 && at_least <= READ_CHUNK {
            let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
            self.raw.push(rb.filled());
            return Poll::Ready(Ok(!rb.filled().is_empty()));
        }
        self.raw.make_room(at_least.max(READ_CHUNK));
        let mut rb = ReadBuf::new(self.raw.spare());
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.raw.filled(n);
        ready!(r)?;
        Poll::Ready(Ok(n > 0))
    }

    /// Inflates the compressed frame at the front of `raw` (all there) into `ready`.
    fn inflate_frame(&mut self, head: Head) -> Result<(), InflateError> {
        let so_far = self.inflating.unwrap_or(0);
        let end = head.size + head.len as usize;
        let start = self.raw.start;
        let payload = &mut self.raw.data[start + head.size..start + end];
        if let Some(m) = head.mask {
            apply_mask(payload, m);
        }
        self.scratch.clear();
        let r = self
            .inflater
            .frame(payload, head.fin, &mut self.scratch, self.max - so_far);
        self.raw.consume(end);
        r?;
        let n = self.scratch.len();
        let mask = self.server.then_some([0; 4]);
        let opcode = if self.inflating.is_some() { OP_CONT } else { head.opcode };
        let mut h = Vec::with_capacity(14);
        put_head(&mut h, head.fin, false, opcode, mask, n);
        self.ready.push(&h);
        self.ready.push(&self.scratch);
        self.scratch = Vec::new();
        self.inflating = (!head.fin).then_some(so_far + n);
        Ok(())
    }
}

fn fail(e: &InflateError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.clone())
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Deflating<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.switch();
        loop {
            if this.ready.len() > 0 {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.bytes()[..n]);
                this.ready.consume(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(fail(e)));
            }
            if matches!(this.phase, Phase::Switching(_)) {
                // tungstenite read on before the outcome was settled: buffer, hand nothing.
                if this.eof {
                    return Poll::Ready(Ok(()));
                }
                this.eof = !ready!(this.fill(cx, 0))?;
                this.switch();
                continue;
            }
            if let Phase::Head(shake) = &this.phase {
                if let Some(end) = this.raw.bytes().windows(4).position(|w| w == b"\r\n\r\n") {
                    let Deflating { raw, ready, .. } = this;
                    ready.push(&raw.bytes()[..end + 4]);
                    raw.consume(end + 4);
                    this.phase = Phase::Switching(Arc::clone(shake));
                    continue;
                }
                if this.raw.len() > MAX_HEAD || this.eof {
                    let n = this.raw.len();
                    let Deflating { raw, ready, .. } = this;
                    ready.push(raw.bytes());
                    raw.consume(n);
                    this.phase = Phase::Frames;
                    this.off = true;
                    if n > 0 {
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                this.eof = !ready!(this.fill(cx, 0))?;
                continue;
            }
            if this.pass_in > 0 || this.off {
                if this.raw.len() > 0 {
                    let n = this.raw.len().min(buf.remaining());
                    let n = if this.off { n } else { n.min(this.pass_in as usize) };
                    buf.put_slice(&this.raw.bytes()[..n]);
                    this.raw.consume(n);
                    this.pass_in = this.pass_in.saturating_sub(n as u64);
                    return Poll::Ready(Ok(()));
                }
                if this.eof {
                    return Poll::Ready(Ok(()));
                }
                this.eof = !ready!(this.fill(cx, 0))?;
                continue;
            }
            let head = match parse_head(this.raw.bytes()) {
                Some(h) => h,
                None if this.eof => {
                    // A cut-off header: hand it over as it is, then EOF.
                    this.pass_in = this.raw.len() as u64;
                    if this.pass_in == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
                None => {
                    this.eof = !ready!(this.fill(cx, 0))?;
                    continue;
                }
            };
            let data_start = matches!(head.opcode, OP_TEXT | OP_BINARY) && head.rsv1 && this.inflating.is_none();
            let data_more = head.opcode == OP_CONT && !head.rsv1 && this.inflating.is_some();
            if !(data_start || data_more) {
                this.pass_in = head.size as u64 + head.len;
                continue;
            }
            if head.len > (this.max - this.inflating.unwrap_or(0)) as u64 {
                let e = InflateError::TooBig { max: this.max };
                this.failed = Some(e.clone());
                return Poll::Ready(Err(fail(&e)));
            }
            let whole = head.size + head.len as usize;
            if this.raw.len() < whole {
                if this.eof {
                    this.pass_in = this.raw.len() as u64;
                    continue;
                }
                let missing = whole - this.raw.len();
                this.eof = !ready!(this.fill(cx, missing))?;
                continue;
            }
            if let Err(e) = this.inflate_frame(head) {
                this.failed = Some(e.clone());
                return Poll::Ready(Err(fail(&e)));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Deflating<T> {
    /// Writes what is queued; `Pending` until all of it went.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wout.len() > 0 {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, self.wout.bytes()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wout.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Moves the complete frames in `wraw` to `wout`, compressing whole data messages.
    fn process(&mut self) {
        loop {
            if self.pass_out > 0 {
                let n = (self.pass_out.min(self.wraw.len() as u64)) as usize;
                if n == 0 {
                    return;
                }
                self.wout.push(&self.wraw.bytes()[..n]);
                self.wraw.consume(n);
                self.pass_out -= n as u64;
                continue;
            }
            let Some(head) = parse_head(self.wraw.bytes()) else {
                return;
            };
            let whole = head.size as u64 + head.len;
            let message = matches!(head.opcode, OP_TEXT | OP_BINARY);
            let compress = message && head.fin && !head.rsv1 && !self.fragmented && head.len >= MIN_COMPRESSED as u64;
            if message && !head.fin {
                self.fragmented = true;
            } else if head.opcode == OP_CONT && head.fin {
                self.fragmented = false;
            }
            if !compress {
                self.pass_out = whole;
                continue;
            }
            if (self.wraw.len() as u64) < whole {
                return;
            }
            let start = self.wraw.start;
            let payload = &mut self.wraw.data[start + head.size..start + whole as usize];
            if let Some(m) = head.mask {
                apply_mask(payload, m);
            }
            self.scratch_out(head, whole as usize);
        }
    }

    /// Sends the (unmasked) whole frame at the front of `wraw` compressed, or in stored
    /// blocks when compressing does not pay.
    fn scratch_out(&mut self, head: Head, whole: usize) {
        let start = self.wraw.start;
        let mut z = Vec::with_capacity(head.len as usize / 2 + 64);
        let payload = &self.wraw.data[start + head.size..start + whole];
        if !self.deflater.message(payload, &mut z) {
            z.clear();
            stored(payload, &mut z);
        }
        if let Some(m) = head.mask {
            apply_mask(&mut z, m);
        }
        let mut h = Vec::with_capacity(14);
        put_head(&mut h, true, true, head.opcode, head.mask, z.len());
        self.wout.push(&h);
        self.wout.push(&z);
        self.wraw.consume(whole);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Deflating<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.switch();
        if !matches!(this.phase, Phase::Frames) || this.off {
            // The handshake request, or no extension: straight through.
            ready!(this.drain(cx))?;
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.wout.len() >= WRITE_HIGH {
            ready!(this.drain(cx))?;
        }
        this.wraw.push(data);
        this.process();
        // Start sending now; whatever is left goes on the next write or flush.
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
