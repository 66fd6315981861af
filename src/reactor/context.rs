//! What a handler works with beside its own connection ([`Context`]), and
//! what it returns ([`Outcome`]).

use std::borrow::Cow;
use std::sync::Arc;

use mio::Token;

use super::keep::{Keep, Recovering};
use super::local::LocalDeliveries;
use super::membership::LocalRooms;
use super::output::BufferPool;
use super::timers::Timers;
use crate::auth::Auth;
use crate::bus::Bus;
use crate::config::Config;
use crate::directory::ConnRef;
use crate::hub::Hub;
use crate::metrics::ReactorStats;

/// Why a handler stopped serving its connection.
#[derive(Debug)]
pub(super) enum Stop {
    /// The peer broke a rule: counted as a protocol error, then closed with `code`.
    Fail(u16, Cow<'static, str>),
    /// Closed with `code` and the close handshake: a limit was reached.
    Close(u16, Cow<'static, str>),
    /// The peer sent a close frame: answered with its code.
    Answer(u16),
    /// The peer is gone: removed at the end of the turn.
    Drop,
}

/// What a handler returns: `Ok` to go on serving the connection.
pub(super) type Outcome = Result<(), Stop>;

/// The message-rate bucket's parameters (see `rate`), in microseconds of
/// the reactor's clock.
#[derive(Clone, Copy, Debug)]
pub(super) struct MessageRate {
    /// Time one message takes out of the bucket (0: no limit).
    pub interval: u32,
    /// How far ahead of now the TAT may run: a burst of messages.
    pub burst: u32,
}

impl MessageRate {
    pub fn new(config: &Config) -> MessageRate {
        if config.message_rate == 0 {
            return MessageRate { interval: 0, burst: u32::MAX / 2 };
        }
        // validate() bounds the burst to 1000 s, so twice it stays clear of
        // the clock's wrap (2^31 us, 35 minutes).
        let interval = 1_000_000 / config.message_rate;
        MessageRate { interval, burst: interval.saturating_mul(config.message_burst) }
    }
}

/// Everything of a reactor but its connections: what a handler reaches
/// while it holds its own connection.
pub(super) struct Context {
    pub id: usize,
    pub hub: Arc<Hub>,
    pub bus: Arc<dyn Bus>,
    pub config: Arc<Config>,
    /// Tokens (authenticated mode) and origins.
    pub auth: Arc<Auth>,
    /// Where replies and chat messages are encoded before they are queued.
    pub encode: Vec<u8>,
    pub pool: BufferPool,
    /// Connections with output to write at the end of this turn.
    pub dirty: Vec<Token>,
    /// Connections to read again this turn (no new edge will come for them).
    pub still_readable: Vec<(Token, bool)>,
    /// Slab keys of connections removed at the end of this turn.
    pub reap: Vec<usize>,
    pub timers: Timers,
    pub local: LocalDeliveries,
    /// Which of this reactor's connections are in which room.
    pub rooms: LocalRooms,
    /// Microseconds on the reactor's wrapping clock, read once per turn (`rate`).
    pub clock: u32,
    pub rate: MessageRate,
    /// Connections the node holds at most (`--max-connections`, resolved).
    pub max_connections: usize,
    /// Which channels keep history, and the recoveries in flight here.
    pub keep: Keep,
    pub recovering: Recovering,
}

impl Context {
    pub fn stats(&self) -> &ReactorStats {
        &self.hub.metrics.reactors[self.id]
    }

    pub fn conn_ref(&self, token: Token) -> ConnRef {
        ConnRef { reactor: self.id, token }
    }
}
