//! Per-connection rates: messages per second (`--message-rate`, bursts of
//! `--message-burst`) and logins per connection (`--max-login-attempts`).
//!
//! The message rate is a GCRA token bucket held in one `u32` of the
//! connection: its theoretical arrival time (TAT) on the reactor's
//! microsecond clock, read once per turn. Each message moves the TAT one
//! interval (1/rate) on from the later of itself and now; a message that puts
//! it more than the burst ahead of now is over the rate. Over it, the client
//! gets one errormsg and its messages are dropped (still moving the TAT); one
//! that goes on for another whole burst is closed with 1008. On the way
//! through that is a load, a compare, an add, a subtract, a compare and a
//! store. The clock wraps every 71 minutes: the liveness sweep visits every
//! connection at least every half hour and pulls a TAT left behind up to now.

use mio::Token;

use super::conn::{flag, Conn};
use super::context::{Context, Outcome, Stop};
use super::write::queue_error;
use crate::codec::close;
use crate::metrics::Limit;
use crate::protocol::Failure;

/// Takes a token for a message (or ping): true when it is within the rate.
/// Otherwise the caller hands the message to [`over_rate`] instead of serving it.
#[inline]
pub(super) fn admit(conn: &mut Conn, cx: &Context) -> bool {
    let now = cx.clock;
    // The TAT never falls behind now: an idle bucket is a full one.
    let from = if (conn.tat.wrapping_sub(now) as i32) < 0 { now } else { conn.tat };
    conn.tat = from.wrapping_add(cx.rate.interval);
    if conn.tat.wrapping_sub(now) > cx.rate.burst {
        return false;
    }
    if conn.has(flag::RATE_WARNED) {
        conn.flags &= !flag::RATE_WARNED;
    }
    true
}

/// A message over the rate: dropped, with one errormsg until the client is
/// under the rate again; a client a second burst over it is closed.
#[cold]
#[inline(never)]
pub(super) fn over_rate(conn: &mut Conn, token: Token, cx: &mut Context) -> Outcome {
    let (rate, burst) = (cx.config.message_rate, cx.config.message_burst);
    if conn.tat.wrapping_sub(cx.clock) > cx.rate.burst.saturating_mul(2) {
        cx.stats().limit_hit(Limit::MessageRateClose);
        return Err(Stop::Close(close::POLICY, format!("message rate over {rate}/s").into()));
    }
    cx.stats().limit_hit(Limit::MessageRate);
    if conn.has(flag::RATE_WARNED) {
        return Ok(());
    }
    conn.flags |= flag::RATE_WARNED;
    queue_error(conn, token, cx, &Failure::RateLimited { rate, burst }.to_string())
}

/// Counts one login attempt: past `--max-login-attempts` the connection gets
/// an errormsg and is closed with 1008.
pub(super) fn count_login(conn: &mut Conn, token: Token, cx: &mut Context) -> Outcome {
    let max = cx.config.max_login_attempts;
    if max == 0 {
        return Ok(());
    }
    if conn.logins < max {
        conn.logins += 1;
        return Ok(());
    }
    cx.stats().limit_hit(Limit::LoginAttempts);
    queue_error(conn, token, cx, &Failure::TooManyLogins(max).to_string())?;
    Err(Stop::Close(close::POLICY, format!("more than {max} login attempts").into()))
}

/// Called by the liveness sweep: a TAT left behind now is pulled up to it,
/// so that the wrapping clock never makes an old one look ahead.
pub(super) fn settle(conn: &mut Conn, now: u32) {
    if (conn.tat.wrapping_sub(now) as i32) < 0 {
        conn.tat = now;
    }
}
