//! Nothing outside `--staticdir`, `--cgidir` or `--dir` is ever served or run, even while
//! an attacker who can write inside swaps a file for a symlink to the outside and back
//! as fast as they can. Checking and using are one step (`openat2` with
//! `RESOLVE_BENEATH`, then the opened file or the pinned directory entry), so there is no
//! gap to hit. Each test runs the real binary twice: with `openat2`, and with the fallback
//! for kernels before 5.6 (`WSBRIDGE_NO_OPENAT2=1`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long one race may run, whatever its count.
const RACE_TIME: Duration = Duration::from_secs(20);

/// A fresh directory with `root/` (served) and `secret.txt` and `outside.sh` beside it.
struct Tree {
    dir: PathBuf,
}

impl Tree {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wsbridge-confine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).expect("mkdir");
        std::fs::write(dir.join("secret.txt"), "SECRET-OUTSIDE\n").expect("secret");
        let dir = std::fs::canonicalize(dir).expect("canonical");
        Tree { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn script(&self, path: &Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, body).expect("write script");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Swaps `root/NAME` between a regular file with `inside` (mode 0755) and a symlink to
/// `../TARGET`, each by an atomic rename, until stopped.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(root: PathBuf, name: &'static str, inside: &'static str, target: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            use std::os::unix::fs::PermissionsExt;
            let (file, link, dest) = (root.join(".f"), root.join(".l"), root.join(name));
            let mut swaps = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(format!("../{target}"), &link).expect("symlink");
                std::fs::rename(&link, &dest).expect("rename link");
                std::fs::write(&file, inside).expect("write file");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
                std::fs::rename(&file, &dest).expect("rename file");
                swaps += 1;
            }
            swaps
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("thread").join().expect("swapper")
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a race produced.
#[derive(Debug, Default)]
struct Tally {
    asked: u32,
    inside: u32,
    outside: u32,
}

