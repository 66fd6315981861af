//! switchboard: a WebSocket chat backend that holds many connections per core and
//! joins nodes through Redis.
//!
//! # Layout
//!
//! - [`config`]: every knob, its default and why that default; where each
//!   setting came from (flag, environment, file); what is refused at start.
//! - [`auth`]: signed tokens (authenticated mode), the Origin check, `switchboard token`.
//! - [`names`]: the user-name profile: what a name may hold, the key it is unique under.
//! - [`server`]: starts a node: open-file limit, listeners, reactors, the bus;
//!   runs it until a signal drains it.
//! - `signals`: the signals a node acts on (stop, reload), taken synchronously.
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz`, on a router.
//! - `api`: the server API on the admin listener (`/api/...`, a bearer key):
//!   publish, disconnect, presence and history for an application backend.
//! - `answers`: bus answers for callers that are no reactor (the server API).
//! - [`logging`]: JSON or text log lines, rate-limited warnings.
//! - `reactor`: one poll loop per thread: accept, read, frames, chat, write,
//!   timers, close, drain; a connection's state lives there and nowhere else.
//! - [`handshake`]: the HTTP side of the chat port: WebSocket upgrade, `/healthz`, errors.
//! - [`codec`]: RFC 6455 frame headers, masking, close codes.
//! - [`protocol`]: the seed's chat messages (parse, validate, encode byte-exact).
//! - `hub`: what every thread of a node shares: inboxes, directory, metrics.
//! - `inbox`: what other threads send a reactor: a lock-free queue plus a coalesced wake.
//! - `directory`: which connection on this node holds which user name.
//! - `rooms`: which rooms have members on this node, on which reactors.
//! - `bus`: node-to-node delivery: in-process (embedded default) or Redis.
//! - `metrics`: counters and gauges, rendered for `/metrics`.
//! - `limits`: the process's open-file limit.
//! - `admission`: connections per source address and per second, node-wide.
//! - `alloc`: the allocator's settings: freed memory goes back to the system.
//! - `web`: the chat page served at `/` (static files built into the binary).
//!
//! The public API is what the binary and the tests use: the parsers and
//! encoders of the wire, the token verifier and the name profile (fuzzed by
//! `tests/garbage.rs`), the configuration, the admin router and [`server::run`].

pub mod admin;
mod admission;
mod alloc;
mod answers;
mod api;
pub mod auth;
mod bus;
pub mod codec;
pub mod config;
mod directory;
pub mod handshake;
mod hub;
mod inbox;
mod limits;
pub mod logging;
mod metrics;
pub mod names;
pub mod protocol;
mod reactor;
mod rooms;
pub mod server;
mod signals;
mod web;
