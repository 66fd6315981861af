//! The token verifier against tokens minted by `jsonwebtoken` itself: every
//! kind of key, every way a token can be wrong.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn hs(claims: &Value) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
}

fn claims(sub: &str, exp: u64) -> Value {
    json!({ "sub": sub, "exp": exp, "iat": NOW })
}

fn secret_verifier() -> Verifier {
    Verifier::from_secret(SECRET, 60, None)
}

#[test]
fn a_valid_token_gives_its_user_and_expiry() {
    let token = hs(&claims("alice", NOW + 3600));
    assert_eq!(secret_verifier().verify(&token, NOW), Ok(Verified { sub: "alice".into(), exp: NOW + 3600 }));
    let fractional = hs(&json!({ "sub": "bob", "exp": (NOW + 10) as f64 + 0.5 }));
    assert_eq!(secret_verifier().verify(&fractional, NOW).map(|v| v.exp), Ok(NOW + 10));
}

#[test]
fn each_public_key_kind_takes_its_own_algorithms() {
    let cases = [
        ("rsa", Algorithm::RS256, EncodingKey::from_rsa_pem(&key("rsa.key.pem"))),
        ("rsa", Algorithm::PS384, EncodingKey::from_rsa_pem(&key("rsa.key.pem"))),
        ("ec256", Algorithm::ES256, EncodingKey::from_ec_pem(&key("ec256.key.pem"))),
        ("ec384", Algorithm::ES384, EncodingKey::from_ec_pem(&key("ec384.key.pem"))),
        ("ed25519", Algorithm::EdDSA, EncodingKey::from_ed_pem(&key("ed25519.key.pem"))),
    ];
    for (name, alg, signing) in cases {
        let verifier = Verifier::from_public_key(&key(&format!("{name}.pub.pem")), 60, None).unwrap();
        let token = encode(&Header::new(alg), &claims("carol", NOW + 60), &signing.unwrap()).unwrap();
        assert_eq!(verifier.verify(&token, NOW).map(|v| v.sub), Ok("carol".into()), "{name} {alg:?}");
    }
    let ec256 = Verifier::from_public_key(&key("ec256.pub.pem"), 60, None).unwrap();
    assert_eq!(ec256.accepted(), "ES256");
    assert!(Verifier::from_public_key(b"not a key", 60, None).is_none());
    assert!(Verifier::from_public_key(&key("rsa.key.pem"), 60, None).is_none(), "a private key is no public key");
}

#[test]
fn forged_and_tampered_tokens_are_refused() {
    let other =
        encode(&Header::new(Algorithm::HS256), &claims("alice", NOW + 60), &EncodingKey::from_secret(b"x").unwrap());
    assert_eq!(secret_verifier().verify(&other.unwrap(), NOW), Err(TokenRefusal::Forged));
    let token = hs(&claims("alice", NOW + 60));
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let payload = URL_SAFE_NO_PAD.encode(claims("mallory", NOW + 60).to_string());
    let tampered = format!("{head}.{payload}.{signature}");
    assert_eq!(secret_verifier().verify(&tampered, NOW), Err(TokenRefusal::Forged));
    // The signature is checked before the payload is read.
    let garbled = format!("{head}.!!!.{signature}");
    assert_eq!(secret_verifier().verify(&garbled, NOW), Err(TokenRefusal::Forged));
    for junk in ["x", "a.b", "a.b.c", "..", "e30.e30.", "e30.e30.e30"] {
        assert_eq!(secret_verifier().verify(junk, NOW), Err(TokenRefusal::Malformed), "{junk}");
    }
    assert_eq!(secret_verifier().verify("", NOW), Err(TokenRefusal::Missing));
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(secret_verifier().verify(&long, NOW), Err(TokenRefusal::TooLong(MAX_TOKEN_BYTES)));
}

