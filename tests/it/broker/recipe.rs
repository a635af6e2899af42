//! The README's scale-out recipe, run as written: nats-server, a producer, two edges and
//! nginx balancing over the edges, with the README's commands and nginx block (free ports
//! instead of the README's fixed ones). Clients through nginx land on both edges and get
//! the same readings from the one producer. Skipped without nginx (or nats-server, unless
//! `CI=true`), like tests/it/nginx.rs.

use std::time::Duration;

use super::live::Nats;
use crate::common::*;
use crate::nginx::{nginx_path, replace_once, Nginx};

const MARK: &str = "<!-- scale-out recipe: tested by tests/it/broker -->";

/// The ```sh and ```nginx blocks after the marker in README.md.
fn recipe() -> (String, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let after = &readme[readme.find(MARK).expect("recipe marker in README.md") + MARK.len()..];
    let block = |text: &str, fence: &str| -> (String, usize) {
        let start = text.find(fence).expect("fence") + fence.len();
        let len = text[start..].find("```").expect("closing fence");
        (text[start..start + len].to_owned(), start + len + 3)
    };
    let (sh, end) = block(after, "```sh\n");
    let (nginx, _) = block(&after[end..], "```nginx\n");
    (sh, nginx)
}

/// A README wsbridge line as arguments: the port freed, the broker's real address, the
/// example's path.
fn wsbridge_args(line: &str, nats: &Nats) -> Vec<String> {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("wsbridge"), "{line}");
    words
        .map(|w| match w {
            w if w.starts_with("--port=") => "--port=0".to_owned(),
            "--broker=nats://127.0.0.1:4222" => format!("--broker={}", nats.url()),
            "examples/sensor.sh" => example("sensor.sh"),
            w => w.to_owned(),
        })
        .collect()
}

/// The `seq` of a sensor reading `{"seq":N,...}`.
fn seq(reading: &str) -> u64 {
    reading
        .strip_prefix("{\"seq\":")
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a reading: {reading:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_scale_out_recipe_serves_one_stream_through_nginx_over_two_edges() {
    let Some(bin) = nginx_path() else {
        eprintln!("nginx is not installed; skipping (tools/test.sh installs it)");
        return;
    };
    let (sh, site) = recipe();
    let lines: Vec<&str> = sh.lines().collect();
    assert_eq!(lines.len(), 4, "nats-server, producer, two edges: {sh}");
    assert_eq!(
        lines[0], "nats-server -a 127.0.0.1 -p 4222",
        "the test runs nats-server so"
    );
    let Some(nats) = Nats::start() else { return };
    let start = |line: &str| {
        let args = wsbridge_args(line, &nats);
        Proc::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[], 1)
    };
    let producer = start(lines[1]);
    let edges = [start(lines[2]), start(lines[3])];
    for p in [&producer, &edges[0], &edges[1]] {
        p.wait_log("broker subscribed").await;
    }
    let site = replace_once(
        &site,
        "server 127.0.0.1:8081;",
        &format!("server {};", edges[0].tcp_addr()),
    );
    let site = replace_once(
        &site,
        "server 127.0.0.1:8082;",
        &format!("server {};", edges[1].tcp_addr()),
    );
    let nginx = Nginx::start_site(&bin, &site);

    // nginx's round robin puts the two clients on different edges.
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(connect(&format!("ws://{}/", nginx.addr())).await);
    }
    for e in &edges {
        e.wait_log("session started").await;
    }
    let first: Vec<u64> = {
        let mut v = Vec::new();
        for c in &mut clients {
            v.push(seq(&recv_text(c).await));
        }
        v
    };
    // Both see the same reading for the same seq, from the one producer.
    let target = first.iter().max().expect("two") + 1;
    let mut seen = Vec::new();
    for c in &mut clients {
        let line = within(Duration::from_secs(20), async {
            loop {
                let r = recv_text(c).await;
                if seq(&r) >= target {
                    return r;
                }
            }
        })
        .await;
        seen.push(line);
    }
    assert_eq!(seen[0], seen[1], "one stream through both edges");
    assert_eq!(seq(&seen[0]), target, "no reading skipped");
}
