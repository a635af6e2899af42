//! `--broker` (cargo feature `nats`): `--shared` across instances through a real
//! `nats-server` started by the test on a loopback port (`-p -1`, the port read from its
//! log) and stopped by pid. One producer (`--shared --broker --topic PROGRAM`) and two
//! edges (`--broker --topic`, no PROGRAM): 100 clients over the three get the same ordered
//! stream and an edge's input reaches the program; `ids` answers reach a client on another
//! instance; the broker stopped and restarted mid-stream (the stream resumes; what was
//! lost is printed and bounded); an edge stopped with SIGTERM closes its clients with
//! 1001 while the others keep receiving; TLS with `--broker-ca`, credentials from the URL
//! and from `--broker-creds`, never logged; the README's scale-out recipe through nginx
//! (`recipe`). The usage errors of half-configured command lines need no broker.
//!
//! Without `nats-server` these tests skip with a note, or fail when `CI=true`;
//! `tools/test.sh` installs it.

use crate::common::deploy::run_to_exit;
use crate::common::*;

#[test]
fn half_configured_broker_command_lines_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--topic=t", "sh"], "need --broker=URL"),
        (&["--broker=nats://127.0.0.1:1"], "--broker needs --topic=NAME"),
        (&["--broker=nats://127.0.0.1:1", "--topic=t", "sh"], "needs --shared"),
        (&["--broker=nats://127.0.0.1:1", "--topic=a.b"], "invalid --topic=a.b"),
        (
            &["--broker=nats://127.0.0.1:1", "--topic=t", "--shared=once"],
            "an edge",
        ),
        (&["--broker=nats://127.0.0.1:1", "--topic=t", "--broker-ca=x"], "tls://"),
        (&["--broker=127.0.0.1:4222", "--topic=t"], "expected nats://"),
        (&["--broker=nats://h", "--topic=t", "--dir=/tmp"], "--dir"),
    ];
    for (args, needle) in cases {
        let (code, stderr) = run_to_exit(args);
        assert_usage_error(code, &stderr, needle);
    }
    if cfg!(feature = "connect") {
        let (code, stderr) = run_to_exit(&["--connect=ws://h/", "--topic=t"]);
        assert_usage_error(code, &stderr, "--topic is a server flag");
    }
    // A password never shows, not even in the error about its own URL.
    let (code, stderr) = run_to_exit(&["--broker=nats://u:hunter2@h:1/x", "--topic=t"]);
    assert_usage_error(code, &stderr, "invalid --broker=nats://***@h:1/x");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let (code, stderr) = run_to_exit(&["--broker=nats://u:hunter,2@h", "--topic=t"]);
    assert_usage_error(code, &stderr, "invalid --broker=nats://***@h");
    assert!(!stderr.contains("hunter"), "{stderr}");
}

#[cfg(not(feature = "nats"))]
#[test]
fn without_the_nats_feature_broker_fails_at_startup() {
    let (code, stderr) = run_to_exit(&["--broker=nats://127.0.0.1:1", "--topic=t"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("built without NATS (cargo feature `nats`)"), "{stderr}");
}

#[cfg(feature = "nats")]
mod live;
#[cfg(feature = "nats")]
mod recipe;
