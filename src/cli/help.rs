//! How wsbridge's help reads: the examples at the end of `--help`, and [`command`], the
//! one [`Command`] every parse, usage error, help text and completion file comes from.

use clap::builder::StyledStr;
use clap::{Arg, Command, CommandFactory};

use super::Cli;

/// The end of `--help`.
pub const EXAMPLES: &str = "\
Examples:
  wsbridge --port=8080 ./count.sh
      Each connection to ws://HOST:8080/ runs ./count.sh.
  wsbridge --port=8080 --staticdir=www --origin=example.com ./app -v
      Also serve www/ over HTTP; WebSockets from example.com only; -v is ./app's.
  wsbridge --unixsocket=/run/wsbridge.sock --trusted-proxy=unix ./app
      Behind nginx on a Unix socket, with the client addresses nginx forwards.
  wsbridge --port=8080 --dir=scripts
      Every executable under scripts/ is an endpoint at its path.
  echo hi | wsbridge --connect=ws://localhost:8080/
      Send one line to a WebSocket server and print what comes back.

Exit status: 0 stopped by a signal; 1 what the flags name cannot be used;
2 usage error; 3 cannot listen. Everything else: man wsbridge.";

/// clap's [`Command`] for wsbridge, as users see it: [`Cli`]'s, with each flag's default
/// and possible values moved from `-h` (one line per flag) to `--help`, and no
/// `[possible values: true, false]` on booleans. Parsing, usage errors, the help texts
/// and the shell completions all use this one.
pub fn command() -> Command {
    Cli::command().mut_args(long_help_details)
}

fn long_help_details(arg: Arg) -> Arg {
    if arg.is_positional() {
        return arg;
    }
    let mut details = Vec::new();
    let defaults: Vec<_> = arg.get_default_values().iter().map(|v| v.to_string_lossy()).collect();
    if !defaults.is_empty() {
        details.push(format!("[default: {}]", defaults.join(",")));
    }
    let values: Vec<_> = arg
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_owned())
        .collect();
    let boolean = values == ["true", "false"];
    if !values.is_empty() && !boolean {
        details.push(format!("[possible values: {}]", values.join(", ")));
    }
    let summary = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let mut long = arg.get_long_help().map(ToString::to_string).unwrap_or(summary);
    if !details.is_empty() {
        long = format!("{long} {}", details.join(" "));
    }
    arg.hide_default_value(true)
        .hide_possible_values(true)
        .long_help(StyledStr::from(long))
}
