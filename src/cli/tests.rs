//! Unit tests of the parsing rules in [`super`].

use super::*;

fn parse(words: &[&str]) -> Cli {
    let mut v = vec![OsString::from("wsbridge")];
    v.extend(words.iter().map(OsString::from));
    Cli::try_parse_args(v).expect("parses")
}

#[test]
fn everything_after_program_belongs_to_it() {
    let cli = parse(&["--port=8080", "./x.sh", "--port=9", "-n", "--", "y"]);
    assert_eq!(cli.port, Some(8080));
    assert_eq!(cli.program.as_deref(), Some("./x.sh".as_ref()));
    assert_eq!(cli.args, ["--port=9", "-n", "--", "y"]);
}

#[test]
fn go_style_single_dash_and_separate_values() {
    let cli = parse(&["-port", "81", "-binary", "-address=127.0.0.1", "cat"]);
    assert_eq!(cli.port, Some(81));
    assert!(cli.binary);
    assert_eq!(cli.address, ["127.0.0.1"]);
    assert_eq!(cli.program.as_deref(), Some("cat".as_ref()));
}

#[test]
fn go_style_help_and_version_are_usage_not_errors() {
    for word in ["-help", "-version"] {
        let err = Cli::try_parse_args(["wsbridge", word].map(OsString::from)).unwrap_err();
        assert_eq!(err.exit_code(), 0, "{word}");
    }
}

#[test]
fn connect_needs_no_program_and_keeps_program_args() {
    let cli = parse(&["-connect", "ws://h/", "--reconnect", "cat", "--connect=x"]);
    assert_eq!(cli.connect.as_deref(), Some("ws://h/"));
    assert!(cli.reconnect);
    assert_eq!(cli.program.as_deref(), Some("cat".as_ref()));
    assert_eq!(cli.args, ["--connect=x"]);
    let cli = parse(&["--connect=ws://h/", "--proxy=http://p:1"]);
    assert!(cli.program.is_none());
    assert_eq!(cli.proxy.as_deref(), Some("http://p:1"));
}

#[test]
fn boolean_false_form() {
    let cli = parse(&["--binary=false", "--sameorigin=true", "cat"]);
    assert!(!cli.binary);
    assert!(cli.sameorigin);
}

#[test]
fn unknown_flag_and_missing_program_are_usage_errors() {
    let err = Cli::try_parse_args(["wsbridge", "--bogus", "cat"].map(OsString::from)).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let err = Cli::try_parse_args(["wsbridge", "--port=1"].map(OsString::from)).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let cli = parse(&["--staticdir=www"]);
    assert!(cli.program.is_none());
}

#[test]
fn usage_errors_found_later_look_like_clap_s_own() {
    let ours = Cli::usage_error("--a cannot be combined with --b");
    assert_eq!(ours.exit_code(), 2);
    let text = ours.to_string();
    assert!(
        text.starts_with("error: --a cannot be combined with --b\n\nUsage: wsbridge "),
        "{text}"
    );
    assert!(text.ends_with("\n\nFor more information, try '--help'.\n"), "{text}");
    // The same frame as an error clap finds itself.
    let clap_s = Cli::try_parse_args(["wsbridge", "--bogus", "cat"].map(OsString::from)).unwrap_err();
    let usage = |t: &str| t.lines().find(|l| l.starts_with("Usage: ")).map(str::to_owned);
    assert_eq!(usage(&text), usage(&clap_s.to_string()));
}
