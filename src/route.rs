//! Mapping a request path onto a directory without ever leaving it, shared by
//! `--staticdir`, `--cgidir` and `--dir`. It owns the path rules and the opening of what a
//! path names, not what is done with the file found (that is [`crate::statics`],
//! [`crate::cgi`] and [`crate::ws`]).
//!
//! The rules, applied to the raw (still percent-encoded) path: it is split on `/`, and each
//! segment is percent-decoded exactly once. A segment is refused when it decodes to
//! something containing `/`, `\` or NUL (so `%2f`, `%5c` and `%00` cannot smuggle a
//! separator), or when it starts with `.` (this refuses `.`, `..`, `%2e%2e` and every
//! dotfile or dot-directory such as `.git` or `.env`), or when it is empty anywhere but at
//! the end (`//`). Nothing is cleaned or redirected: a path is served as it is or refused.
//!
//! Checking and using are one step, so a file swapped for a symlink between the two
//! cannot lead out of the directory. Every lookup is one `openat2` from the root's
//! descriptor with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` (Linux ≥ 5.6): symlinks that
//! stay inside the directory work, any that leads out (or is absolute) is refused by the
//! kernel during that same lookup. A static file is then served from the descriptor that
//! was opened, and a program is run from its opened descriptor ([`Script`];
//! [`crate::child`] executes that descriptor, `#!` scripts included). On kernels without
//! `openat2` (before 5.6; also forced with `WSBRIDGE_NO_OPENAT2=1`) the lookup walks one
//! component at a time from the root with `O_NOFOLLOW`, which refuses every symlink, even
//! one that stays inside. The file system calls are a few `openat2`/`fstat` per request,
//! done inline.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::net::percent_decode;

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

/// What a static-file lookup found.
#[derive(Debug)]
pub enum Static {
    /// A regular file, open for reading, and its real path.
    File(File, PathBuf),
    /// A directory: `rel` is its path under the root.
    Dir(PathBuf),
    /// A regular file the server may not read (answer 403).
    Denied,
    /// Missing, not a regular file or directory, or outside the root.
    Missing,
}

/// Opens the file or directory `parts` name under `root` (canonical) for serving.
pub fn open_static(root: &Path, parts: &[Vec<u8>]) -> Static {
    let Ok(root_fd) = open_root(root) else {
        return Static::Missing;
    };
    open_static_at(root, root_fd.as_fd(), &join(parts))
}

/// Opens `index.html` in the directory [`open_static`] found at `rel`.
pub fn open_index(root: &Path, rel: &Path) -> Static {
    let Ok(root_fd) = open_root(root) else {
        return Static::Missing;
    };
    match open_static_at(root, root_fd.as_fd(), &rel.join("index.html")) {
        Static::Dir(_) => Static::Missing,
        other => other,
    }
}

fn open_static_at(root: &Path, root_fd: BorrowedFd<'_>, rel: &Path) -> Static {
    // O_NONBLOCK: opening a FIFO swapped in must not block the server.
    let read = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
    let fd = match open_beneath(root_fd, rel, read) {
        Ok(fd) => fd,
        // A directory may be searchable without being readable; a file may be unreadable.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            return match open_beneath(root_fd, rel, OFlag::O_PATH).map(|fd| kind(&fd)) {
                Ok(Some(SFlag::S_IFDIR)) => Static::Dir(rel.to_path_buf()),
                Ok(Some(SFlag::S_IFREG)) => Static::Denied,
                _ => Static::Missing,
            }
        }
        Err(_) => return Static::Missing,
    };
    match kind(&fd) {
        Some(SFlag::S_IFREG) => match real_path(root, rel, &fd) {
            Some(path) => Static::File(File::from(fd), path),
            None => Static::Missing,
        },
        Some(SFlag::S_IFDIR) => Static::Dir(rel.to_path_buf()),
        _ => Static::Missing,
    }
}

