//! Reading a command line the way websocketd users write it: Go's single-dash long
//! flags, PROGRAM and everything after it left alone, websocketd flags that wsbridge
//! does not implement named with the reason, and clap's errors without hints that do
//! not apply to us.

use std::ffi::OsString;
use std::fmt;

use clap::error::{ContextKind, ErrorKind};

/// websocketd's flags that wsbridge does not implement, each with the reason.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "reverselookup",
        "a reverse DNS lookup per connection delays every upgrade and returns a name the \
         client's network chooses; REMOTE_HOST is the client's address",
    ),
    (
        "license",
        concat!(
            "its license is ",
            env!("CARGO_PKG_LICENSE"),
            " (the texts are in /usr/share/doc/wsbridge/copyright)"
        ),
    ),
];

/// A websocketd flag from [`UNSUPPORTED`] on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub flag: &'static str,
    pub why: &'static str,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{} is not supported by wsbridge: {}", self.flag, self.why)
    }
}

/// Rewrites `-flag` to `--flag` (Go's spelling; wsbridge's only short flags are `-h` and
/// `-V`, so every longer single-dash word is a long flag, known or misspelled) and inserts
/// `--` before PROGRAM, so that clap never reads PROGRAM's own arguments as ours. A value
/// given as the next word is joined to its flag (`--port 80` → `--port=80`). A flag of
/// [`UNSUPPORTED`] before PROGRAM is an error.
pub fn normalize(cmd: &clap::Command, mut args: Vec<OsString>) -> Result<Vec<OsString>, Unsupported> {
    let mut i = 1;
    while i < args.len() {
        let Some(word) = args[i].to_str().map(str::to_owned) else {
            break; // not UTF-8: cannot be one of our flags, so it is PROGRAM
        };
        if word == "--" {
            return Ok(args);
        }
        if !word.starts_with('-') || word == "-" {
            args.insert(i, OsString::from("--"));
            return Ok(args);
        }
        let body = word.trim_start_matches('-');
        let (name, has_value) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        if let Some(&(flag, why)) = UNSUPPORTED.iter().find(|(f, _)| *f == name) {
            return Err(Unsupported { flag, why });
        }
        if !word.starts_with("--") && name.chars().count() > 1 {
            args[i] = OsString::from(format!("-{word}"));
        }
        if let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(name)) {
            let takes_separate_value = arg.get_action().takes_values() && !arg.is_require_equals_set() && !has_value;
            // As Go does, the next word is the value whatever it looks like (`--maxforks -1`
            // is then refused by the range, not as an unknown flag `-1`).
            if takes_separate_value && i + 1 < args.len() {
                let value = args.remove(i + 1);
                let mut joined = std::mem::take(&mut args[i]);
                joined.push("=");
                joined.push(value);
                args[i] = joined;
            }
        }
        i += 1;
    }
    Ok(args)
}

/// Drops clap's "to pass '--x' as a value, use '-- --x'" tip from an unknown-flag error:
/// it is wrong for wsbridge, where a value that looks like a flag goes after PROGRAM. A
/// "similar argument exists" suggestion is kept.
pub fn tidy(mut err: clap::Error) -> clap::Error {
    if err.kind() == ErrorKind::UnknownArgument {
        err.remove(ContextKind::Suggested);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn single_dash_words_become_long_flags_known_or_not() {
        let cmd = crate::cli::command();
        let out = normalize(&cmd, words(&["w", "-maxfork=3", "-port", "8", "-h", "cat", "-x"])).unwrap();
        assert_eq!(out, words(&["w", "--maxfork=3", "--port=8", "-h", "--", "cat", "-x"]));
        let out = normalize(&cmd, words(&["w", "--maxforks", "-1", "--origin", "--x", "cat"])).unwrap();
        assert_eq!(out, words(&["w", "--maxforks=-1", "--origin=--x", "--", "cat"]));
    }

    #[test]
    fn unsupported_websocketd_flags_are_named_before_program_only() {
        let cmd = crate::cli::command();
        for spelling in ["--reverselookup", "-reverselookup", "--reverselookup=true"] {
            let e = normalize(&cmd, words(&["w", spelling, "cat"])).unwrap_err();
            assert_eq!(e.flag, "reverselookup");
        }
        assert!(normalize(&cmd, words(&["w", "cat", "--license"])).is_ok());
        let e = normalize(&cmd, words(&["w", "--license"])).unwrap_err();
        assert!(
            e.to_string().starts_with("--license is not supported by wsbridge: "),
            "{e}"
        );
    }
}
