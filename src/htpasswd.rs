//! `--htpasswd`: the password file (Apache's format, `user:hash` per line), its reload on
//! SIGHUP, and checking one user's password against it, with a small cache of recent
//! successful checks. No tokio and no HTTP: [`crate::auth`] decodes the `Authorization`
//! header and runs [`Htpasswd::verify`] on the blocking pool (bcrypt is slow on purpose).
//!
//! Formats: bcrypt (`$2y$`, `$2b$`, `$2a$`, as `htpasswd -B` and `mkpasswd -m bcrypt`
//! write) and SHA-crypt (`$5$`, `$6$`, as `htpasswd -2`/`-5` and `mkpasswd -m sha-256`/
//! `sha-512` write). Any other line (Apache's `$apr1$` MD5, `{SHA}`, crypt(3) DES, plain
//! text) is refused when the file is loaded, naming the line: at startup that is exit 1,
//! on SIGHUP the old file stays in service.
//!
//! Timing: a hash is compared in constant time by the crates; a user that is not in the
//! file costs a verification against another user's hash, so the answer time does not
//! tell which names exist. The cache holds, per user, a SHA-256 of a random per-process
//! key, the password and the stored hash (never the password), for [`CACHE_TTL`]; at
//! most [`CACHE_USERS`] users; it is emptied on reload. A hit costs a microsecond
//! instead of a bcrypt, so a browser's reconnects stay fast.
//!
//! Built without the cargo feature `auth`, [`Htpasswd`] cannot be made and config
//! refuses `--htpasswd` (exit 1).

use std::path::{Path, PathBuf};

/// Largest password file read (a file of a hundred thousand users is far smaller).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// How long a successful check is remembered.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// How many users' successful checks are remembered at once.
pub const CACHE_USERS: usize = 1024;
/// Highest bcrypt cost loaded (`htpasswd -C` takes 4 to 17): each step doubles the time
/// of a check, and a check holds a blocking thread and an `--authmax` slot until it ends
/// (no timeout can stop it), so a cost of 31 would hold them for days.
pub const MAX_BCRYPT_COST: u32 = 17;
/// Highest SHA-crypt `rounds=` loaded (the format allows 999999999): about as slow as
/// bcrypt at [`MAX_BCRYPT_COST`].
pub const MAX_SHA_CRYPT_ROUNDS: u64 = 10_000_000;

/// Why a password file cannot be used: one line naming the file (and the line).
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read --htpasswd={}: {why}", .path.display())]
    Read { path: PathBuf, why: String },
    #[error("--htpasswd={} line {line}: {why}", .path.display())]
    Line {
        path: PathBuf,
        line: usize,
        why: LineProblem,
    },
    #[error("--htpasswd={}: no users in it", .path.display())]
    Empty { path: PathBuf },
    #[error("--htpasswd: this wsbridge was built without it (cargo feature `auth`)")]
    NotBuilt,
}

/// What is wrong with one line of a password file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("expected user:hash")]
    NoColon,
    #[error("empty user name")]
    EmptyUser,
    #[error("user {0:?} appears twice")]
    Duplicate(String),
    #[error(
        "user {user:?}: unsupported hash format {kind} (use bcrypt: htpasswd -B, or SHA-crypt: mkpasswd -m sha-512)"
    )]
    Unsupported { user: String, kind: &'static str },
    #[error("user {0:?}: malformed hash")]
    Malformed(String),
    #[error(
        "user {user:?}: {what} makes every check too slow (at most bcrypt cost {MAX_BCRYPT_COST} or {MAX_SHA_CRYPT_ROUNDS} SHA-crypt rounds)"
    )]
    TooSlow { user: String, what: String },
}

/// The kind of a stored hash, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bcrypt,
    ShaCrypt,
}

/// Which scheme a stored hash is, or a name for the unsupported ones.
pub fn scheme(hash: &str) -> Result<Scheme, &'static str> {
    for p in ["$2y$", "$2b$", "$2a$"] {
        if hash.starts_with(p) {
            return Ok(Scheme::Bcrypt);
        }
    }
    if hash.starts_with("$5$") || hash.starts_with("$6$") {
        return Ok(Scheme::ShaCrypt);
    }
    Err(if hash.starts_with("$apr1$") {
        "$apr1$ (Apache MD5)"
    } else if hash.starts_with("$1$") {
        "$1$ (MD5-crypt)"
    } else if hash.starts_with("{SHA}") {
        "{SHA} (unsalted SHA-1)"
    } else if hash.starts_with('$') {
        "unknown $id$"
    } else {
        "plain text or crypt(3) DES"
    })
}

/// The users of a password file: each user's stored hash, and the first line's hash
/// (what a user who is not in the file is checked against).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    hashes: std::collections::HashMap<String, String>,
    first: Option<String>,
}