/// A program found under a root, opened: what runs is this descriptor.
#[derive(Debug)]
pub struct Script {
    /// The program (`O_PATH`).
    pub file: OwnedFd,
    /// The directory that holds it, opened beneath the root (`O_PATH`): CGI's working
    /// directory.
    pub dir: OwnedFd,
    /// The program's name in that directory.
    pub name: OsString,
    /// Its real path: `SCRIPT_FILENAME`, `argv[0]`, logs.
    pub path: PathBuf,
    /// How many segments lead to it; the rest are extra path (`PATH_INFO`).
    pub used: usize,
}

impl Script {
    /// Whether wsbridge may execute it. (Only the answer depends on this: a file swapped
    /// in afterwards is not what runs.)
    pub fn is_executable(&self) -> bool {
        nix::unistd::faccessat(
            self.dir.as_fd(),
            self.name.as_os_str(),
            nix::unistd::AccessFlags::X_OK,
            AtFlags::empty(),
        )
        .is_ok()
    }
}

impl Script {
    /// The program opened for reading (its `#!` line): the file the descriptor pins,
    /// reopened through `/proc/self/fd`, or where `/proc` is not mounted its directory
    /// entry, used only if it is still that same file.
    pub fn open_read(&self) -> io::Result<File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let proc = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let fd = match nix::fcntl::open(proc.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                let fd = nix::fcntl::openat(
                    self.dir.as_fd(),
                    self.name.as_os_str(),
                    flags | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )?;
                let (a, b) = (fstat(&fd)?, fstat(&self.file)?);
                if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
                    return Err(io::Error::from(Errno::ESTALE));
                }
                fd
            }
            Err(e) => return Err(e.into()),
        };
        Ok(File::from(fd))
    }
}

/// Walks `parts` under `root` (canonical) to the first segment that is a regular file:
/// the program (CGI's and `--dir`'s mapping). `None` when there is none, or it is
/// outside the root, or it changed while being looked up.
pub fn find_script(root: &Path, parts: &[Vec<u8>]) -> Option<Script> {
    let root_fd = open_root(root).ok()?;
    let mut rel = PathBuf::new();
    for (i, seg) in parts.iter().enumerate() {
        rel.push(OsStr::from_bytes(seg));
        let fd = open_beneath(root_fd.as_fd(), &rel, OFlag::O_PATH).ok()?;
        let st = fstat(&fd).ok()?;
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => continue,
            SFlag::S_IFREG => return script(root, root_fd.as_fd(), &rel, fd, i + 1),
            _ => return None,
        }
    }
    None
}

/// The [`Script`] for the regular file `file` found at `rel`: its real path and the
/// directory that holds it (a symlink inside the root leads to its target's directory).
fn script(root: &Path, root_fd: BorrowedFd<'_>, rel: &Path, file: OwnedFd, used: usize) -> Option<Script> {
    let path = real_path(root, rel, &file)?;
    let inside = path.strip_prefix(root).ok()?;
    let name = inside.file_name()?.to_os_string();
    let parent = inside.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = open_beneath(
        root_fd,
        parent.unwrap_or(Path::new(".")),
        OFlag::O_PATH | OFlag::O_DIRECTORY,
    )
    .ok()?;
    Some(Script {
        file,
        dir,
        name,
        path,
        used,
    })
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// The file type of an open descriptor.
fn kind(fd: &OwnedFd) -> Option<SFlag> {
    let st = fstat(fd).ok()?;
    Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
}

/// The path of what `fd` refers to, which must lie under `root`: from `/proc/self/fd`,
/// or, where `/proc` is not mounted, `root` joined with `rel` (the lookup refused every
/// way out, so that is where it is).
fn real_path(root: &Path, rel: &Path, fd: &OwnedFd) -> Option<PathBuf> {
    let path = match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(p) => p,
        Err(_) => root.join(rel),
    };
    path.starts_with(root).then_some(path)
}

/// The segments as one relative path (`.` for none).
fn join(parts: &[Vec<u8>]) -> PathBuf {
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().map(|s| OsStr::from_bytes(s)).collect()
}

/// Set `WSBRIDGE_NO_OPENAT2=1` to use the component-by-component fallback even where
/// `openat2` exists, as on kernels before 5.6; the tests use it to cover that path.
fn openat2_disabled() -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DISABLED.get_or_init(|| std::env::var_os("WSBRIDGE_NO_OPENAT2").is_some_and(|v| v == "1"))
}

