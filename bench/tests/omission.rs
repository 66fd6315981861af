//! Latency from the intended send time (no coordinated omission): a server that stalls
//! once, and a load generator that stalls once, both show in the headline latency; only
//! the first shows in the service time, and the second shows as the generator's lag.

mod common;

use std::time::{Duration, Instant};

use common::{children_of, finish_loadgen, spawn_loadgen_with_progress, wait_for_phase, Behaviour, TestServer};

const STALL: Duration = Duration::from_millis(500);

fn us(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_server_that_stalls_once_shows_in_the_p99() {
    // 1,000 messages/s for 2 s, and the server stops the world for 500 ms after its 500th
    // message: the stall covers about 25% of the messages, well over 1%.
    let server = TestServer::with(Behaviour { stall_after: Some((500, STALL)), ..Behaviour::default() });
    let url = server.url("/ws");
    let run = common::run_loadgen(&[
        "--url",
        &url,
        "--connections",
        "20",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--grace",
        "3",
    ]);
    let s = &run.summary;
    assert_eq!(s["chat"]["lost"], 0, "stderr: {}", run.stderr);
    let latency = &s["chat"]["latency"];
    // A message meant to go t ms into the stall waits 500 - t ms, so with a share f of the
    // messages inside it, the top 1% wait at least 500 * (1 - 0.01 / f) ms: 480 ms at 25%.
    // 450 ms leaves room for where exactly the stall begins.
    assert!(us(&latency["p99_us"]) >= 450_000, "intended-time p99 {latency} misses the stall; stderr: {}", run.stderr);
    assert!(us(&latency["max_us"]) >= 480_000, "max {latency}");
    // The load generator kept to its schedule (the kernel took what the server did not
    // read), so the service time shows the stall too, and the lag stays small.
    assert!(us(&s["chat"]["service_latency"]["p99_us"]) >= 450_000, "{}", s["chat"]);
    assert!(us(&s["chat"]["generator_lag"]["p99_us"]) < 100_000, "{}", s["chat"]);
    assert!(run.stderr.contains("(from the intended send time)"), "{}", run.stderr);
}

#[test]
fn a_load_generator_that_stalls_once_shows_in_the_p99_and_its_lag() {
    let server = TestServer::start(0);
    let url = server.url("/ws");
    let started = Instant::now();
    let mut child = spawn_loadgen_with_progress(&[
        "--url",
        &url,
        "--connections",
        "20",
        "--workers",
        "1",
        "--rate",
        "1000",
        "--duration",
        "3",
        "--grace",
        "3",
    ]);
    let stderr = wait_for_phase(&mut child, "chat", Duration::from_secs(20)).expect("chat never started");
    // Freeze the worker 500 ms, as a CPU-starved machine would: what its schedule held
    // meanwhile goes out late, in a burst, and is timed from when it was meant to go.
    let worker = *children_of(child.id()).first().expect("a worker process");
    // SAFETY: plain signals to our own child's child.
    unsafe { libc::kill(worker as i32, libc::SIGSTOP) };
    std::thread::sleep(STALL);
    // SAFETY: as above.
    unsafe { libc::kill(worker as i32, libc::SIGCONT) };
    let run = finish_loadgen(child, started);
    let stderr = stderr.join().unwrap();
    let chat = &run.summary["chat"];
    assert_eq!(chat["lost"], 0, "stderr: {stderr}");
    assert_eq!(chat["send_behind"], 0, "{chat}");
    // The stall covers 500 of 3,000 messages (17%): p99 at least 500 * (1 - 0.06) ms.
    assert!(us(&chat["latency"]["p99_us"]) >= 400_000, "intended-time p99 misses the stall: {chat}");
    assert!(us(&chat["generator_lag"]["max_us"]) >= 450_000, "lag {chat}");
    assert!(us(&chat["generator_lag"]["p99_us"]) >= 400_000, "lag {chat}");
    // Timed from the actual send, the stall all but vanishes: coordinated omission.
    assert!(
        us(&chat["service_latency"]["p99_us"]) < us(&chat["latency"]["p99_us"]) / 2,
        "service time should hide the load generator's own stall: {chat}"
    );
    assert!(stderr.contains("lag:     load generator behind schedule"), "{stderr}");
    assert!(stderr.contains("(from the actual send)"), "{stderr}");
}