impl Users {
    /// Parses a password file: `user:hash` lines; blank lines and `#` comments skipped.
    /// Returns the first bad line's number (from 1) and problem.
    pub fn parse(text: &str) -> Result<Self, (usize, LineProblem)> {
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let bad = |p| (i + 1, p);
            let (user, hash) = line.split_once(':').ok_or_else(|| bad(LineProblem::NoColon))?;
            if user.is_empty() {
                return Err(bad(LineProblem::EmptyUser));
            }
            // Some tools append fields (`user:hash:comment`); the hash is the second.
            let hash = hash.split(':').next().unwrap_or_default().trim();
            scheme(hash).map_err(|kind| {
                bad(LineProblem::Unsupported {
                    user: user.to_owned(),
                    kind,
                })
            })?;
            if !well_formed(hash) {
                return Err(bad(LineProblem::Malformed(user.to_owned())));
            }
            if let Some(what) = too_slow(hash) {
                return Err(bad(LineProblem::TooSlow {
                    user: user.to_owned(),
                    what,
                }));
            }
            if users.hashes.contains_key(user) {
                return Err(bad(LineProblem::Duplicate(user.to_owned())));
            }
            users.first.get_or_insert_with(|| hash.to_owned());
            users.hashes.insert(user.to_owned(), hash.to_owned());
        }
        Ok(users)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    /// The stored hash of `user`, and whether the user exists: a missing user gets the
    /// first user's hash, so that checking it costs the same.
    fn hash_for(&self, user: &str) -> Option<(&str, bool)> {
        match self.hashes.get(user) {
            Some(h) => Some((h, true)),
            None => self.first.as_deref().map(|h| (h, false)),
        }
    }
}

/// The shape checks the verifying crates would otherwise fail on at every request: the
/// characters of the crypt alphabet and `$`, and for bcrypt the exact length.
fn well_formed(hash: &str) -> bool {
    let alphabet = |c: char| c.is_ascii_alphanumeric() || "./$=".contains(c);
    if !hash.chars().all(alphabet) {
        return false;
    }
    match scheme(hash) {
        Ok(Scheme::Bcrypt) => hash.len() == 60 && hash[4..6].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c)),
        Ok(Scheme::ShaCrypt) => hash.split('$').count() >= 4,
        Err(_) => false,
    }
}

/// The work factor of a well-formed hash when it is over the bounds
/// ([`MAX_BCRYPT_COST`], [`MAX_SHA_CRYPT_ROUNDS`]), named for the error.
fn too_slow(hash: &str) -> Option<String> {
    match scheme(hash) {
        Ok(Scheme::Bcrypt) => {
            // well_formed checked the two digits.
            let cost = hash[4..6].parse::<u32>().unwrap_or(u32::MAX);
            (cost > MAX_BCRYPT_COST).then(|| format!("bcrypt cost {cost}"))
        }
        Ok(Scheme::ShaCrypt) => {
            let rounds = hash.split('$').nth(2)?.strip_prefix("rounds=")?;
            if !rounds.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match rounds.parse::<u64>() {
                Ok(n) if n <= MAX_SHA_CRYPT_ROUNDS => None,
                _ => Some(format!("rounds={rounds}")),
            }
        }
        Err(_) => None,
    }
}

/// Reads and parses a password file (a regular file of at most [`MAX_FILE_BYTES`]).
/// It blocks on file I/O: call it at startup or on the blocking pool.
pub fn read_users(path: &Path) -> Result<Users, HtpasswdError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read_err = |why: String| HtpasswdError::Read {
        path: path.to_owned(),
        why,
    };
    let io_err = |e: std::io::Error| {
        let s = e.to_string();
        read_err(s.split(" (os error").next().unwrap_or(&s).to_lowercase())
    };
    // O_NONBLOCK: a FIFO put in its place cannot block the open (as tls.rs reads PEM).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(read_err("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(read_err(format!("larger than {} MiB", MAX_FILE_BYTES >> 20)));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES).read_to_string(&mut text).map_err(io_err)?;
    let users = Users::parse(&text).map_err(|(line, why)| HtpasswdError::Line {
        path: path.to_owned(),
        line,
        why,
    })?;
    if users.is_empty() {
        return Err(HtpasswdError::Empty { path: path.to_owned() });
    }
    Ok(users)
}

#[cfg(feature = "auth")]
pub use self::store::Htpasswd;

/// Without the `auth` feature there is no password store (config refuses `--htpasswd`).
#[cfg(not(feature = "auth"))]
#[derive(Debug, Clone)]
pub enum Htpasswd {}

