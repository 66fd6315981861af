//! `loadgen`: a load generator for switchboard and any server that speaks the seed's
//! WebSocket chat protocol.
//!
//! # Layout
//! Processes and phases:
//! - `config`: command line, and the deterministic run plan every worker gets
//! - `target`: a target URL (`ws://` or `wss://`) and its request path
//! - `protocol`: which chat protocol the targets speak (the seed's, or Socket.IO)
//! - `tls`: the TLS client configuration for `wss://` (rustls)
//! - `pattern`: who a chat message goes to (per message, or one partner in closed loop)
//! - `coordinator`: the parent process: phases, sampling, totals
//! - `progress`: the live progress line
//! - `fleet`: starting worker processes and talking to them
//! - `ipc`: the orders and reports between coordinator and workers (JSON lines)
//! - `worker`: a worker process: driver threads plus a reporter
//! - `driver`: one mio reactor thread holding a range of connections (`driver/`: its
//!   lifecycle, dial, schedule, wire, inbound, chat, window, failure, conn and shared
//!   parts)
//! - `sources`: the source address and ports of every connection
//! - `signals`: SIGINT/SIGTERM end a run early, with every output still written
//!
//! On the wire and in the counts:
//! - `codec`: WebSocket client handshake and frames
//! - `message`: the seed's chat messages and the markers carried in `Data`
//! - `socketio`: Engine.IO v4 / Socket.IO packets: open, connect, events, acks, pings
//! - `accounting`: exact lost / duplicate counting
//! - `rooms`: who is in which room, who sends each room message; per-member accounting
//!   and fan-out latency (`rooms/fanout`), their summary (`rooms/summary`)
//! - `cause`: why a connection failed, from the side that acted
//! - `stats`: shared counters and histograms (V2-serialized across processes)
//! - `procfs`: RSS, CPU, slab, machine facts and RLIMIT_NOFILE
//! - `clock`: CLOCK_MONOTONIC timestamps, comparable across processes
//!
//! The end of a run:
//! - `outcome`: what the coordinator measured
//! - `verdict`: why a run failed, and its exit status
//! - `summary`: the JSON summary; `human`: the same as text
//! - `timeline`: the per-second rows and their CSV; `chart`: their SVG
//! - `report`: writes all of it

mod accounting;
mod cause;
mod chart;
mod clock;
mod codec;
mod config;
mod coordinator;
mod driver;
mod fleet;
mod history;
mod human;
mod ipc;
mod message;
mod outcome;
mod pattern;
mod procfs;
mod progress;
mod protocol;
mod recovery;
mod report;
mod rooms;
mod signals;
mod socketio;
mod sources;
mod stats;
mod summary;
mod target;
mod timeline;
mod tls;
mod verdict;
mod worker;

use clap::Parser as _;

fn main() {
    let args = config::Args::parse();
    if args.worker {
        signals::ignore_stop();
        if let Err(e) = worker::run() {
            eprintln!("loadgen worker: {e}");
            std::process::exit(3);
        }
        return;
    }
    let code = match coordinator::run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            2
        }
    };
    std::process::exit(code);
}
