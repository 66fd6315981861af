//! Logging in and staying logged in.
//!
//! Open mode: the `Sender` of a `loginmsg` is the name, judged by the name
//! profile. Authenticated mode: the name is the `sub` of a signed token
//! (a `loginmsg`'s `Data`, or the upgrade's `Authorization: Bearer` or
//! `?token=`), and the connection is closed (1008) when the token expires,
//! unless a `refreshmsg` brought a later one for the same user. A bad token
//! gets an `errormsg` saying what is wrong, then 1008.
//!
//! Either way the name is claimed under its key, on this node (the
//! directory), then in the cluster (the bus); the connection keeps the name
//! as the client chose it, which is what others see as `Sender`.

use std::sync::atomic::Ordering::Relaxed;

use compact_str::CompactString;
use mio::Token;

use super::conn::{flag, Conn, Login};
use super::context::{Context, Outcome, Stop};
use super::rate;
use super::recovery;
use super::reply::{log_in_first, reply_failure};
use super::write::queue_frame;
use crate::auth::{unix_now, Verified};
use crate::bus::Claim;
use crate::codec::{close, op};
use crate::metrics::TokenFailure;
use crate::names;
use crate::protocol::{self, Failure, Resume, TokenRefusal};

/// A `loginmsg`: `name` its `Sender`, `jwt` its `Data`.
pub(super) fn login(
    conn: &mut Conn,
    token: Token,
    cx: &mut Context,
    name: &str,
    jwt: &str,
    resume: &Resume<'_>,
) -> Outcome {
    rate::count_login(conn, token, cx)?;
    if let Login::Pending(current) | Login::Granted(current) = conn.login() {
        let current = CompactString::from(current);
        return login_again(conn, token, cx, &current, name, jwt);
    }
    if cx.auth.tokens().is_some() {
        return log_in_with_token(conn, token, cx, jwt, resume);
    }
    match names::check(name, cx.config.max_name_len) {
        Ok(key) => claim(conn, token, cx, name, &key, None, resume),
        Err(why) => reply_failure(conn, token, cx, Failure::BadName(why)),
    }
}

/// A token that came with the upgrade logs the connection in at once
/// (authenticated mode; open mode ignores it).
pub(super) fn on_upgrade(conn: &mut Conn, token: Token, cx: &mut Context, jwt: Option<&str>) -> Outcome {
    match jwt {
        Some(jwt) if cx.auth.tokens().is_some() => log_in_with_token(conn, token, cx, jwt, &Resume::default()),
        _ => Ok(()),
    }
}

/// A `loginmsg` on a logged-in connection. In authenticated mode one with a
/// token refreshes, and one naming the same user (or nobody) changes nothing,
/// so a seed client that always logs in works with a token in its URL.
/// Anything else is refused and the login stays.
fn login_again(conn: &mut Conn, token: Token, cx: &mut Context, current: &str, name: &str, jwt: &str) -> Outcome {
    if cx.auth.tokens().is_some() {
        if !jwt.is_empty() {
            return refresh(conn, token, cx, jwt);
        }
        if name.is_empty() || *names::key(name) == *names::key(current) {
            return Ok(());
        }
    }
    reply_failure(conn, token, cx, Failure::AlreadyLoggedIn(current))
}

/// Verifies a token for a login and claims its user.
fn log_in_with_token(conn: &mut Conn, token: Token, cx: &mut Context, jwt: &str, resume: &Resume<'_>) -> Outcome {
    let Verified { sub, exp } = match verify(cx, jwt) {
        Ok(verified) => verified,
        Err(why) => return refuse_token(conn, token, cx, &why),
    };
    match names::check(&sub, cx.config.max_name_len) {
        Ok(key) => claim(conn, token, cx, &sub, &key, Some(exp), resume),
        Err(why) => refuse_token(conn, token, cx, &TokenRefusal::BadSubject(why)),
    }
}

fn verify(cx: &Context, jwt: &str) -> Result<Verified, TokenRefusal> {
    match cx.auth.tokens() {
        Some(verifier) => verifier.verify(jwt, unix_now()),
        None => Err(TokenRefusal::Missing),
    }
}

/// A `refreshmsg`: a later expiry for the logged-in user.
pub(super) fn refresh(conn: &mut Conn, token: Token, cx: &mut Context, jwt: &str) -> Outcome {
    if cx.auth.tokens().is_none() {
        return reply_failure(conn, token, cx, Failure::OpenMode);
    }
    // Never a pending login here: input waits until the bus decides.
    let Some(current) = conn.speaker().map(CompactString::from) else {
        return log_in_first(conn, token, cx);
    };
    let verified = match verify(cx, jwt) {
        Ok(verified) => verified,
        Err(why) => return refuse_token(conn, token, cx, &why),
    };
    if *names::key(&verified.sub) != *names::key(&current) {
        reply_failure(conn, token, cx, Failure::OtherUser(&verified.sub, &current))?;
        return Err(Stop::Close(close::POLICY, "token for another user".into()));
    }
    // Only ever later: the one timer entry lies at or before the deadline
    // and finds it moved. (Both tokens were issued to this user; the later
    // one says how long the login may last.)
    if verified.exp > conn.expiry() {
        conn.set_expiry(verified.exp);
    }
    Ok(())
}

