//! PROGRAM and the directory flags, resolved once at startup: the program looked up on
//! PATH like a shell would and checked to be an executable regular file, and `--dir`,
//! `--staticdir`, `--cgidir` made canonical. It owns finding and checking files, not the
//! cross-flag rules ([`super`]) nor running anything ([`crate::child`]).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{PathProblem, ResolveError};
use crate::shebang::InterpreterError;

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
    /// Its `#!` line, if any, is checked too (see [`crate::shebang`]); `child_path` is
    /// the `PATH` the program will get.
    pub(super) fn resolve(
        name: Option<OsString>,
        args: Vec<OsString>,
        child_path: Option<&std::ffi::OsStr>,
    ) -> Result<Option<Program>, ResolveError> {
        let Some(name) = name else { return Ok(None) };
        let path = resolve_program(&name)?;
        check_interpreter(&path, child_path).map_err(|why| ResolveError::Interpreter {
            program: Path::new(&name).display().to_string(),
            why,
        })?;
        Ok(Some(Program {
            path,
            name,
            args,
            pinned: None,
        }))
    }
}

/// Finds the program like a shell would (a name with `/` is used as given) and checks that
/// it is an executable regular file.
fn resolve_program(name: &OsString) -> Result<PathBuf, ResolveError> {
    let shown = || Path::new(name).display().to_string();
    if name.is_empty() {
        return Err(ResolveError::NoProgram);
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
            .ok_or_else(|| ResolveError::NotOnPath(shown()))?
    };
    let cannot = |why| ResolveError::CannotRun { program: shown(), why };
    match std::fs::metadata(&candidate) {
        Err(e) => Err(cannot(PathProblem::Io(e))),
        Ok(m) if !m.is_file() => Err(cannot(PathProblem::NotFile)),
        Ok(_) if !is_executable_file(&candidate) => Err(cannot(PathProblem::NotExecutable)),
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

/// Reads the `#!` line of the file PROGRAM runs (by the same path, which is how it is
/// spawned); a file wsbridge cannot read (execute-only) is left to the kernel.
fn check_interpreter(path: &Path, child_path: Option<&std::ffi::OsStr>) -> Result<(), InterpreterError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    match file {
        Ok(f) => crate::shebang::check_file(f, child_path),
        Err(_) => Ok(()),
    }
}

/// A directory flag's value, canonicalized (so later prefix checks compare real paths).
pub(super) fn resolve_dir(dir: Option<&Path>, flag: &'static str) -> Result<Option<PathBuf>, ResolveError> {
    let Some(dir) = dir else { return Ok(None) };
    let cannot = |why| ResolveError::Dir {
        flag,
        dir: dir.display().to_string(),
        why,
    };
    let real = std::fs::canonicalize(dir).map_err(|e| cannot(PathProblem::Io(e)))?;
    if !real.is_dir() {
        return Err(cannot(PathProblem::NotDirectory));
    }
    Ok(Some(real))
}

/// True for a regular file (after symlinks) that wsbridge may execute.
pub fn is_executable_file(p: &Path) -> bool {
    p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use crate::config::ResolveError;
    use crate::Config;

    #[test]
    fn program_is_resolved_on_path_and_checked() {
        let c = Config::for_program("sh", &[]).unwrap();
        let path = &c.session.program.as_ref().unwrap().path;
        assert!(path.is_absolute(), "{path:?}");
        let e = Config::for_program("no-such-program-xyz", &[]).unwrap_err();
        assert_eq!(e.to_string(), "program no-such-program-xyz not found on PATH");
        let noexec = std::env::temp_dir().join(format!("wsbridge-noexec-{}", std::process::id()));
        std::fs::write(&noexec, "#!/bin/sh\n").unwrap();
        let e = Config::for_program(noexec.to_str().unwrap(), &[])
            .unwrap_err()
            .to_string();
        std::fs::remove_file(&noexec).unwrap();
        assert!(e.contains("permission denied"), "{e}");
        let e = Config::for_program("/", &[]).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_missing_interpreter_is_named_at_startup() {
        use std::os::unix::fs::PermissionsExt;
        let script = std::env::temp_dir().join(format!("wsbridge-shebang-{}", std::process::id()));
        std::fs::write(&script, "#!/no/such/python9 -u\nprint(1)\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = Config::for_program(script.to_str().unwrap(), &[]).unwrap_err();
        std::fs::remove_file(&script).unwrap();
        assert!(
            matches!(e, crate::config::ConfigError::Resolve(ResolveError::Interpreter { .. })),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "cannot run {}: its interpreter /no/such/python9 (from the #! line) does not exist",
                script.display()
            )
        );
    }
}
