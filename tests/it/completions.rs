//! Shell completions (completions/ for bash, zsh and fish): the committed files are what
//! clap_complete generates from `cli::command()` today, and the shells can use them.
//! `clap_complete` is a dev-dependency, so the release binary carries no completion code
//! (generating them in the binary, bash, zsh and fish, measured +101 KB of release
//! binary, 3,517,792 -> 3,619,288 bytes, for what a package installs once); after a flag
//! changes, `WSBRIDGE_WRITE_COMPLETIONS=1 cargo test --test it completions::`
//! rewrites the files.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use clap_complete::Shell;
use wsbridge::cli;

const FILES: [(Shell, &str); 3] = [
    (Shell::Bash, "wsbridge.bash"),
    (Shell::Zsh, "_wsbridge"),
    (Shell::Fish, "wsbridge.fish"),
];

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("completions").join(file)
}

fn generate(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli::command(), "wsbridge", &mut out);
    String::from_utf8(out).expect("completions are UTF-8")
}

#[test]
fn committed_completions_are_up_to_date() {
    let write = std::env::var_os("WSBRIDGE_WRITE_COMPLETIONS").is_some();
    for (shell, file) in FILES {
        let fresh = generate(shell);
        if write {
            std::fs::write(path(file), &fresh).expect("write completions");
            continue;
        }
        let committed = std::fs::read_to_string(path(file)).unwrap_or_default();
        assert!(
            committed == fresh,
            "completions/{file} is out of date with the flags; regenerate with \
             WSBRIDGE_WRITE_COMPLETIONS=1 cargo test --test it completions::"
        );
    }
}

/// Whether `shell` is installed; outside CI a missing one skips the test with a reason.
fn have(shell: &str) -> bool {
    let found = Command::new(shell)
        .args(["-c", "exit 0"])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{shell} is missing in CI (tools/test.sh installs it)"
        );
        eprintln!("skipped: {shell} is not installed (tools/test.sh installs it)");
    }
    found
}

/// What bash's completion function offers for the command line `line` (cursor at the end).
fn bash_complete(line: &str) -> Vec<String> {
    let script = format!(
        "source {file}\n\
         COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         read -r -a COMP_WORDS <<< \"$COMP_LINE\"\n\
         case \"$COMP_LINE\" in *' ') COMP_WORDS+=(''); esac\n\
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         _wsbridge wsbridge \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        file = path("wsbridge.bash").display(),
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_flags_and_their_values() {
    if !have("bash") {
        return;
    }
    let offered = bash_complete("wsbridge --maxf");
    assert!(offered.iter().any(|w| w == "--maxforks"), "{offered:?}");
    assert!(offered.iter().all(|w| w.starts_with("--maxf")), "{offered:?}");
    let offered = bash_complete("wsbridge --framing ");
    for mode in ["line", "nul", "binary", "lenprefix"] {
        assert!(offered.iter().any(|w| w == mode), "{mode}: {offered:?}");
    }
}

#[test]
fn zsh_and_fish_parse_their_completions() {
    for (shell, file) in [("zsh", "_wsbridge"), ("fish", "wsbridge.fish")] {
        if !have(shell) {
            continue;
        }
        let out = Command::new(shell)
            .arg("-n")
            .arg(path(file))
            .stdin(Stdio::null())
            .output()
            .expect("run shell");
        assert!(
            out.status.success(),
            "{shell} -n {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
