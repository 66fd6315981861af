//! The chat page served at `/`, in a real headless Chromium (Debian's
//! `chromium`, driven by playwright-core: tests/browser/chat_page.mjs): two
//! pages, each on its own node of a cluster joined by a real Redis, log in,
//! chat one-to-one and in a room, and see each other's presence.
//! scripts/test.sh installs chromium, Node.js's playwright-core and Redis.

mod common;

use std::path::Path;
use std::process::Command;

use common::redis::RedisServer;
use common::NodeProc;

/// Runs the page script against two nodes started with `args` (and Redis),
/// the pages logging in with `tokens` when given.
fn run_pages(args: &[&str], tokens: &[String]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/chat_page.mjs");
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    assert!(modules.exists(), "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)");
    let redis = RedisServer::start();
    let url = redis.url();
    let mut all = vec!["--redis", &url];
    all.extend_from_slice(args);
    let nodes: Vec<NodeProc> = (0..2).map(|_| NodeProc::start(&all)).collect();
    let out = Command::new("node")
        .arg(&script)
        .args(nodes.iter().map(|n| format!("http://{}/", n.addr)))
        .args(tokens)
        .output()
        .expect("run node (Node.js) on the browser script");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("chat page: every step passed"), text)
}

#[test]
fn two_pages_on_two_nodes_chat_and_see_each_other() {
    let (passed, output) = run_pages(&[], &[]);
    assert!(passed, "the page test failed:\n{output}");
}

#[test]
fn the_page_logs_in_with_a_token_on_an_authenticated_node() {
    const SECRET: &str = "a secret of at least thirty-two bytes, for tests";
    let mint = |user: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["token", "--user", user, "--ttl", "10m", "--auth-secret", SECRET])
            .output()
            .expect("run switchboard token");
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string()
    };
    let (passed, output) = run_pages(&["--auth-secret", SECRET], &[mint("alice"), mint("bob")]);
    assert!(passed, "the page test failed in authenticated mode:\n{output}");
}

#[test]
fn the_page_is_served_from_the_binary_and_fetches_nothing_from_elsewhere() {
    let node = NodeProc::start(&[]);
    let index = node.http_get("/");
    assert!(index.starts_with("HTTP/1.1 200 "), "{index}");
    assert!(index.contains("Content-Type: text/html"), "{index}");
    for asset in ["/app.js", "/style.css"] {
        assert!(index.contains(&format!("\"{asset}\"")), "the page loads {asset}");
        let reply = node.http_get(asset);
        assert!(reply.starts_with("HTTP/1.1 200 "), "{asset}: {reply}");
    }
    for body in [index, node.http_get("/app.js"), node.http_get("/style.css")] {
        assert!(!body.contains("http://") && !body.contains("https://"), "no CDN, no remote fetch");
    }
}
