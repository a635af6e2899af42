//! Interop with an independent client implementation: Python's `websockets` (installed by
//! `tools/test.sh`), against the real binary.

use std::process::Command;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_interoperates() {
    let probe = Command::new("python3")
        .args(["-c", "import websockets"])
        .output()
        .expect("python3 on PATH");
    assert!(
        probe.status.success(),
        "python3 cannot import websockets: run tools/test.sh (it installs it) or `pip install websockets`"
    );
    let echo = BinServer::start(&["cat"]);
    let exit = BinServer::start(&[&fixture("exit.sh"), "3"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop_client.py");
    let run = tokio::process::Command::new("python3")
        .args([script, &echo.url("/"), &exit.url("/")])
        .kill_on_drop(true)
        .output();
    let out = within(STEP * 3, run).await.expect("run python client");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        echo.log()
    );
}
