//! Text from outside put into a log line: a program's (or CGI script's) stderr, and any
//! other free text a program or client chooses. It owns one rule, [`Escaped`]: control
//! characters are written as escapes, so nothing a program prints can move the cursor,
//! recolour, retitle or ring the operator's terminal, or hide a line in a log file. Pure
//! logic, no I/O.
//!
//! Only the log sees the escapes: what is relayed to a client (`--passstderr`) stays the
//! bytes the program wrote. Message payloads (`--loglevel=trace`) are shown the same way,
//! cut at [`PAYLOAD_BYTES`] ([`Payload`]).

use std::fmt;

/// The most of a message's payload a `--loglevel=trace` line shows.
pub const PAYLOAD_BYTES: usize = 256;

/// Displays a `&str` with every control character (`char::is_control`: C0, DEL and C1)
/// escaped as [`char::escape_default`] writes it (`\t`, `\r`, `\n`, `\u{1b}`, `\u{7f}`,
/// `\u{9b}`), and everything else, backslashes and quotes included, as it is, so an
/// ordinary line reads the same. A backslash is not escaped, so `\u{1b}` in the log may
/// also be those six characters as written; the log is for reading, not for decoding.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut plain_from = 0;
        for (at, c) in s.char_indices() {
            if c.is_control() {
                f.write_str(&s[plain_from..at])?;
                write!(f, "{}", c.escape_default())?;
                plain_from = at + c.len_utf8();
            }
        }
        f.write_str(&s[plain_from..])
    }
}

/// Displays the first [`PAYLOAD_BYTES`] of a message payload (cut at a character
/// boundary when it is UTF-8): UTF-8 as [`Escaped`], any other byte as `\xNN`, and `…`
/// when the payload was longer.
pub struct Payload<'a>(pub &'a [u8]);

impl fmt::Display for Payload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let mut end = b.len().min(PAYLOAD_BYTES);
        // Back off to the start of a UTF-8 sequence cut by the bound (at most 3 bytes).
        if end < b.len() {
            let start = end;
            while end > start.saturating_sub(3) && end > 0 && b[end] & 0xC0 == 0x80 {
                end -= 1;
            }
            if b[end] & 0xC0 == 0x80 {
                end = start; // not UTF-8 here: cut at the bound
            }
        }
        for chunk in b[..end].utf8_chunks() {
            Escaped(chunk.valid()).fmt(f)?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        if end < b.len() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Escaped, Payload, PAYLOAD_BYTES};

    fn esc(s: &str) -> String {
        Escaped(s).to_string()
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        for s in ["", "hello", r#"a "quoted" \path\ it's"#, "ünïcødé → ✓", "100% {x}"] {
            assert_eq!(esc(s), s);
        }
    }

    #[test]
    fn terminal_escapes_are_shown_not_sent() {
        assert_eq!(esc("\x1b[31mRED\x1b[0m"), r"\u{1b}[31mRED\u{1b}[0m");
        assert_eq!(esc("bell\x07"), r"bell\u{7}");
        assert_eq!(esc("\x1b]0;title\x07"), r"\u{1b}]0;title\u{7}");
    }

    #[test]
    fn every_control_character_is_escaped() {
        assert_eq!(esc("a\tb\rc\nd"), r"a\tb\rc\nd");
        assert_eq!(esc("\0\x08\x7f"), r"\u{0}\u{8}\u{7f}");
        // C1, which some terminals take as ESC + a letter (U+009B is CSI).
        assert_eq!(esc("\u{85}\u{9b}31m"), r"\u{85}\u{9b}31m");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let e = esc(&c.to_string());
            assert!(e.starts_with('\\') && !e.chars().any(char::is_control), "{c:?} → {e}");
        }
    }

    #[test]
    fn printable_neighbours_of_controls_are_kept() {
        assert_eq!(esc(" ~\u{a0}\u{ff}"), " ~\u{a0}\u{ff}");
    }

    #[test]
    fn payloads_are_escaped_and_cut() {
        let p = |b: &[u8]| Payload(b).to_string();
        assert_eq!(p(b"hi\x1b[0m"), r"hi\u{1b}[0m");
        assert_eq!(p(b"\x00\xff ok"), r"\u{0}\xff ok");
        let long = "x".repeat(PAYLOAD_BYTES + 10);
        assert_eq!(p(long.as_bytes()), format!("{}…", "x".repeat(PAYLOAD_BYTES)));
        // A cut inside a character backs off to its start.
        let mut s = "x".repeat(PAYLOAD_BYTES - 1);
        s.push('é');
        assert_eq!(p(s.as_bytes()), format!("{}…", "x".repeat(PAYLOAD_BYTES - 1)));
        assert_eq!(p(&[0x80; PAYLOAD_BYTES + 1]).matches(r"\x80").count(), PAYLOAD_BYTES);
    }
}
