//! What a user reads: `-h` and `--help` (grouped, fitting 80 columns, defaults in the
//! long help only), typos answered with a suggestion, websocketd flags wsbridge does not
//! implement named with the reason, and numeric flags that name their range. Everything is
//! derived from `cli::command()`, so flags added later are held to the same rules.

use std::process::{Command, Output, Stdio};

use wsbridge::cli::{self, HEADINGS, UNSUPPORTED};

/// The binary with `args`, every stream a pipe (so clap takes the width from `COLUMNS`,
/// not from a terminal the test runner may have).
fn run_at(columns: usize, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsbridge"))
        .args(args)
        .env("COLUMNS", columns.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run wsbridge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn flags() -> Vec<clap::Arg> {
    cli::command()
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !matches!(a.get_long(), Some("help" | "version")))
        .cloned()
        .collect()
}

#[test]
fn help_at_80_columns_has_no_line_over_80() {
    for flag in ["-h", "--help"] {
        let o = run_at(80, &[flag]);
        assert_eq!(o.status.code(), Some(0));
        let out = text(&o.stdout);
        for line in out.lines() {
            assert!(
                line.chars().count() <= 80,
                "{flag}: {} chars: {line:?}",
                line.chars().count()
            );
        }
    }
}

#[test]
fn short_help_is_one_line_per_flag_without_defaults() {
    let out = text(&run_at(80, &["-h"]).stdout);
    for arg in flags() {
        let long = arg.get_long().unwrap_or_default();
        let summary = arg.get_help().map(ToString::to_string).unwrap_or_default();
        assert!(!summary.is_empty(), "--{long} has no help");
        let line = out
            .lines()
            .find(|l| {
                l.trim_start().starts_with(&format!("--{long} ")) || l.trim_start().starts_with(&format!("--{long}["))
            })
            .unwrap_or_else(|| panic!("--{long} missing from -h:\n{out}"));
        assert!(line.ends_with(&summary), "-h at 80 columns wraps --{long}: {line:?}");
    }
    assert!(!out.contains("[default:"), "{out}");
    assert!(!out.contains("possible values"), "{out}");
}

#[test]
fn flags_are_grouped_under_the_known_headings_in_order() {
    let out = text(&run_at(80, &["--help"]).stdout);
    let mut last = 0;
    for arg in flags() {
        let long = arg.get_long().unwrap_or_default();
        let heading = arg
            .get_help_heading()
            .unwrap_or_else(|| panic!("--{long} has no help_heading"));
        assert!(HEADINGS.contains(&heading), "--{long}: unknown heading {heading:?}");
    }
    for heading in HEADINGS {
        if let Some(at) = out.find(&format!("\n{heading}:\n")) {
            assert!(at > last, "{heading} out of order");
            last = at;
        }
    }
    // Each flag is listed under its own heading.
    let mut under = std::collections::HashMap::new();
    let mut current = "";
    for line in out.lines() {
        if let Some(h) = line.strip_suffix(':').filter(|h| !h.starts_with(' ')) {
            current = h;
        } else if let Some(rest) = line.strip_prefix("      --") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            under.insert(name, current);
        }
    }
    for arg in flags() {
        let long = arg.get_long().unwrap_or_default();
        assert_eq!(under.get(long).copied(), arg.get_help_heading(), "--{long}");
    }
}

#[test]
fn long_help_shows_defaults_and_examples_but_no_boolean_values() {
    let out = text(&run_at(80, &["--help"]).stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for arg in flags() {
        let defaults: Vec<_> = arg.get_default_values().iter().map(|v| v.to_string_lossy()).collect();
        if !defaults.is_empty() {
            let want = format!("[default: {}]", defaults.join(","));
            assert!(
                out.contains(&want),
                "--{}: {want} missing",
                arg.get_long().unwrap_or_default()
            );
        }
    }
    assert!(!out.contains("possible values: true, false"), "{out}");
    assert!(out.contains("[possible values: line, nul, binary, lenprefix]"), "{out}");
    assert!(out.contains("Examples: wsbridge --port=8080 ./count.sh"), "{out}");
}

#[test]
fn a_typo_gets_a_suggestion_and_no_double_dash_tip() {
    for spelling in ["--maxfork=3", "-maxfork=3", "--maxfork"] {
        let o = run_at(80, &[spelling, "cat"]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.starts_with("error: unexpected argument '--maxfork' found"), "{err}");
        assert!(err.contains("a similar argument exists: '--maxforks'"), "{err}");
        assert!(!err.contains("as a value"), "{err}");
    }
    let err = text(&run_at(80, &["--bogus", "cat"]).stderr);
    assert!(!err.contains("as a value") && !err.contains("-- --bogus"), "{err}");
}

#[test]
fn websocketd_flags_wsbridge_lacks_get_one_line_saying_why() {
    assert!(!UNSUPPORTED.is_empty());
    for (flag, why) in UNSUPPORTED {
        for spelling in [format!("--{flag}"), format!("-{flag}"), format!("--{flag}=true")] {
            let o = run_at(80, &["--port=0", &spelling, "cat"]);
            assert_eq!(o.status.code(), Some(2));
            assert_eq!(
                text(&o.stderr),
                format!("wsbridge: --{flag} is not supported by wsbridge: {why}\n")
            );
        }
    }
    // After PROGRAM it is the program's.
    assert!(cli::Cli::try_parse_args(["wsbridge", "cat", "--license"].map(Into::into)).is_ok());
}

/// Flags whose value is a number, by their value name.
fn numeric_flags() -> Vec<clap::Arg> {
    flags()
        .into_iter()
        .filter(|a| {
            a.get_value_names()
                .is_some_and(|n| matches!(n[0].as_str(), "N" | "MS" | "SECS" | "BYTES" | "PORT"))
        })
        .collect()
}

#[test]
fn a_number_out_of_range_names_the_flag_and_the_range() {
    let numeric = numeric_flags();
    assert!(numeric.len() >= 10, "{}", numeric.len());
    for arg in numeric {
        let long = arg.get_long().unwrap_or_default();
        let value = arg.get_value_names().expect("value name")[0].to_string();
        for bad in ["-1", "x", "1.5", "99999999999999999999"] {
            for args in [
                vec![format!("--{long}={bad}")],
                vec![format!("--{long}"), bad.to_owned()],
            ] {
                let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
                args.push("cat");
                let o = run_at(80, &args);
                let err = text(&o.stderr);
                assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
                let first = err.lines().next().unwrap_or_default();
                assert!(
                    first.starts_with(&format!(
                        "error: invalid value '{bad}' for '--{long} <{value}>': must be a whole number from "
                    )),
                    "{args:?}: {err}"
                );
            }
        }
    }
    for (args, range) in [
        (["--threads=0", "cat"], "from 1 to 1024"),
        (["--maxforks=-1", "cat"], "from 0 to 4194304"),
        (["--port=70000", "cat"], "from 0 to 65535"),
        (["--closems=x", "cat"], "from 0 to 86400000"),
    ] {
        let err = text(&run_at(80, &args).stderr);
        assert!(err.lines().next().unwrap_or_default().ends_with(range), "{err}");
    }
}

#[test]
fn a_huge_maxforks_is_refused_not_a_panic_at_startup() {
    // Above tokio's semaphore limit this used to start listening and then panic.
    let o = run_at(
        80,
        &[
            "--port=0",
            "--address=127.0.0.1",
            "--maxforks=18446744073709551615",
            "cat",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("panicked"));
}
