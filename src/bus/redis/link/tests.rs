//! A link against scripted servers on loopback: when it counts as up, and
//! when it gives a server up.

use std::io::{Read, Write};
use std::net::TcpListener;

use mio::{Events, Poll};

use super::*;

fn config(reply_timeout_ms: u64) -> Arc<LinkConfig> {
    let mut greeting = Vec::new();
    resp::push_command(&mut greeting, &[b"PING"]);
    Arc::new(LinkConfig {
        greeting,
        greeting_replies: 1,
        tls: None,
        idle_ping: Duration::from_secs(5),
        reply_timeout: Duration::from_millis(reply_timeout_ms),
    })
}

/// A server that reads the greeting and answers `reply` (nothing when empty).
fn server(reply: &'static [u8]) -> (Endpoint, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = Endpoint::from(listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        if !reply.is_empty() {
            s.write_all(reply).unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
    });
    (endpoint, thread)
}

/// Drives the link as the bus loop does until it is up or fails; the failure.
fn drive(link: &mut Link, poll: &mut Poll) -> Option<LinkError> {
    let mut events = Events::with_capacity(8);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let now = Instant::now();
        if let Err(e) = link.try_connect(poll.registry(), now) {
            return Some(e);
        }
        if let Timer::TimedOut(e) = link.check_timers(now, false) {
            return Some(e);
        }
        if let Err(e) = link.flush() {
            return Some(e);
        }
        poll.poll(&mut events, Some(Duration::from_millis(10))).unwrap();
        if link.is_connecting() {
            if let Err(e) = link.finish_connect() {
                return Some(e);
            }
        }
        if link.is_greeting() {
            match link.read_greeting() {
                Ok(true) => return None,
                Ok(false) => {}
                Err(e) => return Some(e),
            }
        }
    }
    panic!("the link neither came up nor failed");
}

#[test]
fn a_link_is_up_only_once_the_greeting_is_answered() {
    let mut poll = Poll::new().unwrap();
    let (endpoint, server) = server(b"+PONG\r\n");
    let mut link = Link::new(endpoint, Token(0), "test", config(1000));
    assert_eq!(drive(&mut link, &mut poll).map(|e| e.to_string()), None);
    assert!(link.is_up());
    server.join().unwrap();
}

#[test]
fn a_refused_greeting_is_a_refusal() {
    let mut poll = Poll::new().unwrap();
    let (endpoint, server) = server(b"-NOAUTH Authentication required.\r\n");
    let mut link = Link::new(endpoint, Token(0), "test", config(1000));
    let why = drive(&mut link, &mut poll).expect("refused");
    assert!(why.is_refusal() && why.to_string().contains("NOAUTH"), "{why}");
    assert!(!link.is_up());
    server.join().unwrap();
}

#[test]
fn a_server_that_accepts_and_never_answers_is_not_up() {
    let mut poll = Poll::new().unwrap();
    let (endpoint, server) = server(b"");
    let mut link = Link::new(endpoint, Token(0), "test", config(200));
    let started = Instant::now();
    let why = drive(&mut link, &mut poll).expect("timed out");
    assert!(matches!(why, LinkError::GreetingTimedOut), "{why}");
    assert!(started.elapsed() < Duration::from_secs(1));
    server.join().unwrap();
}

#[test]
fn a_command_unanswered_past_the_reply_timeout_drops_the_link() {
    let mut poll = Poll::new().unwrap();
    let (endpoint, server) = server(b"+PONG\r\n");
    let mut link = Link::new(endpoint, Token(0), "test", config(200));
    assert!(drive(&mut link, &mut poll).is_none());
    let start = Instant::now();
    assert!(matches!(link.check_timers(start, true), Timer::Quiet));
    assert!(matches!(link.check_timers(start + Duration::from_millis(100), true), Timer::Quiet));
    assert!(matches!(link.check_timers(start + Duration::from_millis(250), true), Timer::TimedOut(_)));
    // Nothing awaited: silence is no failure, only a reason to PING later.
    assert!(matches!(link.check_timers(start + Duration::from_millis(250), false), Timer::Quiet));
    server.join().unwrap();
}
