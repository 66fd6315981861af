//! Which connections are still worth holding: the upgrade and login
//! deadlines (`--handshake-timeout`, `--login-timeout`), and pings to chat
//! connections that have gone quiet (`--ping-interval`, `--pong-timeout`).
//!
//! Pings cost no timer per connection. A sweep runs once a second (when the
//! reactor wakes anyway) and visits the next 1/N of the slab's keys, N being
//! the ping interval in seconds, so each connection is visited once per
//! interval. Two bits of the connection do the rest: `HEARD` (set by every
//! read) and `PING_OUT`. A visit to a connection heard from since the last
//! one clears both; one that has been silent a whole interval is pinged. The
//! range of keys a tick visited is kept (two words per second, not per
//! connection), and `--pong-timeout` later the same range is visited again:
//! a connection still pinged and unheard is closed with 1008. That is before
//! the sweep comes back to those keys, since the pong timeout is shorter than
//! the interval (`Config::validate`) and ticks are at least a second apart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Token;
use slab::Slab;

use super::close;
use super::conn::{flag, Conn, Login, Phase};
use super::context::{Context, Outcome, Stop};
use super::rate;
use super::write::{queue_error, queue_frame};
use crate::codec::{close as code, op};
use crate::metrics::Limit;
use crate::protocol::Failure;

/// With pings off, the sweep still visits every connection this often (the
/// message-rate clock needs a visit within half an hour).
const SETTLE_PERIOD_SECS: u64 = 60;

/// Where the sweep is, and what it pinged lately.
pub(super) struct Sweep {
    /// Which second of the period the next tick is: it visits that share of the keys.
    phase: u64,
    /// One past the highest slab key ever used on this reactor.
    pub bound: usize,
    /// Slab keys visited by past ticks, as (when, first key, end), oldest first.
    pinged: VecDeque<(Instant, usize, usize)>,
}

impl Sweep {
    pub fn new() -> Sweep {
        Sweep { phase: 0, bound: 0, pinged: VecDeque::new() }
    }
}

/// One tick of the sweep (once a second): visit the next share of the slab,
/// then check the share pinged `--pong-timeout` ago.
pub(super) fn tick(conns: &mut Slab<Conn>, cx: &mut Context, sweep: &mut Sweep, now: Instant) {
    let interval = cx.config.ping_interval;
    let period = if interval > 0 { interval } else { SETTLE_PERIOD_SECS };
    sweep.phase = (sweep.phase + 1) % period;
    let share = |phase: u64| (sweep.bound as u128 * u128::from(phase) / u128::from(period)) as usize;
    let (first, end) = (share(sweep.phase), share(sweep.phase + 1));
    visit_keys(conns, cx, first, end, |conn, token, cx| visit(conn, token, cx, interval > 0));
    if interval == 0 {
        return;
    }
    if end > first {
        sweep.pinged.push_back((now, first, end));
    }
    let timeout = Duration::from_secs(cx.config.pong_timeout);
    while let Some(&(at, first, end)) = sweep.pinged.front() {
        if at + timeout > now {
            break;
        }
        sweep.pinged.pop_front();
        visit_keys(conns, cx, first, end, |conn, _, cx| check_pong(conn, cx));
    }
}

/// Runs `each` on every connection with a slab key in `first..end`, and acts on its outcome.
fn visit_keys(
    conns: &mut Slab<Conn>,
    cx: &mut Context,
    first: usize,
    end: usize,
    mut each: impl FnMut(&mut Conn, Token, &mut Context) -> Outcome,
) {
    for key in first..end {
        if let Some(conn) = conns.get_mut(key) {
            let token = conn.token(key);
            let outcome = each(conn, token, cx);
            close::settle(conn, token, cx, outcome);
        }
    }
}

/// A sweep's visit: keep the rate clock clear of its wrap, and ping a chat
/// connection silent since the last visit.
fn visit(conn: &mut Conn, token: Token, cx: &mut Context, pings: bool) -> Outcome {
    rate::settle(conn, cx.clock);
    if !pings || conn.phase != Phase::Chat {
        return Ok(());
    }
    if conn.has(flag::HEARD) {
        conn.flags &= !(flag::HEARD | flag::PING_OUT);
        return Ok(());
    }
    if conn.has(flag::PING_OUT) {
        return Ok(());
    }
    conn.flags |= flag::PING_OUT;
    queue_frame(conn, token, cx, op::PING, b"")
}

/// `--pong-timeout` after a ping: a connection heard from since is alive.
/// One whose login is pending is not read meanwhile, so not judged.
fn check_pong(conn: &mut Conn, cx: &mut Context) -> Outcome {
    if conn.phase != Phase::Chat || conn.is_pending() {
        return Ok(());
    }
    if conn.has(flag::PING_OUT) && !conn.has(flag::HEARD) {
        cx.stats().limit_hit(Limit::PongTimeout);
        let reason = format!("no answer to a ping within {} s", cx.config.pong_timeout);
        return Err(Stop::Close(code::POLICY, reason.into()));
    }
    Ok(())
}

/// An arrival deadline fired (`late`: the second of the two). A connection
/// still upgrading past `--handshake-timeout` is dropped; a chat connection
/// still anonymous past `--login-timeout` gets an errormsg and a 1008 close;
/// one whose login is pending then is marked, and closed should the login
/// be refused.
pub(super) fn on_arrival(conn: &mut Conn, token: Token, cx: &mut Context, at: Instant, late: bool) -> Outcome {
    let handshake = cx.config.handshake_timeout;
    let login = cx.config.login_timeout;
    let elapsed = if late { handshake.max(login) } else { handshake.min(login) };
    match conn.phase {
        Phase::Handshake if elapsed >= handshake => Err(Stop::Drop),
        Phase::Chat if elapsed >= login => match conn.login() {
            Login::Anonymous => login_timeout(conn, token, cx),
            Login::Pending(_) => {
                conn.flags |= flag::LOGIN_DUE;
                Ok(())
            }
            Login::Granted(_) => Ok(()),
        },
        Phase::Handshake | Phase::Chat if !late => {
            let accepted = at - Duration::from_secs(elapsed);
            cx.timers.arrival_late.push(accepted + Duration::from_secs(handshake.max(login)), token);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Closes a chat connection that is not logged in past its deadline.
pub(super) fn login_timeout(conn: &mut Conn, token: Token, cx: &mut Context) -> Outcome {
    cx.stats().limit_hit(Limit::LoginTimeout);
    let secs = cx.config.login_timeout;
    queue_error(conn, token, cx, &Failure::LoginTimeout(secs).to_string())?;
    Err(Stop::Close(code::POLICY, format!("no login within {secs} s").into()))
}
