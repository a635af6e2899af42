//! Settings that can never work are found at startup, with the real binary: `--origin`
//! entries that no browser's `Origin` can match (exit 2, the entry named), and PROGRAM
//! whose `#!` interpreter is missing (exit 1, the interpreter named). A `--dir` script
//! with a missing interpreter gets a 500 whose log line names the interpreter. TLS
//! failures in plain words, with certificates made by the `openssl` command: an X.509 v1
//! certificate (ours at startup, a client's in the handshake log line), a key that is not
//! the certificate's, plain HTTP on the TLS port, a certificate signed with SHA-1; never
//! a Rust debug dump.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[cfg(feature = "tls")]
use crate::common::deploy::{make_ca, openssl};
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
        // `--connect` to this machine must not go through a proxy of the environment.
        for v in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(v);
        }
        cmd.env_remove("wss_proxy").env_remove("ws_proxy");
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

/// No Rust debug dump in a line a user reads.
#[cfg(feature = "tls")]
fn assert_plain(text: &str) {
    for dump in [
        "Other(",
        "OtherError",
        "[6, ",
        "Context {",
        "KeyMismatch",
        "InvalidContentType",
    ] {
        assert!(!text.contains(dump), "{dump:?} in {text}");
    }
}

/// A CA `ca` and, signed by it for localhost, `v3.pem` (with extensions), `v1.pem` (the
/// same key, `openssl x509 -req` without `-extfile`), `sha1.pem` (v3, signed with
/// SHA-1), all with the key `leaf.key`; and `other.key`, a key of another pair.
#[cfg(feature = "tls")]
fn certificates(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    make_ca(&dir.0, "ca");
    let run = |line: &str| openssl(&dir.0, &line.split_whitespace().collect::<Vec<_>>());
    run("req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=localhost");
    run("genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out other.key");
    std::fs::write(
        dir.path("leaf.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write ext");
    let sign = "x509 -req -in leaf.csr -CA ca-ca.pem -CAkey ca-ca.key -CAcreateserial -days 2";
    run(&format!("{sign} -out v3.pem -extfile leaf.ext"));
    run(&format!("{sign} -out v1.pem"));
    run(&format!("{sign} -sha1 -out sha1.pem -extfile leaf.ext"));
    dir
}

#[cfg(feature = "tls")]
fn ssl_args(dir: &TempDir, cert: &str, key: &str) -> Vec<String> {
    vec![
        "--port=0".into(),
        "--address=127.0.0.1".into(),
        "--ssl".into(),
        format!("--sslcert={}", dir.path(cert).display()),
        format!("--sslkey={}", dir.path(key).display()),
    ]
}

#[cfg(feature = "tls")]
#[test]
fn a_v1_certificate_or_a_mismatched_key_is_refused_at_startup_in_words() {
    let dir = certificates("tls-startup");
    let run = |cert: &str, key: &str| {
        let mut args = ssl_args(&dir, cert, key);
        args.push("cat".into());
        run_to_exit(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, err) = run("v1.pem", "leaf.key");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the certificate is X.509 v1; rustls needs X.509 v3: re-issue it with extensions"),
        "{err}"
    );
    assert!(err.contains("-extfile") && err.contains("basicConstraints"), "{err}");
    assert_plain(&err);
    let (code, err) = run("v3.pem", "other.key");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the key does not match the certificate"), "{err}");
    assert!(
        err.contains("other.key") && err.contains("v3.pem"),
        "names both files: {err}"
    );
    assert_plain(&err);
}

#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_failures_are_logged_in_words() {
    let dir = certificates("tls-handshake");
    let mut args = ssl_args(&dir, "v3.pem", "leaf.key");
    args.push(format!("--sslca={}", dir.path("ca-ca.pem").display()));
    args.push("cat".into());
    let server = Proc::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[], 1);
    let addr = server.tcp_addr();

    // Plain HTTP on the TLS port (curl, as a user would try it).
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{addr}/")])
        .kill_on_drop(true)
        .output();
    within(STEP, out).await.expect("run curl");
    server.wait_log("a plain-HTTP client on the TLS port").await;

    // A client certificate that is X.509 v1, with the real openssl client.
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-cert",
            "v1.pem",
            "-key",
            "leaf.key",
        ])
        .args(["-CAfile", "ca-ca.pem"])
        .current_dir(&dir.0)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    within(STEP, out).await.expect("run openssl s_client");
    server
        .wait_log("the client certificate is X.509 v1; rustls needs X.509 v3")
        .await;
    assert_plain(&server.log());
}

#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_signed_with_sha1_is_named_by_its_algorithm() {
    let dir = certificates("tls-sha1");
    let mut args = ssl_args(&dir, "sha1.pem", "leaf.key");
    args.push("cat".into());
    let server = Proc::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[], 1);
    let url = format!("--connect=wss://localhost:{}/", server.tcp_addr().port());
    let ca = format!("--sslca={}", dir.path("ca-ca.pem").display());
    let (code, err) = tokio::task::spawn_blocking(move || run_to_exit(&[&url, &ca]))
        .await
        .expect("client");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("invalid server certificate: signed with ecdsa-with-SHA1 (SHA-1), OID 1.2.840.10045.4.1, which rustls does not accept"),
        "{err}"
    );
    assert_plain(&err);
}

#[test]
fn unix_socket_mode_and_group_are_checked_before_binding() {
    let dir = TempDir::new("unix-flags");
    let sock = format!("--unixsocket={}", dir.path("s.sock").display());
    for (args, needle) in [
        (&["--unixsocket-mode=0660", "cat"][..], "need --unixsocket=PATH"),
        (
            &[&sock, "--unixsocket-mode=0999", "cat"],
            "invalid --unixsocket-mode=0999",
        ),
        (
            &[&sock, "--unixsocket-mode=rw-rw----", "cat"],
            "expected octal permissions",
        ),
    ] {
        let (code, err) = run_to_exit(args);
        assert_usage_error(code, &err, needle);
    }
    let (code, err) = run_to_exit(&[&sock, "--unixsocket-group=no-such-group-xyz", "cat"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err, "wsbridge: --unixsocket-group=no-such-group-xyz: no such group\n");
    assert!(!dir.path("s.sock").exists(), "nothing was bound");
}
