//! The admin listener: `/metrics`, `/healthz` and `/readyz` on an address of
//! their own (`--admin-addr`, loopback by default), off the public chat port.
//!
//! It runs on threads of its own, away from the reactors: one accepts, a
//! small fixed pool answers ([`WORKERS`], each request bounded by
//! [`IO_TIMEOUT`]), and what the pool cannot take soon is closed unanswered,
//! so a stuck scraper cannot hold it and a flood cannot grow it. With an
//! API key the [`router`] also serves the server API (`crate::api`).

pub mod router;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use parking_lot::Mutex;

use self::router::{Response, Router};
use crate::api::Api;
use crate::hub::Hub;

/// Threads answering requests: scrapes and probes come a few per second.
const WORKERS: usize = 2;
/// Accepted requests waiting for a worker; past it a connection is closed unanswered.
const QUEUED: usize = 16;
/// Longest a request may take to arrive or its answer to be taken.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` (never with SO_REUSEPORT: the admin port is this node's
/// alone) and serves it on threads of its own, with the server API's
/// routes when `api` is given. Returns the bound address.
///
/// # Errors
/// When the address cannot be bound or the thread cannot start.
pub fn start(addr: SocketAddr, hub: Arc<Hub>, api: Option<Api>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let max_body = api.as_ref().map_or(router::MAX_BODY_BYTES, Api::max_body);
    let router = routes(hub);
    let router = Arc::new(match api {
        Some(api) => api.routes(router),
        None => router,
    });
    let (queue, requests) = mpsc::sync_channel::<TcpStream>(QUEUED);
    let requests = Arc::new(Mutex::new(requests));
    for i in 0..WORKERS {
        let (router, requests) = (Arc::clone(&router), Arc::clone(&requests));
        std::thread::Builder::new().name(format!("admin-{i}")).spawn(move || loop {
            // The lock is held only while waiting for the next request.
            let next = requests.lock().recv();
            match next {
                Ok(stream) => answer(stream, &router, max_body),
                Err(_) => return,
            }
        })?;
    }
    std::thread::Builder::new().name("admin".into()).spawn(move || serve(&listener, &queue))?;
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

fn serve(listener: &TcpListener, queue: &mpsc::SyncSender<TcpStream>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if queue.try_send(stream).is_err() {
                    crate::warn_limited!(
                        Duration::from_secs(10),
                        "admin listener: {QUEUED} requests already wait, closing more unanswered"
                    );
                }
            }
            Err(e) => {
                crate::warn_limited!(Duration::from_secs(10), "admin listener: accept failed: {e}");
                // Out of descriptors: give the reactors' closes a moment.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Reads one request, answers it, closes.
fn answer(mut stream: TcpStream, router: &Router, max_body: usize) {
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err() || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err() {
        return;
    }
    let response = match router::read_request_within(&mut stream, max_body) {
        Ok(Some(request)) => router.route(&request),
        Ok(None) => return,
        Err(refusal) => refusal,
    };
    // A peer that left early gets nothing; there is no one to tell.
    let _ = response.write_to(&mut stream);
}