#[cfg(not(feature = "auth"))]
impl Htpasswd {
    pub fn load(_path: &Path) -> Result<Self, HtpasswdError> {
        Err(HtpasswdError::NotBuilt)
    }
    pub fn reload(&self) -> Result<usize, HtpasswdError> {
        match *self {}
    }
    pub fn cached(&self, _user: &str, _password: &[u8]) -> bool {
        match *self {}
    }
    pub fn verify(&self, _user: &str, _password: &[u8]) -> bool {
        match *self {}
    }
}

#[cfg(feature = "auth")]
mod store {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, PoisonError, RwLock};
    use std::time::Instant;

    use sha2::{Digest, Sha256};

    use super::{read_users, scheme, HtpasswdError, Scheme, Users, CACHE_TTL, CACHE_USERS};

    /// The loaded password file, shared by every connection and reloaded on SIGHUP; and
    /// the cache of recent successful checks. Cloning shares both.
    #[derive(Clone)]
    pub struct Htpasswd {
        path: PathBuf,
        users: Arc<RwLock<Arc<Users>>>,
        cache: Arc<Mutex<Cache>>,
    }

    impl std::fmt::Debug for Htpasswd {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Htpasswd")
                .field("path", &self.path)
                .finish_non_exhaustive()
        }
    }

    struct Cache {
        key: [u8; 32],
        /// user -> (digest of key, password and stored hash; when it was verified).
        entries: HashMap<String, ([u8; 32], Instant)>,
    }

    impl Cache {
        fn digest(&self, user: &str, password: &[u8], hash: &str) -> [u8; 32] {
            let mut d = Sha256::new();
            d.update(self.key);
            d.update((user.len() as u64).to_le_bytes());
            d.update(user.as_bytes());
            d.update((password.len() as u64).to_le_bytes());
            d.update(password);
            d.update(hash.as_bytes());
            d.finalize().into()
        }
    }

    impl Htpasswd {
        /// Reads the file (blocking I/O).
        pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
            let users = read_users(path)?;
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| HtpasswdError::Read {
                path: path.to_owned(),
                why: format!("no random key for the cache: {e}"),
            })?;
            Ok(Htpasswd {
                path: path.to_owned(),
                users: Arc::new(RwLock::new(Arc::new(users))),
                cache: Arc::new(Mutex::new(Cache {
                    key,
                    entries: HashMap::new(),
                })),
            })
        }

        /// Rereads the file; on failure the old users stay. Empties the cache, so a
        /// changed or removed password stops working at once. Returns the user count.
        /// Blocking I/O: call it on the blocking pool.
        pub fn reload(&self) -> Result<usize, HtpasswdError> {
            let users = read_users(&self.path)?;
            let n = users.len();
            *self.users.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(users);
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entries
                .clear();
            Ok(n)
        }

        fn current(&self) -> Arc<Users> {
            Arc::clone(&self.users.read().unwrap_or_else(PoisonError::into_inner))
        }

        /// Whether `user` with `password` was verified less than [`CACHE_TTL`] ago
        /// against the hash the file still has. Cheap: call it on the async side.
        pub fn cached(&self, user: &str, password: &[u8]) -> bool {
            let users = self.current();
            let Some((hash, true)) = users.hash_for(user) else {
                return false;
            };
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            let Some((stored, at)) = cache.entries.get(user) else {
                return false;
            };
            let fresh = at.elapsed() < CACHE_TTL;
            fresh && ct_eq(stored, &cache.digest(user, password, hash))
        }

        /// Checks `password` for `user` against the file: slow on purpose (bcrypt), so
        /// call it on the blocking pool. A success is cached.
        pub fn verify(&self, user: &str, password: &[u8]) -> bool {
            let users = self.current();
            let Some((hash, exists)) = users.hash_for(user) else {
                return false;
            };
            let ok = check(password, hash) && exists;
            if ok {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                if cache.entries.len() >= CACHE_USERS && !cache.entries.contains_key(user) {
                    cache.entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                    if cache.entries.len() >= CACHE_USERS {
                        // Still full of fresh ones: forget the oldest.
                        let oldest = cache
                            .entries
                            .iter()
                            .min_by_key(|(_, (_, at))| *at)
                            .map(|(u, _)| u.clone());
                        if let Some(u) = oldest {
                            cache.entries.remove(&u);
                        }
                    }
                }
                let d = cache.digest(user, password, hash);
                cache.entries.insert(user.to_owned(), (d, now));
            }
            ok
        }
    }

    /// One password against one stored hash (constant-time comparison in both crates).
    fn check(password: &[u8], hash: &str) -> bool {
        match scheme(hash) {
            Ok(Scheme::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
            Ok(Scheme::ShaCrypt) => {
                use sha_crypt::PasswordVerifier;
                sha_crypt::ShaCrypt::default().verify_password(password, hash).is_ok()
            }
            Err(_) => false,
        }
    }

    /// Compares two digests without an early exit.
    fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        // `htpasswd -nbB alice secret` (cost 5) and `mkpasswd -m sha-256 -R 1000 pw5`.
        const ALICE: &str = "alice:$2y$05$oHDoqjaahT.px2fSebrXqO5p7t/DaCduttAW9RWkUUixAg.RP7M.y";

        fn store(text: &str) -> Htpasswd {
            let dir = std::env::temp_dir().join(format!("wsbridge-htpasswd-{}-{}", std::process::id(), text.len()));
            std::fs::write(&dir, text).unwrap();
            let h = Htpasswd::load(&dir).unwrap();
            std::fs::remove_file(&dir).unwrap();
            h
        }

        #[test]
        fn bcrypt_and_sha_crypt_verify_and_cache() {
            let h = store(&format!(
                "{ALICE}\nbob:$6$iLRLtyjO7OxI5JpW$0D08hr5qPbnfifxLH0CGYIwlaRYAAPLDmoBknyppc16D6rWh2wHo60VnF6gpstITDEemeCMT6RiAzKcsw7hBP0\n"
            ));
            assert!(!h.cached("alice", b"secret"));
            assert!(h.verify("alice", b"secret"));
            assert!(h.cached("alice", b"secret"));
            assert!(!h.cached("alice", b"secreT"));
            assert!(!h.verify("alice", b"wrong"));
            assert!(h.verify("bob", b"pw5"));
            assert!(!h.verify("bob", b"pw6"));
            assert!(!h.verify("nobody", b"secret"), "a missing user never passes");
            assert!(!h.cached("nobody", b"secret"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_formats_name_the_line() {
        let bad = [
            ("a:$apr1$x$y", "$apr1$"),
            ("a:{SHA}abc=", "{SHA}"),
            ("a:plaintext", "plain text"),
            ("a:$1$x$y", "$1$"),
        ];
        for (line, kind) in bad {
            let text = format!("# comment\n\n{line}\n");
            let (n, why) = Users::parse(&text).unwrap_err();
            assert_eq!(n, 3, "{line}");
            assert!(why.to_string().contains(kind), "{why}");
        }
        assert_eq!(Users::parse("nocolon").unwrap_err(), (1, LineProblem::NoColon));
        assert_eq!(
            Users::parse(":$2y$05$oHDoqjaahT.px2fSebrXqO5p7t/DaCduttAW9RWkUUixAg.RP7M.y").unwrap_err(),
            (1, LineProblem::EmptyUser)
        );
        assert!(matches!(
            Users::parse("a:$2y$05$short").unwrap_err(),
            (1, LineProblem::Malformed(_))
        ));
        let twice = "a:$5$salt$hash\na:$5$salt$hash\n";
        assert!(matches!(
            Users::parse(twice).unwrap_err(),
            (2, LineProblem::Duplicate(_))
        ));
    }

    #[test]
    fn hashes_too_slow_to_verify_are_refused_at_load() {
        // A bcrypt cost of 31 or a billion SHA-crypt rounds would hold a blocking thread
        // and an --authmax slot for hours on every attempt (an unknown user is checked
        // against the first line's hash, so anyone could start one).
        let alice = "$2y$05$oHDoqjaahT.px2fSebrXqO5p7t/DaCduttAW9RWkUUixAg.RP7M.y";
        for cost in ["18", "31"] {
            let line = format!("a:{}", alice.replacen("05", cost, 1));
            assert!(
                matches!(Users::parse(&line).unwrap_err(), (1, LineProblem::TooSlow { .. })),
                "{line}"
            );
        }
        let line = format!("a:{}", alice.replacen("05", "17", 1));
        assert!(Users::parse(&line).is_ok(), "htpasswd -C takes up to 17");
        for rounds in ["10000001", "999999999", "99999999999999999999"] {
            let line = format!("a:$6$rounds={rounds}$salt$hash");
            assert!(
                matches!(Users::parse(&line).unwrap_err(), (1, LineProblem::TooSlow { .. })),
                "{line}"
            );
        }
        let msg = Users::parse("a:$5$rounds=999999999$s$h").unwrap_err().1.to_string();
        assert!(msg.contains("\"a\"") && msg.contains("rounds"), "{msg}");
        assert!(Users::parse("a:$5$rounds=10000000$s$h").is_ok());
        assert!(Users::parse("a:$5$rounds=5000$s$h").is_ok());
    }

    #[test]
    fn good_lines_parse() {
        let u = Users::parse("a:$5$s$h\r\nb:$6$rounds=1000$s$h:comment\n").unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u.hash_for("b"), Some(("$6$rounds=1000$s$h", true)));
        assert_eq!(u.hash_for("zz"), Some(("$5$s$h", false)));
    }
}
