//! The binary as a user runs it: startup errors and exit codes, help and version, the
//! man page covering every flag.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use wsbridge::cli::Cli;

use crate::common::assert_usage_error;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsbridge"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wsbridge")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_program_is_a_one_line_startup_error_exit_1() {
    let o = run(&["--port=0", "no-such-program-xyz"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "wsbridge: program no-such-program-xyz not found on PATH\n");
    let o = run(&["--port=0", "./tests/fixtures/does-not-exist.sh"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("does-not-exist.sh"));
}

#[test]
fn non_executable_program_is_refused_at_startup() {
    let o = run(&["--port=0", "./Cargo.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["--bogus", "cat"]).status.code(), Some(2));
    assert_eq!(run(&["--port=0"]).status.code(), Some(2), "no program");
    assert_eq!(run(&["--port=notanumber", "cat"]).status.code(), Some(2));
    assert_eq!(run(&["--loglevel=loud", "cat"]).status.code(), Some(2));
    assert_eq!(run(&["--framing=morse", "cat"]).status.code(), Some(2));
    // Found by wsbridge after parsing, printed the way clap prints its own.
    for (args, needle) in [
        (&["--passstderr", "--binary", "cat"][..], "it needs line framing"),
        (&["--binary", "--framing=line", "cat"], "give only one of them"),
        (&["--origin=http://", "cat"], "invalid --origin entry"),
        (&["--maxframesize=0", "cat"], "--maxframesize must be at least 1"),
        (&["--cgitimeout=0", "cat"], "--cgitimeout must be at least 1"),
        (&["--header=nocolon", "cat"], "invalid --header="),
    ] {
        let o = run(args);
        assert_usage_error(o.status.code(), &stderr(&o), needle);
    }
}

#[test]
fn a_conflict_is_a_usage_error_but_a_missing_program_is_a_startup_error() {
    let o = run(&["--port=0", "--pty", "--passstderr", "cat"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let usage = Cli::command().render_usage().to_string();
    assert_eq!(
        stderr(&o),
        format!(
            "error: --pty merges stderr into the terminal: it cannot be combined with --passstderr\n\n\
             {usage}\n\nFor more information, try '--help'.\n"
        )
    );
    // With both wrong, the usage error wins: flags are checked before PROGRAM is looked up.
    let o = run(&["--port=0", "--pty", "--passstderr", "no-such-program-xyz"]);
    assert_usage_error(o.status.code(), &stderr(&o), "--pty merges stderr");
    let o = run(&["--port=0", "--pty", "no-such-program-xyz"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "wsbridge: program no-such-program-xyz not found on PATH\n");
}

#[test]
fn version_and_help() {
    let o = run(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("wsbridge {}\n", env!("CARGO_PKG_VERSION"))
    );
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in long_flags() {
        assert!(help.contains(&format!("--{flag}")), "--{flag} missing from --help");
    }
}

#[test]
fn cannot_listen_exits_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let o = run(&["--address=127.0.0.1", &format!("--port={port}"), "cat"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("wsbridge: cannot listen on 127.0.0.1:"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn go_style_single_dash_flags_work() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsbridge"))
        .args(["-port=0", "-address", "127.0.0.1", "cat"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("read");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("wsbridge: listening on ws://127.0.0.1:"), "{line}");
}

fn long_flags() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect()
}

#[test]
fn man_page_documents_every_long_flag() {
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/wsbridge.1")).expect("man page");
    let plain = man
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "");
    let mut flags = long_flags();
    flags.extend(["help".to_owned(), "version".to_owned()]);
    for flag in flags {
        assert!(
            plain.contains(&format!("--{flag}")),
            "--{flag} missing from man/wsbridge.1"
        );
    }
}
