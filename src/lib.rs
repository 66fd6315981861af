//! switchboard: a WebSocket chat backend that holds many connections per core and
//! joins nodes through Redis.
//!
//! # Layout
//!
//! - [`config`]: every knob, its default and why that default.
//! - [`server`]: starts a node: open-file limit, listeners, reactors, the bus.
//! - `reactor`: one poll loop per thread: accept, read, frames, chat, write,
//!   timers, close; a connection's state lives there and nowhere else.
//! - [`handshake`]: the HTTP side: WebSocket upgrade, `/healthz`, `/metrics`, errors.
//! - [`codec`]: RFC 6455 frame headers, masking, close codes.
//! - [`protocol`]: the seed's chat messages (parse, validate, encode byte-exact).
//! - `hub`: what every thread of a node shares: inboxes, directory, metrics.
//! - `inbox`: what other threads send a reactor: a lock-free queue plus a coalesced wake.
//! - `directory`: which connection on this node holds which user name.
//! - `bus`: node-to-node delivery: in-process (embedded default) or Redis.
//! - `metrics`: counters and gauges, rendered for `/metrics`.
//! - `limits`: the process's open-file limit.
//! - `web`: the chat page served at `/` (static files built into the binary).
//!
//! The public API is what the binary and the tests use: the parsers and
//! encoders of the wire (fuzzed by `tests/garbage.rs`), the configuration
//! and [`server::run`].

mod bus;
pub mod codec;
pub mod config;
mod directory;
pub mod handshake;
mod hub;
mod inbox;
mod limits;
mod metrics;
pub mod protocol;
mod reactor;
pub mod server;
mod web;