#[test]
fn none_and_algorithm_confusion_are_refused() {
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("alice", NOW + 60).to_string());
    let unsigned = format!("{none_header}.{payload}.");
    let refusal = secret_verifier().verify(&unsigned, NOW);
    assert!(matches!(&refusal, Err(TokenRefusal::Algorithm { got, .. }) if got == "none"), "{refusal:?}");
    // HS256 "signed" with the RSA public key as the secret, offered to a node
    // that trusts that key: the classic confusion.
    let public = key("rsa.pub.pem");
    let confused =
        encode(&Header::new(Algorithm::HS256), &claims("alice", NOW + 60), &EncodingKey::from_secret(&public).unwrap());
    let rsa = Verifier::from_public_key(&public, 60, None).unwrap();
    let refusal = rsa.verify(&confused.unwrap(), NOW);
    assert!(matches!(&refusal, Err(TokenRefusal::Algorithm { got, .. }) if got == "HS256"), "{refusal:?}");
    // An RS256 token to a node with a secret.
    let signing = EncodingKey::from_rsa_pem(&key("rsa.key.pem")).unwrap();
    let rs = encode(&Header::new(Algorithm::RS256), &claims("alice", NOW + 60), &signing).unwrap();
    assert!(matches!(secret_verifier().verify(&rs, NOW), Err(TokenRefusal::Algorithm { .. })));
    // ES384 to a P-256 key.
    let ec384 = EncodingKey::from_ec_pem(&key("ec384.key.pem")).unwrap();
    let es = encode(&Header::new(Algorithm::ES384), &claims("alice", NOW + 60), &ec384).unwrap();
    let ec256 = Verifier::from_public_key(&key("ec256.pub.pem"), 60, None).unwrap();
    assert!(matches!(ec256.verify(&es, NOW), Err(TokenRefusal::Algorithm { .. })));
}

#[test]
fn time_claims_are_honoured_with_leeway_only_where_it_belongs() {
    let v = secret_verifier();
    assert_eq!(v.verify(&hs(&claims("a", NOW)), NOW), Err(TokenRefusal::Expired), "exp is exclusive");
    assert_eq!(v.verify(&hs(&claims("a", NOW - 1)), NOW), Err(TokenRefusal::Expired), "no leeway on exp");
    assert_eq!(v.verify(&hs(&json!({ "sub": "a" })), NOW), Err(TokenRefusal::NoExpiry));
    let nbf = |at: u64| hs(&json!({ "sub": "a", "exp": NOW + 600, "nbf": at }));
    assert!(v.verify(&nbf(NOW + 60), NOW).is_ok(), "within the leeway");
    assert_eq!(v.verify(&nbf(NOW + 61), NOW), Err(TokenRefusal::NotYetValid));
    let iat = |at: u64| hs(&json!({ "sub": "a", "exp": NOW + 600, "iat": at }));
    assert!(v.verify(&iat(NOW + 60), NOW).is_ok());
    assert_eq!(v.verify(&iat(NOW + 61), NOW), Err(TokenRefusal::IssuedInFuture));
    let strict = Verifier::from_secret(SECRET, 0, None);
    assert_eq!(strict.verify(&nbf(NOW + 1), NOW), Err(TokenRefusal::NotYetValid));
    assert_eq!(v.verify(&hs(&json!({ "exp": NOW + 60 })), NOW), Err(TokenRefusal::NoSubject));
    assert_eq!(v.verify(&hs(&json!({ "sub": "", "exp": NOW + 60 })), NOW), Err(TokenRefusal::NoSubject));
    assert_eq!(v.verify(&hs(&json!({ "sub": 5, "exp": NOW + 60 })), NOW), Err(TokenRefusal::Malformed));
}

#[test]
fn an_audience_must_be_ours() {
    let token = |aud: Value| hs(&json!({ "sub": "a", "exp": NOW + 60, "aud": aud }));
    let no_aud = hs(&claims("a", NOW + 60));
    assert_eq!(secret_verifier().verify(&token(json!("chat")), NOW), Err(TokenRefusal::WrongAudience));
    let chat = Verifier::from_secret(SECRET, 60, Some("chat"));
    assert!(chat.verify(&token(json!("chat")), NOW).is_ok());
    assert!(chat.verify(&token(json!(["other", "chat"])), NOW).is_ok());
    assert_eq!(chat.verify(&token(json!("other")), NOW), Err(TokenRefusal::WrongAudience));
    assert_eq!(chat.verify(&no_aud, NOW), Err(TokenRefusal::WrongAudience));
}