/// Opens `rel` (relative, made of checked segments) under the directory `root` without
/// ever resolving to anything outside it.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
    // openat2 refuses O_PATH with any flag but these few.
    let flags = match flags.contains(OFlag::O_PATH) {
        true => flags | OFlag::O_CLOEXEC,
        false => flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
    };
    if !NO_OPENAT2.load(Ordering::Relaxed) && !openat2_disabled() {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // EAGAIN: a rename raced with a `..` inside a symlink; the kernel asks to retry.
        for _ in 0..3 {
            match nix::fcntl::openat2(root, rel, how) {
                Err(Errno::EAGAIN) => continue,
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                r => return r.map_err(io::Error::from),
            }
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            return Err(io::Error::from(Errno::EAGAIN));
        }
    }
    open_nofollow(root, rel, flags)
}

/// The fallback for kernels without `openat2`: one component at a time from `root`,
/// none of them followed if it is a symlink.
fn open_nofollow(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let names: Vec<&OsStr> = rel.iter().filter(|c| *c != OsStr::new(".")).collect();
    let Some((last, dirs)) = names.split_last() else {
        return nix::fcntl::openat(root, ".", flags, Mode::empty()).map_err(io::Error::from);
    };
    let mut dir: Option<OwnedFd> = None;
    for name in dirs {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        let next = nix::fcntl::openat(
            at,
            *name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        dir = Some(next);
    }
    let at = dir.as_ref().map_or(root, |d| d.as_fd());
    nix::fcntl::openat(at, *last, flags | OFlag::O_NOFOLLOW, Mode::empty()).map_err(io::Error::from)
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
    use nix::sys::stat::fstatat;

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
    fn scripts_are_pinned_and_symlinks_out_refused() {
        let root = std::env::temp_dir().join(format!("wsbridge-route-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("d/f", root.join("alias")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let parts = |p: &str| segments(p).unwrap().parts;

        let s = find_script(&root, &parts("/d/f/x/y")).expect("script");
        assert_eq!(
            (s.path.clone(), s.used, s.name.clone()),
            (root.join("d/f"), 2, "f".into())
        );
        let (file, entry) = (
            fstat(&s.file).unwrap(),
            fstatat(s.dir.as_fd(), "f", AtFlags::empty()).unwrap(),
        );
        assert_eq!((entry.st_dev, entry.st_ino), (file.st_dev, file.st_ino));
        // A symlink inside the root is followed once and pinned to its target's entry.
        let s = find_script(&root, &parts("/alias")).expect("alias");
        assert_eq!((s.path, s.name), (root.join("d/f"), "f".into()));
        assert!(find_script(&root, &parts("/d/missing")).is_none());
        assert!(find_script(&root, &parts("/out/passwd")).is_none());
        assert!(find_script(&root, &parts("/d/")).is_none());

        assert!(matches!(open_static(&root, &parts("/d/f")), Static::File(_, p) if p == root.join("d/f")));
        assert!(matches!(open_static(&root, &parts("/d/")), Static::Dir(p) if p == Path::new("d")));
        assert!(matches!(open_static(&root, &parts("/")), Static::Dir(_)));
        assert!(matches!(open_static(&root, &parts("/out/passwd")), Static::Missing));
        assert!(matches!(open_static(&root, &parts("/out/")), Static::Missing));
        assert!(matches!(open_static(&root, &parts("/d/f/x")), Static::Missing));

        // The fallback for kernels without openat2 refuses every symlink, even inside.
        let root_fd = open_root(&root).unwrap();
        assert!(open_nofollow(root_fd.as_fd(), Path::new("d/f"), OFlag::O_RDONLY).is_ok());
        assert!(open_nofollow(root_fd.as_fd(), Path::new("alias"), OFlag::O_RDONLY).is_err());
        assert!(open_nofollow(root_fd.as_fd(), Path::new("out/passwd"), OFlag::O_RDONLY).is_err());
        let link = open_nofollow(root_fd.as_fd(), Path::new("alias"), OFlag::O_PATH).unwrap();
        assert_eq!(kind(&link), Some(SFlag::S_IFLNK));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
