//! Settings that can never work are found at startup, with the real binary: `--origin`
//! entries that no browser's `Origin` can match (exit 2, the entry named), and PROGRAM
//! whose `#!` interpreter is missing (exit 1, the interpreter named). A `--dir` script
//! with a missing interpreter gets a 500 whose log line names the interpreter.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::deploy::{Proc, TempDir};
use crate::common::rawhttp::send;
use crate::common::{assert_usage_error, within, BinServer, STEP};

/// Runs the binary to its exit, under a deadline (a check that passes would start a
/// server instead of exiting).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut cmd = tokio::process::Command::from(Proc::command());
        cmd.args(args).kill_on_drop(true);
        let out = within(STEP, cmd.output()).await.expect("run wsbridge");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn origin_entries_that_can_never_match_are_usage_errors() {
    for (flag, needle) in [
        ("--origin=,", r#"invalid --origin=",": entry 1 is empty"#),
        ("--origin=board,,other", "entry 2 is empty"),
        ("--origin=ws://board:8080", r#"never ws://; write "http://board:8080""#),
        ("--origin=board,wss://board", r#"write "https://board""#),
        (
            "--origin=http://board/app",
            r#"invalid --origin entry "http://board/app""#,
        ),
        ("--origin=board,*", "'*' allows any origin only as the whole value"),
    ] {
        let (code, err) = run_to_exit(&["--port=0", flag, "cat"]);
        assert_usage_error(code, &err, needle);
    }
}

#[test]
fn a_program_whose_interpreter_is_missing_exits_1_naming_it() {
    let dir = TempDir::new("shebang");
    let missing = dir.path("missing.py");
    script(&missing, "#!/no/such/python9 -u\nprint(1)\n");
    let (code, err) = run_to_exit(&["--port=0", missing.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "wsbridge: cannot run {}: its interpreter /no/such/python9 (from the #! line) does not exist\n",
            missing.display()
        )
    );

    let data = dir.path("data.txt");
    std::fs::write(&data, "not a program\n").expect("write");
    let not_exec = dir.path("notexec.sh");
    script(&not_exec, &format!("#!{}\n", data.display()));
    let (code, err) = run_to_exit(&["--port=0", not_exec.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{err}");
    let want = format!(
        "its interpreter {} (from the #! line) is not an executable file",
        data.display()
    );
    assert!(err.contains(&want), "{err}");

    // `#!/usr/bin/env NAME`: env is there, NAME is looked up in the PATH the program gets.
    let via_env = dir.path("env.py");
    script(&via_env, "#!/usr/bin/env no-such-python9\n");
    let (code, err) = run_to_exit(&["--port=0", via_env.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "its #! line runs /usr/bin/env no-such-python9, and no-such-python9 is not on the program's PATH ("
        ),
        "{err}"
    );
    // Not passing PATH means the search path env falls back on.
    let (code, err) = run_to_exit(&["--port=0", "--passenv=HOME", via_env.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("(/bin:/usr/bin, the default: PATH is not in --passenv)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dir_script_whose_interpreter_is_missing_gets_500_and_a_log_line_naming_it() {
    let dir = TempDir::new("shebang-dir");
    script(&dir.path("bad.py"), "#!/no/such/python9\nprint(1)\n");
    script(&dir.path("env.py"), "#!/usr/bin/env no-such-python9\n");
    script(&dir.path("good.sh"), "#!/bin/sh\necho ok\n");
    let server = BinServer::start(&[&format!("--dir={}", dir.0.display())]);
    let status = |path: &str| {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        async move { send(server.addr, raw.as_bytes(), true).await.status }
    };
    assert_eq!(status("/bad.py").await, 500);
    server.wait_log("interpreter=/no/such/python9").await;
    server
        .wait_log("its interpreter /no/such/python9 (from the #! line) does not exist")
        .await;
    assert_eq!(status("/env.py").await, 500);
    server
        .wait_log("and no-such-python9 is not on the program's PATH")
        .await;
    assert_eq!(status("/good.sh").await, 101);
}
