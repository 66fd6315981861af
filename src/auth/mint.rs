//! `switchboard token`: mints an HS256 token for a user, for trying
//! authenticated mode and for tests (a real deployment's identity provider
//! mints its own).
//!
//! ```text
//! switchboard token --user alice --ttl 1h --auth-secret-file secret
//! ```

use std::path::PathBuf;

use clap::Parser;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;
use thiserror::Error;

use super::{load_secret, unix_now, AuthError};
use crate::config::Secret;
use crate::names;

/// Longest lifetime minted: a token that outlives a year is a password.
const MAX_TTL_SECS: u64 = 366 * 86_400;

#[derive(Parser, Debug)]
#[command(
    name = "switchboard token",
    about = "Mint an HS256 token for a user; prints the token alone on its last line"
)]
pub struct TokenArgs {
    /// The user name (the token's `sub`); it must pass the node's name profile.
    #[arg(long)]
    pub user: String,

    /// Lifetime: a number with s, m, h or d (seconds without a unit). 1 h is a
    /// usual access-token lifetime; clients refresh before it runs out.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,

    /// The node's secret (as its --auth-secret).
    #[arg(
        long,
        env = "SWITCHBOARD_AUTH_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        conflicts_with = "auth_secret_file",
        required_unless_present = "auth_secret_file"
    )]
    pub auth_secret: Option<Secret>,

    /// File holding the node's secret (as its --auth-secret-file).
    #[arg(long, value_name = "PATH")]
    pub auth_secret_file: Option<PathBuf>,

    /// The `aud` claim to include (as the node's --auth-audience).
    #[arg(long, value_name = "AUD")]
    pub auth_audience: Option<String>,
}

/// Why no token was minted.
#[derive(Debug, Error)]
pub enum MintError {
    #[error(transparent)]
    Key(#[from] AuthError),
    #[error("--user {user:?}: {why}")]
    BadUser { user: String, why: String },
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// `90`, `90s`, `15m`, `1h`, `7d` in seconds.
///
/// # Errors
/// What the value should look like.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?}: expected a number with s, m, h or d, like 90s, 15m, 1h or 7d");
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(secs) if (1..=MAX_TTL_SECS).contains(&secs) => Ok(secs),
        _ => Err(format!("{text:?}: between 1 s and 366 d")),
    }
}

/// The token for `args` at `now` (Unix seconds).
///
/// # Errors
/// A bad key, a user name the node would refuse, or a failed signature.
pub fn mint(args: &TokenArgs, now: u64) -> Result<String, MintError> {
    let secret = load_secret(args.auth_secret.as_ref(), args.auth_secret_file.as_deref())?
        .ok_or(AuthError::ShortSecret { flag: "--auth-secret", got: 0 })?;
    // 1024 bytes: the most --max-name-len allows.
    if let Err(why) = names::check(&args.user, 1024) {
        let why = crate::protocol::Failure::BadName(why).to_string();
        return Err(MintError::BadUser { user: args.user.clone(), why });
    }
    let claims = Claims { sub: &args.user, iat: now, exp: now + args.ttl, aud: args.auth_audience.as_deref() };
    let key = EncodingKey::from_secret(&secret)?;
    Ok(encode(&Header::new(Algorithm::HS256), &claims, &key)?)
}

/// Runs the subcommand: a line about the token on stderr, the token on stdout.
///
/// # Errors
/// See [`mint`].
pub fn run(args: &TokenArgs) -> Result<(), MintError> {
    let now = unix_now();
    let token = mint(args, now)?;
    eprintln!("token for {:?}, valid {} s (exp {})", args.user, args.ttl, now + args.ttl);
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_with_their_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        for bad in ["", "h", "1w", "-1h", "0", "1.5h", "367d", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_minted_token_verifies_as_its_user() {
        let secret = "0123456789abcdef0123456789abcdef";
        let args = TokenArgs::parse_from(["token", "--user", "alice", "--ttl", "1h", "--auth-secret", secret]);
        let token = mint(&args, 1_800_000_000).unwrap();
        let verified = super::super::Verifier::from_secret(secret.as_bytes(), 0, None).verify(&token, 1_800_000_000);
        assert_eq!(verified, Ok(super::super::Verified { sub: "alice".into(), exp: 1_800_003_600 }));
        let short = TokenArgs::parse_from(["token", "--user", "alice", "--auth-secret", "short"]);
        assert!(matches!(mint(&short, 0), Err(MintError::Key(AuthError::ShortSecret { got: 5, .. }))));
        let bad = TokenArgs::parse_from(["token", "--user", "al\u{202E}ice", "--auth-secret", secret]);
        assert!(matches!(mint(&bad, 0), Err(MintError::BadUser { .. })));
    }
}
