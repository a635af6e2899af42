//! The `#!` line of a program, read and checked before the program is started, so that
//! a script whose interpreter is missing is reported by the interpreter's name (at
//! startup for PROGRAM, in the 500's log line for a `--dir` script) rather than as the
//! kernel's bare "no such file or directory" for a file that plainly exists.
//!
//! It owns parsing the line as Linux does (`binfmt_script`: after `#!` optional blanks,
//! the interpreter up to a blank, then the rest of the line as one argument; at most
//! [`HEAD_BYTES`] are looked at) and checking what it names: the interpreter must be an
//! executable regular file; for `#!/usr/bin/env NAME` (also `env -S NAME ...`) NAME is
//! looked up in the PATH the program will get (`--passenv`), or, when it gets none, in
//! `/bin:/usr/bin`, the search path glibc's `execvp` (which `env` uses) falls back on.
//! The caller opens the file (the same one it will run); a file that cannot be read
//! (execute-only) is not checked. It does not start anything.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// How much of the file the kernel reads for the `#!` line (`BINPRM_BUF_SIZE`, Linux ≥ 5.1).
pub const HEAD_BYTES: usize = 256;

/// The search path when the program gets no `PATH` (glibc's `_CS_PATH`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// A parsed `#!` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    pub interpreter: PathBuf,
    /// The rest of the line, trimmed: one argument, as the kernel passes it.
    pub arg: Option<OsString>,
}

/// Why the `#!` line cannot work; its `Display` follows "cannot run PROGRAM: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpreterError {
    #[error("its #! line names no interpreter")]
    Empty,
    #[error("its interpreter {} (from the #! line) does not exist", .0.display())]
    Missing(PathBuf),
    #[error("its interpreter {} (from the #! line) is not an executable file", .0.display())]
    NotExecutable(PathBuf),
    /// `#!/usr/bin/env NAME` with NAME nowhere on the program's PATH.
    #[error("its #! line runs {} {command}, and {command} is not on the program's PATH ({path}{})",
        .env.display(), if *.passed { ", from --passenv" } else { ", the default: PATH is not in --passenv" })]
    NotOnPath {
        env: PathBuf,
        command: String,
        path: String,
        passed: bool,
    },
}

impl InterpreterError {
    /// The interpreter the line names (`env` for `#!/usr/bin/env NAME`), for log fields.
    pub fn interpreter(&self) -> Option<&Path> {
        match self {
            InterpreterError::Empty => None,
            InterpreterError::Missing(p) | InterpreterError::NotExecutable(p) => Some(p),
            InterpreterError::NotOnPath { env, .. } => Some(env),
        }
    }
}

/// Parses the start of a file; `None` when it does not start with `#!`.
pub fn parse(head: &[u8]) -> Option<Shebang> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let line = trim(line, blank);
    let end = line.iter().position(blank).unwrap_or(line.len());
    let (interpreter, arg) = line.split_at(end);
    let arg = trim(arg, blank);
    Some(Shebang {
        interpreter: PathBuf::from(OsString::from_vec(interpreter.to_vec())),
        arg: (!arg.is_empty()).then(|| OsString::from_vec(arg.to_vec())),
    })
}

fn trim(mut s: &[u8], blank: impl Fn(&u8) -> bool) -> &[u8] {
    while s.first().is_some_and(&blank) {
        s = &s[1..];
    }
    while s.last().is_some_and(&blank) {
        s = &s[..s.len() - 1];
    }
    s
}

/// Reads the first [`HEAD_BYTES`] of `file` and checks its `#!` line, if it has one.
/// `child_path` is the `PATH` the program will get. A read error is not the interpreter's
/// fault: the file is then left to the kernel.
pub fn check_file(file: impl Read, child_path: Option<&OsStr>) -> Result<(), InterpreterError> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    if file.take(HEAD_BYTES as u64).read_to_end(&mut head).is_err() {
        return Ok(());
    }
    match parse(&head) {
        Some(line) => check(&line, child_path),
        None => Ok(()),
    }
}

