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

#[test]
fn two_pages_on_two_nodes_chat_and_see_each_other() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/chat_page.mjs");
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    assert!(modules.exists(), "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)");
    let redis = RedisServer::start();
    let nodes: Vec<NodeProc> = (0..2).map(|_| NodeProc::start(&["--redis", &redis.url()])).collect();
    let out = Command::new("node")
        .arg(&script)
        .args(nodes.iter().map(|n| format!("http://{}/", n.addr)))
        .output()
        .expect("run node (Node.js) on the browser script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the page test failed:\n{stdout}{stderr}");
    assert!(stdout.contains("chat page: every step passed"), "{stdout}{stderr}");
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
