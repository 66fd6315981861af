//! switchboard: a WebSocket chat backend that holds many connections per core and
//! joins nodes through Redis.
//!
//! # Layout
//!
//! - [`config`]: every knob, its default and why that default.
//! - [`server`]: starts a node: open-file limit, listeners, reactors, the bus.
//! - [`reactor`]: one poll loop: accept, dispatch, inbox, timers, reap.
//! - `inbound`: the read path: edge-triggered reads, HTTP heads and frames parsed in place.
//! - `outbound`: the write path: output queued per turn, written once, buffer pool.
//! - `chat`: what a reactor does with frames and messages: control, echo, chat.
//! - [`conn`]: per-connection state; buffers exist only while something is pending.
//! - [`handshake`]: the HTTP side: WebSocket upgrade, `/healthz`, `/metrics`, errors.
//! - [`codec`]: RFC 6455 frame headers, masking, close codes.
//! - [`protocol`]: the seed's chat messages (parse, validate, encode byte-exact).
//! - [`inbox`]: what other threads send a reactor: a lock-free queue plus a coalesced wake.
//! - [`hub`]: what every thread of a node shares: inboxes, directory, metrics.
//! - [`directory`]: which connection on this node holds which user name.
//! - [`bus`]: node-to-node delivery: in-process (embedded default) or Redis.
//! - [`metrics`]: counters and gauges, rendered for `/metrics`.
//! - [`limits`]: the process's open-file limit.

pub mod bus;
mod chat;
pub mod codec;
pub mod config;
pub mod conn;
pub mod directory;
pub mod handshake;
pub mod hub;
mod inbound;
pub mod inbox;
pub mod limits;
pub mod metrics;
mod outbound;
pub mod protocol;
pub mod reactor;
pub mod server;