/// Checks that the interpreter (and with `env`, the command it runs) can be executed.
pub fn check(line: &Shebang, child_path: Option<&OsStr>) -> Result<(), InterpreterError> {
    let interp = &line.interpreter;
    if interp.as_os_str().is_empty() {
        return Err(InterpreterError::Empty);
    }
    executable(interp)?;
    if interp.file_name() != Some(OsStr::new("env")) {
        return Ok(());
    }
    let Some(command) = line.arg.as_deref().and_then(env_command) else {
        return Ok(());
    };
    if command.contains(&b'/') {
        return executable(Path::new(OsStr::from_bytes(command)));
    }
    let (path, passed) = match child_path {
        Some(p) => (p, true),
        None => (OsStr::new(DEFAULT_PATH), false),
    };
    let found = std::env::split_paths(path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
        })
        .any(|dir| is_executable(&dir.join(OsStr::from_bytes(command))));
    if found {
        return Ok(());
    }
    Err(InterpreterError::NotOnPath {
        env: interp.clone(),
        command: String::from_utf8_lossy(command).into_owned(),
        path: path.to_string_lossy().into_owned(),
        passed,
    })
}

/// The command `env ARG` runs: ARG itself, or with `-S` the first word that is neither
/// an option nor a `NAME=value`. `None` when there is none to check (`env -i`, ...).
fn env_command(arg: &OsStr) -> Option<&[u8]> {
    let arg = arg.as_bytes();
    let mut words = arg.split(|b| *b == b' ' || *b == b'\t').filter(|w| !w.is_empty());
    let first = words.next()?;
    if !first.starts_with(b"-") {
        // Without -S the kernel passes the whole rest of the line as one name.
        return (!first.contains(&b'=')).then_some(arg);
    }
    if first != b"-S" && first != b"--split-string" {
        return None;
    }
    words
        .find(|w| !w.starts_with(b"-") && !w.contains(&b'='))
        .filter(|w| !w.contains(&b'$'))
}

fn executable(p: &Path) -> Result<(), InterpreterError> {
    match std::fs::metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(InterpreterError::Missing(p.to_owned())),
        _ if !is_executable(p) => Err(InterpreterError::NotExecutable(p.to_owned())),
        _ => Ok(()),
    }
}

fn is_executable(p: &Path) -> bool {
    p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Option<Shebang> {
        parse(s.as_bytes())
    }

    #[test]
    fn lines_parse_like_the_kernel() {
        assert_eq!(line("echo hi\n"), None);
        let sb = line("#! /usr/bin/env  python3 -u \nprint()\n").unwrap();
        assert_eq!(sb.interpreter, Path::new("/usr/bin/env"));
        assert_eq!(sb.arg.as_deref(), Some(OsStr::new("python3 -u")));
        let sb = line("#!/bin/sh").unwrap();
        assert_eq!((sb.interpreter.as_os_str(), sb.arg), (OsStr::new("/bin/sh"), None));
        assert_eq!(line("#!\n").unwrap().interpreter, Path::new(""));
    }

    #[test]
    fn missing_and_non_executable_interpreters_are_named() {
        let check_str = |s: &str, path: Option<&str>| check(&line(s).unwrap(), path.map(OsStr::new));
        assert_eq!(check_str("#!/bin/sh\n", None), Ok(()));
        assert_eq!(
            check_str("#!/no/such/python9\n", None),
            Err(InterpreterError::Missing("/no/such/python9".into()))
        );
        assert_eq!(
            check_str("#!/etc/passwd\n", None),
            Err(InterpreterError::NotExecutable("/etc/passwd".into()))
        );
        assert_eq!(check_str("#!\n", None), Err(InterpreterError::Empty));
        let env = which("env");
        assert_eq!(check_str(&format!("#!{env} sh\n"), None), Ok(()));
        let e = check_str(&format!("#!{env} no-such-cmd-xyz\n"), Some("/bin")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("its #! line runs {env} no-such-cmd-xyz, and no-such-cmd-xyz is not on the program's PATH (/bin, from --passenv)")
        );
        assert!(check_str(&format!("#!{env} -S no-such-cmd-xyz -u\n"), None)
            .unwrap_err()
            .to_string()
            .contains("(/bin:/usr/bin, the default: PATH is not in --passenv)"));
        assert_eq!(check_str(&format!("#!{env} -S A=1 sh -e\n"), None), Ok(()));
        assert_eq!(check_str(&format!("#!{env} -i\n"), None), Ok(()));
    }

    fn which(name: &str) -> String {
        ["/usr/bin", "/bin"]
            .iter()
            .map(|d| format!("{d}/{name}"))
            .find(|p| Path::new(p).exists())
            .expect("env exists")
    }
}