/// An `errormsg` saying what is wrong with the token, then 1008.
fn refuse_token(conn: &mut Conn, token: Token, cx: &mut Context, why: &TokenRefusal) -> Outcome {
    cx.stats().token_failed(failure_of(why));
    reply_failure(conn, token, cx, Failure::Token(why))?;
    Err(Stop::Close(close::POLICY, why.close_reason().into()))
}

/// Claims `key` for `name` on this node (the directory), then for the
/// cluster (the bus); `expiry` is the token's, in authenticated mode.
fn claim(
    conn: &mut Conn,
    token: Token,
    cx: &mut Context,
    name: &str,
    key: &str,
    expiry: Option<u64>,
    resume: &Resume<'_>,
) -> Outcome {
    let at = cx.conn_ref(token);
    if !cx.hub.directory.insert_if_absent(key, at) {
        return queue_frame(conn, token, cx, op::TEXT, protocol::USER_EXISTS);
    }
    if let Some(exp) = expiry {
        watch_expiry(conn, token, cx, exp);
    }
    recovery::login_claimed(token, cx, resume);
    match cx.bus.claim(key, at) {
        Claim::Granted => {
            conn.log_in(name, true);
            cx.stats().users.fetch_add(1, Relaxed);
            recovery::login_granted(token, cx, key);
        }
        Claim::Pending => conn.log_in(name, false),
    }
    Ok(())
}

/// Sets the login's expiry and makes sure an entry of the expiry wheel
/// comes at or before it. A connection has one entry, unless an earlier
/// login on it (refused by the cluster) left one that lies later than this
/// token's expiry: then it gets a second (at most one per such refusal).
fn watch_expiry(conn: &mut Conn, token: Token, cx: &mut Context, exp: u64) {
    let earlier = exp < conn.expiry();
    conn.set_expiry(exp);
    if !conn.has(flag::EXPIRY_TIMER) || earlier {
        conn.flags |= flag::EXPIRY_TIMER;
        cx.timers.tokens.file(exp, token);
    }
}

/// The connection's entry in the expiry wheel came due at `now`: close it
/// if its token has expired, else file the entry again at the deadline it
/// has now (a refresh moved it, or it lay more than a turn of the wheel ahead).
pub(super) fn check_expiry(conn: &mut Conn, token: Token, cx: &mut Context, now: u64) -> Outcome {
    conn.flags &= !flag::EXPIRY_TIMER;
    if conn.login() == Login::Anonymous {
        return Ok(());
    }
    let exp = conn.expiry();
    if exp > now {
        conn.flags |= flag::EXPIRY_TIMER;
        cx.timers.tokens.file(exp, token);
        return Ok(());
    }
    cx.stats().token_failed(TokenFailure::Expired);
    reply_failure(conn, token, cx, Failure::TokenRanOut)?;
    Err(Stop::Close(close::POLICY, "token expired".into()))
}

/// The bus decided a login that was pending (the caller then takes up the
/// input that waited for it), or (`accepted` false on a granted login)
/// revoked one: after a Redis outage another node proved to hold the name,
/// and the user here gets the seed's refusal.
pub(super) fn login_decided(conn: &mut Conn, token: Token, cx: &mut Context, accepted: bool) -> Outcome {
    match (conn.login(), accepted) {
        (Login::Pending(name), true) => {
            let key = CompactString::from(&*names::key(name));
            conn.grant();
            cx.stats().users.fetch_add(1, Relaxed);
            recovery::login_granted(token, cx, &key);
            Ok(())
        }
        (Login::Pending(_), false) => {
            cx.recovering.end(token, "");
            refuse(conn, token, cx)
        }
        (Login::Granted(_), false) => {
            cx.stats().users.fetch_sub(1, Relaxed);
            refuse(conn, token, cx)
        }
        (Login::Granted(_), true) | (Login::Anonymous, _) => Ok(()),
    }
}

/// Takes a name the bus gave to someone else (the bus knows already).
fn refuse(conn: &mut Conn, token: Token, cx: &mut Context) -> Outcome {
    if let Some((name, _)) = conn.log_out() {
        cx.hub.directory.remove(&names::key(&name), cx.conn_ref(token));
    }
    queue_frame(conn, token, cx, op::TEXT, protocol::USER_EXISTS)
}

/// The metric's label for a refused token.
fn failure_of(why: &TokenRefusal) -> TokenFailure {
    match why {
        TokenRefusal::Missing => TokenFailure::Missing,
        TokenRefusal::TooLong(_) | TokenRefusal::Malformed | TokenRefusal::Algorithm { .. } => TokenFailure::Malformed,
        TokenRefusal::Forged => TokenFailure::Signature,
        TokenRefusal::Expired | TokenRefusal::NotYetValid | TokenRefusal::IssuedInFuture => TokenFailure::Expired,
        TokenRefusal::NoExpiry
        | TokenRefusal::NoSubject
        | TokenRefusal::WrongAudience
        | TokenRefusal::BadSubject(_) => TokenFailure::Claims,
    }
}
