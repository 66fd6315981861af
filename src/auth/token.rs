//! Verifying a client's signed token (a JWT): the signature and algorithm
//! by `jsonwebtoken`, then the claims this node relies on: `sub` (the user
//! name), `exp` (always required, honoured without leeway), `nbf` and `iat`
//! (with `--auth-leeway` for clocks that disagree), `aud` (`--auth-audience`).
//!
//! Only the algorithms the configured key allows are accepted: HS256/384/512
//! for a secret; for a public key those of its kind (RS*/PS* for RSA, ES256
//! or ES384 by the curve, EdDSA). So `none` and HS256 signed with the public
//! key as its secret (the RS/HS confusion) are refused before any signature
//! is checked.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use crate::protocol::TokenRefusal;

/// Longest token taken: identity-provider tokens are well under 2 KiB, and
/// anything longer is not worth a signature check.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The key tokens must be signed with, and what a token must claim.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// The algorithms of `validation`, for the client's error.
    accepted: &'static str,
    leeway: u64,
}

/// What a valid token says.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// The user name, as the issuer wrote it.
    pub sub: String,
    /// Unix seconds; the token is valid before it.
    pub exp: u64,
}

/// The claims read from a token whose signature verified. NumericDates may
/// carry fractions (RFC 7519 2), so they are read as numbers.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
}

/// Whole seconds of a NumericDate; before 1970 counts as 0.
fn seconds(date: f64) -> u64 {
    if date > 0.0 {
        date as u64
    } else {
        0
    }
}

impl Verifier {
    /// Tokens signed with HMAC and `secret`.
    pub fn from_secret(secret: &[u8], leeway: u64, audience: Option<&str>) -> Verifier {
        let key = DecodingKey::from_secret(secret).expect("a secret is refused only when empty, checked at start");
        let algorithms = AlgorithmFamily::Hmac.algorithms().to_vec();
        Verifier::new(key, algorithms, "HS256, HS384, HS512", leeway, audience)
    }

    /// Tokens signed with the private half of the PEM public key `pem`
    /// (RSA, EC P-256 or P-384, or Ed25519); `None` for anything else.
    pub fn from_public_key(pem: &[u8], leeway: u64, audience: Option<&str>) -> Option<Verifier> {
        // A private key would parse too: a node needs (and should hold) only the public half.
        if is_private_key(pem) {
            return None;
        }
        let (key, algorithms, accepted) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, AlgorithmFamily::Rsa.algorithms().to_vec(), "RS256, RS384, RS512, PS256, PS384, PS512")
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // The curve decides: a P-256 key verifies ES256 only.
            let fits = |alg| jsonwebtoken::crypto::verify("", b"", &key, alg).is_ok();
            match (fits(Algorithm::ES256), fits(Algorithm::ES384)) {
                (true, _) => (key, vec![Algorithm::ES256], "ES256"),
                (_, true) => (key, vec![Algorithm::ES384], "ES384"),
                _ => return None,
            }
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, vec![Algorithm::EdDSA], "EdDSA")
        } else {
            return None;
        };
        let probe = jsonwebtoken::crypto::verify("", b"", &key, algorithms[0]);
        probe.is_ok().then(|| Verifier::new(key, algorithms, accepted, leeway, audience))
    }

    fn new(
        key: DecodingKey,
        algorithms: Vec<Algorithm>,
        accepted: &'static str,
        leeway: u64,
        audience: Option<&str>,
    ) -> Verifier {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        // Time claims are checked in `verify`, against the caller's clock,
        // with the leeway on nbf and iat only; exp and sub are required there.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        // Without an audience of our own, a token naming one is for someone else.
        if let Some(aud) = audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        Verifier { key, validation, accepted, leeway }
    }

    /// The algorithms accepted, for messages.
    pub fn accepted(&self) -> &'static str {
        self.accepted
    }

    /// Checks `token` at `now` (Unix seconds).
    ///
    /// # Errors
    /// A [`TokenRefusal`] saying what is wrong with it, for the client.
    pub fn verify(&self, token: &str, now: u64) -> Result<Verified, TokenRefusal> {
        if token.is_empty() {
            return Err(TokenRefusal::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefusal::TooLong(MAX_TOKEN_BYTES));
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            // An algorithm jsonwebtoken has no name for (`none`, say).
            Err(_) => return Err(self.refuse_algorithm(header_alg(token)).unwrap_or(TokenRefusal::Malformed)),
        };
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(TokenRefusal::Algorithm { got: format!("{:?}", header.alg), accepted: self.accepted });
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => data.claims,
            Err(e) => {
                return Err(match e.kind() {
                    ErrorKind::InvalidSignature => TokenRefusal::Forged,
                    ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => TokenRefusal::WrongAudience,
                    _ => TokenRefusal::Malformed,
                })
            }
        };
        let exp = claims.exp.map(seconds).ok_or(TokenRefusal::NoExpiry)?;
        if now >= exp {
            return Err(TokenRefusal::Expired);
        }
        let future = |date: Option<f64>| date.is_some_and(|d| seconds(d) > now.saturating_add(self.leeway));
        if future(claims.nbf) {
            return Err(TokenRefusal::NotYetValid);
        }
        if future(claims.iat) {
            return Err(TokenRefusal::IssuedInFuture);
        }
        let sub = claims.sub.filter(|s| !s.is_empty()).ok_or(TokenRefusal::NoSubject)?;
        Ok(Verified { sub, exp })
    }

    /// The refusal for a header algorithm outside what the key allows.
    fn refuse_algorithm(&self, alg: Option<String>) -> Option<TokenRefusal> {
        let got = alg?;
        let known = self.validation.algorithms.iter().any(|a| format!("{a:?}") == got);
        (!known).then_some(TokenRefusal::Algorithm { got, accepted: self.accepted })
    }
}

/// Whether `pem` holds a private key (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY`...).
pub fn is_private_key(pem: &[u8]) -> bool {
    pem.windows(b"PRIVATE KEY-----".len()).any(|w| w == b"PRIVATE KEY-----")
}

/// The `alg` a token's header names, read without trusting anything else in it.
fn header_alg(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let encoded = token.split('.').next()?;
    let json = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let mut alg = serde_json::from_slice::<Header>(&json).ok()?.alg;
    // The client sees it back: keep it short.
    if let Some((cut, _)) = alg.char_indices().nth(24) {
        alg.truncate(cut);
    }
    Some(alg)
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
