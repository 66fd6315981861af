//! Who may connect and as whom: signed tokens (authenticated mode) or the
//! seed's trust in `Sender` (open mode), and which web pages may open a
//! WebSocket here.
//!
//! - [`token`]: verifying a client's JWT.
//! - [`origin`]: the `Origin` check at the upgrade.
//! - [`mint`]: the `switchboard token` subcommand.

pub mod mint;
pub mod origin;
pub mod token;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

pub use self::origin::OriginPolicy;
pub use self::token::{Verified, Verifier};
use crate::config::{Config, Secret};

/// Shortest HMAC secret taken: RFC 7518 3.2 wants a key at least as long as
/// the hash (32 bytes for HS256); a shorter one can be guessed offline from
/// any token.
pub const MIN_SECRET_BYTES: usize = 32;

/// A key or origin setting that cannot work, naming the flag.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("{flag} {}: {source}", path.display())]
    Read { flag: &'static str, path: PathBuf, source: io::Error },
    #[error("{flag} must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 3.2; got {got}): try `openssl rand -hex 32`")]
    ShortSecret { flag: &'static str, got: usize },
    #[error("--auth-public-key {}: not a PEM public key of RSA, EC P-256/P-384 or Ed25519", path.display())]
    BadPublicKey { path: PathBuf },
    #[error("--auth-public-key {}: a private key; give the node only the public half \
             (openssl pkey -in KEY -pubout)", path.display())]
    PrivateKey { path: PathBuf },
    #[error("--allowed-origin {got:?}: {why}")]
    BadOrigin { got: String, why: &'static str },
}

/// What a node checks before it lets a client in or gives it a name.
pub struct Auth {
    tokens: Option<Verifier>,
    origins: OriginPolicy,
}

impl Auth {
    /// Reads the keys and origins the configuration names.
    ///
    /// # Errors
    /// An [`AuthError`] naming the flag whose file or value cannot be used.
    pub fn from_config(config: &Config) -> Result<Auth, AuthError> {
        let audience = config.auth_audience.as_deref();
        let leeway = config.auth_leeway;
        let tokens = match (&config.auth_secret, &config.auth_secret_file, &config.auth_public_key) {
            (_, _, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| AuthError::Read {
                    flag: "--auth-public-key",
                    path: path.clone(),
                    source,
                })?;
                if token::is_private_key(&pem) {
                    return Err(AuthError::PrivateKey { path: path.clone() });
                }
                let verifier = Verifier::from_public_key(&pem, leeway, audience)
                    .ok_or_else(|| AuthError::BadPublicKey { path: path.clone() })?;
                Some(verifier)
            }
            (secret, file, None) => {
                load_secret(secret.as_ref(), file.as_deref())?.map(|s| Verifier::from_secret(&s, leeway, audience))
            }
        };
        let origins = OriginPolicy::new(&config.allowed_origins, tokens.is_some())
            .map_err(|(got, why)| AuthError::BadOrigin { got, why })?;
        Ok(Auth { tokens, origins })
    }

    /// Open mode, any origin: the seed's behaviour.
    pub fn open() -> Auth {
        Auth { tokens: None, origins: OriginPolicy::Any }
    }

    /// The token verifier in authenticated mode; `None` in open mode.
    pub fn tokens(&self) -> Option<&Verifier> {
        self.tokens.as_ref()
    }

    pub fn origins(&self) -> &OriginPolicy {
        &self.origins
    }

    /// Says at start which mode the node runs in (open mode as a warning).
    pub fn announce(&self) {
        let origins = match &self.origins {
            OriginPolicy::Any => "any origin".to_string(),
            OriginPolicy::SameHost => "origins of this host only".to_string(),
            OriginPolicy::Only(p) => format!("{} allowed origin patterns", p.len()),
        };
        match &self.tokens {
            None => log::warn!(
                "open mode: no --auth-secret, --auth-secret-file or --auth-public-key, so any client may log in \
                 as any name; {origins}"
            ),
            Some(v) => log::info!("authenticated mode: logins need a token signed with {}; {origins}", v.accepted()),
        }
    }
}

/// The HMAC secret from the flag or the file, checked for length.
///
/// # Errors
/// An unreadable file or a secret shorter than [`MIN_SECRET_BYTES`].
pub fn load_secret(secret: Option<&Secret>, file: Option<&Path>) -> Result<Option<Vec<u8>>, AuthError> {
    let (flag, bytes) = match (secret, file) {
        (Some(s), _) => ("--auth-secret", s.0.clone().into_bytes()),
        (None, Some(path)) => {
            let flag = "--auth-secret-file";
            let mut bytes =
                std::fs::read(path).map_err(|source| AuthError::Read { flag, path: path.to_path_buf(), source })?;
            // Files written by editors and `echo` end with a newline that is no part of the secret.
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            (flag, bytes)
        }
        (None, None) => return Ok(None),
    };
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(AuthError::ShortSecret { flag, got: bytes.len() });
    }
    Ok(Some(bytes))
}

/// Now, in Unix seconds: the clock tokens are judged by.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