/// Runs `count` requests of `one` (spread over 4 tasks, at most [`RACE_TIME`]); each says
/// whether it got the inside answer, the outside one, or neither (404 and the like).
async fn race<F, Fut>(count: u32, one: F) -> Tally
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<bool>> + Send,
{
    let one = Arc::new(one);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let one = Arc::clone(&one);
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            while t.asked < count / 4 && started.elapsed() < RACE_TIME {
                t.asked += 1;
                match one().await {
                    Some(true) => t.inside += 1,
                    Some(false) => t.outside += 1,
                    None => {}
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = within(RACE_TIME + STEP, t).await.expect("race task");
        all.asked += t.asked;
        all.inside += t.inside;
        all.outside += t.outside;
    }
    all
}

fn variants() -> [(&'static str, &'static [(&'static str, &'static str)]); 2] {
    [("openat2", &[]), ("no-openat2", &[("WSBRIDGE_NO_OPENAT2", "1")])]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_never_come_from_outside_during_a_symlink_race() {
    for (tag, env) in variants() {
        let tree = Tree::new(&format!("static-{tag}"));
        let root = tree.root().display().to_string();
        let server = BinServer::start_with_env(&[&format!("--staticdir={root}")], env);
        let swapper = Swapper::start(tree.root(), "race", "public\n", "secret.txt");
        let addr = server.addr;
        let tally = race(3000, move || async move {
            let a = crate::common::rawhttp::get(addr, "/race").await;
            let text = a.text();
            assert!(!text.contains("SECRET"), "served from outside the root: {a:?}");
            match a.status {
                200 if text == "public\n" => Some(true),
                _ => None,
            }
        })
        .await;
        let swaps = swapper.stop();
        eprintln!("{tag}: {tally:?}, {swaps} swaps");
        assert_eq!(tally.outside, 0, "{tag}: {tally:?}");
        assert!(
            tally.inside > 0,
            "{tag}: the race never served the inside file: {tally:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgi_never_runs_a_script_from_outside_during_a_symlink_race() {
    const INSIDE: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ninside\\n'\n";
    for (tag, env) in variants() {
        let tree = Tree::new(&format!("cgi-{tag}"));
        tree.script(
            &tree.dir.join("outside.sh"),
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nOUTSIDE\\n'\n",
        );
        let root = tree.root().display().to_string();
        let server = BinServer::start_with_env(&[&format!("--cgidir={root}")], env);
        let swapper = Swapper::start(tree.root(), "race.cgi", INSIDE, "outside.sh");
        let addr = server.addr;
        let tally = race(800, move || async move {
            let a = crate::common::rawhttp::get(addr, "/race.cgi").await;
            match (a.status, a.text().as_str()) {
                (200, "inside\n") => Some(true),
                (_, t) if t.contains("OUTSIDE") => Some(false),
                _ => None,
            }
        })
        .await;
        let swaps = swapper.stop();
        eprintln!("{tag}: {tally:?}, {swaps} swaps");
        assert_eq!(tally.outside, 0, "{tag}: ran a script outside --cgidir: {tally:?}");
        assert!(
            tally.inside > 0,
            "{tag}: the race never ran the inside script: {tally:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_never_starts_a_program_from_outside_during_a_symlink_race() {
    const INSIDE: &str = "#!/bin/sh\necho inside\nread -r _\n";
    for (tag, env) in variants() {
        let tree = Tree::new(&format!("dir-{tag}"));
        tree.script(&tree.dir.join("outside.sh"), "#!/bin/sh\necho OUTSIDE\nread -r _\n");
        let root = tree.root().display().to_string();
        let server = BinServer::start_with_env(&[&format!("--dir={root}")], env);
        let swapper = Swapper::start(tree.root(), "race.sh", INSIDE, "outside.sh");
        let url = server.url("/race.sh");
        let tally = race(400, move || {
            let url = url.clone();
            async move {
                let (mut ws, _) = match within(STEP, tokio_tungstenite::connect_async(url.as_str())).await {
                    Ok(x) => x,
                    Err(_) => return None, // 404 or 500: nothing ran
                };
                let first = recv_text(&mut ws).await;
                let _ = within(STEP, ws.close(None)).await;
                match first.as_str() {
                    "inside" => Some(true),
                    "OUTSIDE" => Some(false),
                    other => panic!("unexpected first message {other:?}"),
                }
            }
        })
        .await;
        let swaps = swapper.stop();
        eprintln!("{tag}: {tally:?}, {swaps} swaps");
        assert_eq!(tally.outside, 0, "{tag}: started a program outside --dir: {tally:?}");
        assert!(
            tally.inside > 0,
            "{tag}: the race never started the inside program: {tally:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_scripts_still_find_their_directory() {
    // A `#!` script run from its checked descriptor has `$0` = /dev/fd/N; it finds its
    // own directory through SCRIPT_FILENAME (and a CGI script through its working
    // directory, as before).
    let tree = Tree::new("dollar0");
    std::fs::write(tree.root().join("sibling.txt"), "from-sibling\n").expect("sibling");
    tree.script(
        &tree.root().join("s.sh"),
        "#!/bin/sh\necho \"$0\"\ncat \"$(dirname \"$SCRIPT_FILENAME\")/sibling.txt\"\nread -r _\n",
    );
    tree.script(
        &tree.root().join("s.cgi"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\ncat sibling.txt \"$(dirname \"$SCRIPT_FILENAME\")/sibling.txt\"\n",
    );
    let root = tree.root().display().to_string();
    let server = BinServer::start(&[&format!("--dir={root}")]);
    let mut ws = connect(&server.url("/s.sh")).await;
    let zero = recv_text(&mut ws).await;
    assert!(zero.starts_with("/dev/fd/"), "$0 = {zero}");
    assert_eq!(recv_text(&mut ws).await, "from-sibling");
    drop(ws);
    let cgi = BinServer::start(&[&format!("--cgidir={root}")]);
    let a = crate::common::rawhttp::get(cgi.addr, "/s.cgi").await;
    assert_eq!(
        (a.status, a.text().as_str()),
        (200, "from-sibling\nfrom-sibling\n"),
        "{}",
        cgi.log()
    );
}
