//! PROGRAM and the directory flags, resolved once at startup: the program looked up on
//! PATH like a shell would and checked to be an executable regular file, and `--dir`,
//! `--staticdir`, `--cgidir` made canonical. It owns finding and checking files, not the
//! cross-flag rules ([`super`]) nor running anything ([`crate::child`]).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The program run for each connection.
#[derive(Debug, Clone)]
pub struct Program {
    /// As given on the command line (for logs).
    pub name: OsString,
    /// Resolved: contains a `/`, so it is never searched on the child's PATH.
    pub path: PathBuf,
    pub args: Vec<OsString>,
    /// `--dir`: the directory entry that was checked, which is what runs (see
    /// [`crate::route`]); `None` for PROGRAM, run by its path.
    pub pinned: Option<std::sync::Arc<crate::route::Script>>,
}

impl Program {
    /// PROGRAM and its arguments from the command line, looked up once (`None`: no PROGRAM).
    pub(super) fn resolve(name: Option<OsString>, args: Vec<OsString>) -> Result<Option<Program>, String> {
        let Some(name) = name else { return Ok(None) };
        Ok(Some(Program {
            path: resolve_program(&name)?,
            name,
            args,
            pinned: None,
        }))
    }
}

/// Finds the program like a shell would (a name with `/` is used as given) and checks that
/// it is an executable regular file.
fn resolve_program(name: &OsString) -> Result<PathBuf, String> {
    let shown = Path::new(name).display().to_string();
    if name.is_empty() {
        return Err("no program given".into());
    }
    let candidate = if name.as_bytes().contains(&b'/') {
        PathBuf::from(name)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| {
                if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir
                }
            })
            .map(|dir| dir.join(name))
            .find(|p| is_executable_file(p))
            .ok_or_else(|| format!("program {shown} not found on PATH"))?
    };
    match std::fs::metadata(&candidate) {
        Err(e) => Err(format!("cannot run {shown}: {}", lower_io(&e))),
        Ok(m) if !m.is_file() => Err(format!("cannot run {shown}: not a regular file")),
        Ok(_) if !is_executable_file(&candidate) => {
            Err(format!("cannot run {shown}: permission denied (no execute bit?)"))
        }
        Ok(_) => {
            // A bare name found on PATH gets a `./` or absolute prefix so that std spawns it
            // by path (posix_spawn) and the child's own PATH cannot change what runs.
            if candidate.is_relative() && !candidate.as_os_str().as_bytes().contains(&b'/') {
                Ok(Path::new(".").join(candidate))
            } else {
                Ok(candidate)
            }
        }
    }
}

/// A directory flag's value, canonicalized (so later prefix checks compare real paths).
pub(super) fn resolve_dir(dir: Option<&Path>, flag: &str) -> Result<Option<PathBuf>, String> {
    let Some(dir) = dir else { return Ok(None) };
    let shown = dir.display();
    let real = std::fs::canonicalize(dir).map_err(|e| format!("cannot use {flag}={shown}: {}", lower_io(&e)))?;
    if !real.is_dir() {
        return Err(format!("cannot use {flag}={shown}: not a directory"));
    }
    Ok(Some(real))
}

/// True for a regular file (after symlinks) that wsbridge may execute.
pub fn is_executable_file(p: &Path) -> bool {
    p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// `io::Error`'s text without the " (os error N)" suffix, lower-cased.
fn lower_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    s.to_lowercase()
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn program_is_resolved_on_path_and_checked() {
        let c = Config::for_program("sh", &[]).unwrap();
        let path = &c.program.as_ref().unwrap().path;
        assert!(path.is_absolute(), "{path:?}");
        let e = Config::for_program("no-such-program-xyz", &[]).unwrap_err();
        assert_eq!(e, "program no-such-program-xyz not found on PATH");
        let noexec = std::env::temp_dir().join(format!("wsbridge-noexec-{}", std::process::id()));
        std::fs::write(&noexec, "#!/bin/sh\n").unwrap();
        let e = Config::for_program(noexec.to_str().unwrap(), &[]).unwrap_err();
        std::fs::remove_file(&noexec).unwrap();
        assert!(e.contains("permission denied"), "{e}");
        let e = Config::for_program("/", &[]).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
