//! Mapping a request path onto a directory without ever leaving it, shared by
//! `--staticdir`, `--cgidir` and `--dir`. It owns the path rules, not what is done with
//! the file found (that is [`crate::statics`], [`crate::cgi`] and [`crate::ws`]).
//!
//! The rules, applied to the raw (still percent-encoded) path: it is split on `/`, and each
//! segment is percent-decoded exactly once. A segment is refused when it decodes to
//! something containing `/`, `\` or NUL (so `%2f`, `%5c` and `%00` cannot smuggle a
//! separator), or when it starts with `.` (this refuses `.`, `..`, `%2e%2e` and every
//! dotfile or dot-directory such as `.git` or `.env`), or when it is empty anywhere but at
//! the end (`//`). Nothing is cleaned or redirected: a path is served as it is or refused.
//! Whatever the walk finds is then canonicalized and must still lie inside the directory,
//! which stops symlinks that point out of it. The file system calls are a few `stat`s and
//! one `realpath` per request, done inline.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::env::percent_decode;

/// A request path split into safe, decoded segments.
#[derive(Debug, PartialEq, Eq)]
pub struct Segments {
    pub parts: Vec<Vec<u8>>,
    /// The path ended with `/` (a directory was asked for).
    pub trailing_slash: bool,
}

/// Splits and checks `raw_path` (as in the request line, without the query). `None` means
/// the path is refused (answer 404).
pub fn segments(raw_path: &str) -> Option<Segments> {
    let rest = raw_path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Segments {
            parts: Vec::new(),
            trailing_slash: true,
        });
    }
    let raw: Vec<&str> = rest.split('/').collect();
    let last = raw.len() - 1;
    let mut parts = Vec::with_capacity(raw.len());
    for (i, seg) in raw.iter().enumerate() {
        if seg.is_empty() {
            if i == last {
                break;
            }
            return None;
        }
        let decoded = percent_decode(seg.as_bytes());
        if decoded.starts_with(b".") || decoded.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) {
            return None;
        }
        parts.push(decoded);
    }
    Some(Segments {
        trailing_slash: raw[last].is_empty(),
        parts,
    })
}

/// What walking the segments under a directory found.
#[derive(Debug, PartialEq, Eq)]
pub enum Walk {
    /// The first segment that names a regular file; `used` segments lead to it and the
    /// rest are extra path (CGI's and `--dir`'s `PATH_INFO`). `file` is canonical.
    File { file: PathBuf, used: usize },
    /// Every segment is a directory; canonical.
    Dir(PathBuf),
    /// Missing, not a file or directory, or outside the root (through a symlink).
    Missing,
}

/// Walks `parts` under `root` (which must be canonical), stopping at the first regular
/// file.
pub fn walk(root: &Path, parts: &[Vec<u8>]) -> Walk {
    let mut p = root.to_path_buf();
    for (i, seg) in parts.iter().enumerate() {
        p.push(OsStr::from_bytes(seg));
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => continue,
            Ok(m) if m.is_file() => {
                return match confine(root, &p) {
                    Some(file) => Walk::File { file, used: i + 1 },
                    None => Walk::Missing,
                }
            }
            _ => return Walk::Missing,
        }
    }
    match confine(root, &p) {
        Some(dir) => Walk::Dir(dir),
        None => Walk::Missing,
    }
}

/// `p` canonicalized, if that is still inside `root`.
pub fn confine(root: &Path, p: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(p).ok()?;
    real.starts_with(root).then_some(real)
}

/// The URL path of the first `used` segments, decoded: `/sub/info.sh`.
pub fn url_path(parts: &[Vec<u8>], used: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for seg in &parts[..used] {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Option<Vec<String>> {
        segments(p).map(|s| s.parts.into_iter().map(|p| String::from_utf8(p).unwrap()).collect())
    }

    #[test]
    fn traversal_and_smuggled_separators_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E%2E%2Fx",
            "/..%2fx",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
            "//etc/passwd",
            "/a//b",
            "/.env",
            "/sub/.git/config",
            "/.",
            "relative",
            "",
        ] {
            assert_eq!(segs(bad), None, "{bad}");
        }
    }

    #[test]
    fn ordinary_paths_decode_once() {
        assert_eq!(segs("/"), Some(vec![]));
        assert_eq!(segs("/a%20b/c.txt"), Some(vec!["a b".into(), "c.txt".into()]));
        assert_eq!(segs("/a%252e/"), Some(vec!["a%2e".into()]));
        assert!(segments("/sub/").unwrap().trailing_slash);
        assert!(!segments("/sub").unwrap().trailing_slash);
        assert_eq!(url_path(&[b"a".to_vec(), b"b c".to_vec()], 2), b"/a/b c");
    }

    #[test]
    fn walk_stops_at_the_first_file_and_confines_symlinks() {
        let root = std::env::temp_dir().join(format!("wsbridge-route-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let parts = |p: &str| segments(p).unwrap().parts;
        assert_eq!(
            walk(&root, &parts("/d/f/x/y")),
            Walk::File {
                file: root.join("d/f"),
                used: 2
            }
        );
        assert_eq!(walk(&root, &parts("/d/")), Walk::Dir(root.join("d")));
        assert_eq!(walk(&root, &parts("/d/missing")), Walk::Missing);
        assert_eq!(walk(&root, &parts("/out/passwd")), Walk::Missing);
        assert_eq!(walk(&root, &parts("/out/")), Walk::Missing);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
