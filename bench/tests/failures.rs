//! Why connections failed, from the side that acted (the node's close frame or HTTP
//! status, the kernel's errno, the load generator's own timeout), and a run cut short by
//! a signal that still reports.

mod common;

use std::time::{Duration, Instant};

use common::{
    dead_port, finish_loadgen, run_loadgen, spawn_loadgen_with_progress, wait_for_phase, Behaviour, TestServer,
};

#[test]
fn a_close_frame_names_the_nodes_rule() {
    let closing =
        Behaviour { close_after_login: Some((1008, "slow consumer: 1048577 bytes pending")), ..Behaviour::default() };
    let server = TestServer::with(closing);
    let url = server.url("/ws");
    let run = run_loadgen(&["--url", &url, "--connections", "40"]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let node = &run.summary["causes"]["node"];
    assert_eq!(node["total"], 40, "{}", run.summary["causes"]);
    assert_eq!(node["by_cause"]["close 1008 \"slow consumer\" during login"], 40, "{node}");
    assert_eq!(run.summary["causes"]["kernel"]["total"], 0);
    assert_eq!(run.summary["errors"]["closed_by_server"], 40);
    assert!(
        run.stderr.contains("why:     the node closed it 40: close 1008 \"slow consumer\" during login 40"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_http_error_is_the_nodes_and_a_refusal_the_kernels() {
    let server = TestServer::with(Behaviour { refuse_with: Some("503 Service Unavailable"), ..Behaviour::default() });
    let url = server.url("/ws");
    let run = run_loadgen(&["--url", &url, "--connections", "30"]);
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("node: HTTP 503 Service Unavailable during handshake 30"), "{}", run.stderr);

    let url = format!("ws://127.0.0.1:{}/ws", dead_port());
    let run = run_loadgen(&["--url", &url, "--connections", "30"]);
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("kernel: ECONNREFUSED during connect 30"), "{}", run.stderr);
}

#[test]
fn a_timeout_is_the_load_generators() {
    // Accepts TCP, never answers the upgrade.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let run = run_loadgen(&["--url", &url, "--connections", "10", "--connect-timeout", "1"]);
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("loadgen: timed out waiting for the WebSocket handshake answer during handshake 10"),
        "{}",
        run.stderr
    );
    drop(listener);
}

#[test]
fn a_stop_signal_cuts_the_run_short_and_everything_is_still_written() {
    let server = TestServer::start(0);
    let url = server.url("/ws");
    let dir = std::env::temp_dir().join(format!("loadgen-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("run.json"), dir.join("run.svg"));
    let started = Instant::now();
    let mut child = spawn_loadgen_with_progress(&[
        "--url",
        &url,
        "--connections",
        "60",
        "--hold",
        "60",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let stderr = wait_for_phase(&mut child, "hold", Duration::from_secs(20)).expect("hold never started");
    // SAFETY: a plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let run = finish_loadgen(child, started);
    let stderr = stderr.join().unwrap();
    assert_eq!(run.code, 1, "stderr: {stderr}");
    assert!(run.elapsed < Duration::from_secs(20), "took {:?}", run.elapsed);
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(written["cut_short"], "interrupted by SIGTERM");
    assert_eq!(written["connect"]["established"], 60);
    assert!(written["failures"].to_string().contains("cut short"), "{}", written["failures"]);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    assert!(stderr.contains("run:     cut short (interrupted by SIGTERM)"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
