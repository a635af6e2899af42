//! The binary as a user runs it: startup errors and exit codes, help and version, the
//! man page covering every flag.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use wsbridge::cli;

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
    // Out of range: clap's own invalid-value error, naming the flag and the range.
    for (args, needle) in [
        (
            &["--maxframesize=0", "cat"],
            "'--maxframesize <BYTES>': must be a whole number from 1 to",
        ),
        (
            &["--cgitimeout=0", "cat"],
            "'--cgitimeout <SECS>': must be a whole number from 1 to",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).starts_with("error: invalid value '0' for ") && stderr(&o).contains(needle));
    }
    // Found by wsbridge after parsing, printed the way clap prints its own.
    for (args, needle) in [
        (&["--passstderr", "--binary", "cat"][..], "it needs line framing"),
        (&["--binary", "--framing=line", "cat"], "give only one of them"),
        (&["--origin=http://", "cat"], "invalid --origin entry"),
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
    let usage = cli::command().render_usage().to_string();
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
    cli::command()
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

/// The man page's source as plain text: escapes and font changes removed.
fn man_plain(src: &str) -> String {
    src.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
        .replace("\\fP", "")
        .replace("\\%", "")
        .replace("\\&", "")
}

/// The man page's entry for `--flag` under OPTIONS: its tag line (`--flag=VALUE`) and its
/// body, each as plain text with the words of the body joined by single spaces.
fn man_entry(man: &str, flag: &str) -> Option<(String, String)> {
    let options = &man[man.find("\n.SH OPTIONS\n")?..];
    let options = &options[..options[1..].find("\n.SH ").map_or(options.len(), |e| e + 1)];
    let tag = format!("\\fB{}\\fR", format!("--{flag}").replace('-', "\\-"));
    let at = options.find(&format!(".TP\n{tag}"))? + 4;
    let rest = &options[at..];
    let end = [rest.find("\n.TP\n"), rest.find("\n.SS ")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    let (tag_line, body) = rest[..end].split_once('\n')?;
    let body: Vec<&str> = body
        .lines()
        .map(|l| {
            l.strip_prefix('.')
                .map_or(l, |m| m.split_once(' ').map_or("", |(_, t)| t))
        })
        .collect();
    let body = man_plain(&body.join(" "))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Some((man_plain(tag_line), body))
}

/// `--flag=VALUE`, or `--flag[=VALUE]` for a flag whose value is optional.
fn spelling(arg: &clap::Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    let value = arg.get_value_names().map(|v| v[0].to_string()).unwrap_or_default();
    if arg.get_num_args().is_some_and(|n| n.min_values() == 0) {
        format!("--{long}[={value}]")
    } else {
        format!("--{long}={value}")
    }
}

#[test]
fn help_man_page_and_readme_agree_on_value_names_headings_and_defaults() {
    let root = env!("CARGO_MANIFEST_DIR");
    let man = std::fs::read_to_string(format!("{root}/man/wsbridge.1")).expect("man page");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    let options = &readme[readme.find("\n## Options\n").expect("README Options")..];
    let options = &options[..options[1..].find("\n## ").expect("next section") + 1];
    for arg in cli::command().get_arguments().filter(|a| a.get_long().is_some()) {
        let long = arg.get_long().unwrap_or_default();
        if matches!(long, "help" | "version") {
            continue;
        }
        let spelling = spelling(arg);
        let heading = arg.get_help_heading().unwrap_or_default();
        let (tag, body) = man_entry(&man, long).unwrap_or_else(|| panic!("no man entry for --{long}"));
        assert_eq!(tag, spelling, "man page tag of --{long}");
        // Under the same heading in the man page (.SS) and in README (###).
        let man_heading = man[..man
            .find(&format!(".TP\n\\fB{}\\fR", format!("--{long}").replace('-', "\\-")))
            .expect("entry")]
            .rfind("\n.SS ")
            .map(|at| man[at + 5..].lines().next().unwrap_or_default().to_owned());
        assert_eq!(man_heading.as_deref(), Some(heading), "man page heading of --{long}");
        let row = options
            .lines()
            .find(|l| l.starts_with("| `") && l.contains(&format!("`{spelling}`")))
            .unwrap_or_else(|| panic!("README Options has no row for `{spelling}`"));
        let readme_heading = options[..options.find(row).expect("row")]
            .rfind("\n### ")
            .map(|at| options[at + 5..].lines().next().unwrap_or_default());
        assert_eq!(readme_heading, Some(heading), "README heading of --{long}");
        for default in arg.get_default_values() {
            let default = default.to_string_lossy();
            assert!(
                body.contains(&format!("Default: {default}")),
                "man page: --{long} default {default}: {body}"
            );
            let column = row.split(" | ").nth(1).unwrap_or_default();
            assert!(column.contains(&*default), "README: --{long} default {default}: {row}");
        }
    }
}

/// The man page rendered by groff at a narrow width, if groff is installed.
fn render_man(width: u32) -> Option<String> {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", &format!("-rLL={width}n"), "-P-cbou", "-ww"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/man/wsbridge.1"))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    assert!(out.status.success(), "groff: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn man_page_never_breaks_a_flag_or_command_across_lines() {
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/wsbridge.1")).expect("man page");
    assert!(man.lines().any(|l| l == ".nh"), "hyphenation must be off (.nh)");
    // Outside requests' names, every dash of a flag is \- (groff may break after a plain
    // hyphen, and renders \- as the ASCII hyphen-minus that a shell needs).
    for (n, line) in man.lines().enumerate().filter(|(_, l)| !l.starts_with(".\\\"")) {
        for w in line.split_whitespace().filter(|w| !w.starts_with('.')) {
            let w = w.trim_start_matches(['"', '(', '[']);
            let flag = w.starts_with('-') && w[1..].starts_with(|c: char| c == '-' || c.is_ascii_alphabetic());
            assert!(!flag, "man/wsbridge.1:{}: a flag with a plain dash: {w:?}", n + 1);
        }
    }
    let Some(_) = render_man(60) else {
        assert!(std::env::var_os("CI").is_none(), "groff is missing in CI");
        eprintln!("skipped: groff is not installed");
        return;
    };
    for width in [30, 45, 60] {
        let page = render_man(width).expect("groff");
        for line in page.lines() {
            let last = line.split_whitespace().last().unwrap_or_default();
            if last.len() > 1 && last.ends_with(['-', '\u{2010}']) {
                assert!(
                    !last.starts_with(['-', '\u{2212}']) && !last.contains(['=', '/']),
                    "width {width}: a flag or command is broken at the end of {line:?}"
                );
            }
            assert!(
                !line.contains('\u{2212}'),
                "width {width}: a minus sign (not a hyphen-minus) in {line:?}"
            );
        }
    }
}
