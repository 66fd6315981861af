//! The admin listener: `/metrics`, `/healthz` and `/readyz` on an address of
//! their own (`--admin-addr`, loopback by default), off the public chat port.
//!
//! It runs on its own thread, away from the reactors: one short-lived thread
//! per request, at most [`MAX_REQUESTS_IN_FLIGHT`] at once, each bounded by
//! [`IO_TIMEOUT`], so a stuck scraper cannot hold it. The [`router`] takes
//! further endpoints (POST with a bearer key) as they come.

pub mod router;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use self::router::{Response, Router};
use crate::hub::Hub;

/// Requests served at once; past it a connection is closed unanswered.
const MAX_REQUESTS_IN_FLIGHT: usize = 16;
/// Longest a request may take to arrive or its answer to be taken.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` (never with SO_REUSEPORT: the admin port is this node's
/// alone) and serves it on a thread of its own. Returns the bound address.
///
/// # Errors
/// When the address cannot be bound or the thread cannot start.
pub fn start(addr: SocketAddr, hub: Arc<Hub>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let router = Arc::new(routes(hub));
    std::thread::Builder::new().name("admin".into()).spawn(move || serve(&listener, &router))?;
    Ok(bound)
}

/// What the admin listener answers.
fn routes(hub: Arc<Hub>) -> Router {
    let metrics = Arc::clone(&hub);
    Router::new()
        .get("/metrics", move |_| {
            Response::with_type(200, "text/plain; version=0.0.4", metrics.metrics.render().into_bytes())
        })
        .get("/healthz", |_| Response::text(200, "ok\n"))
        .get("/readyz", move |_| {
            if hub.metrics.node.draining.load(Ordering::Relaxed) != 0 {
                Response::text(503, "draining\n")
            } else {
                Response::text(200, "ready\n")
            }
        })
}

fn serve(listener: &TcpListener, router: &Arc<Router>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                crate::warn_limited!(Duration::from_secs(10), "admin listener: accept failed: {e}");
                // Out of descriptors: give the reactors' closes a moment.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_REQUESTS_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            crate::warn_limited!(
                Duration::from_secs(10),
                "admin listener: {MAX_REQUESTS_IN_FLIGHT} requests in flight, refusing more"
            );
            continue;
        }
        let router = Arc::clone(router);
        let done = Arc::clone(&in_flight);
        let spawned = std::thread::Builder::new().name("admin-request".into()).spawn(move || {
            answer(stream, &router);
            done.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Reads one request, answers it, closes.
fn answer(mut stream: TcpStream, router: &Router) {
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err() || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err() {
        return;
    }
    let response = match router::read_request(&mut stream) {
        Ok(Some(request)) => router.route(&request),
        Ok(None) => return,
        Err(refusal) => refusal,
    };
    // A peer that left early gets nothing; there is no one to tell.
    let _ = response.write_to(&mut stream);
}
