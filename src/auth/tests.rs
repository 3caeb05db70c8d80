use base64::Engine;

use super::*;
use crate::config::AuthConfig;

const SECRET: &str = "test-secret-test-secret-test-secret!";
const NOW: u64 = 1_800_000_000;

fn config() -> AuthConfig {
    AuthConfig {
        audience: "callbridge".into(),
        issuer: "https://issuer.test/".into(),
        hs256_secret: SECRET.into(),
        ..AuthConfig::default()
    }
}

fn claims() -> Claims {
    Claims {
        sub: "alice".into(),
        exp: NOW + 3600,
        nbf: None,
        iat: Some(NOW),
        aud: Some(claims::Audience::One("callbridge".into())),
        iss: Some("https://issuer.test/".into()),
        scope: "calls:outbound calls:inbound".into(),
        caller_id: Some("+15550001111".into()),
        dids: vec!["+15550001111".into()],
        max_calls: Some(2),
        record: None,
    }
}

fn verifier() -> Verifier {
    Verifier::from_config(&config()).expect("verifier")
}

#[test]
fn valid_token_gives_identity() {
    let token = mint_hs256(SECRET, &claims()).expect("mint");
    let id = verifier().verify(&token, NOW).expect("valid");
    assert_eq!(id.user, "alice");
    assert!(id.has(Scope::CallsOutbound));
    assert!(id.has(Scope::CallsInbound));
    assert!(!id.has(Scope::Admin));
    assert_eq!(id.max_calls, Some(2));
    assert_eq!(
        id.require(Scope::Admin),
        Err(AuthError::MissingScope("admin".into()))
    );
}

#[test]
fn expiry_and_not_before_use_the_given_time_with_leeway() {
    let token = mint_hs256(SECRET, &claims()).expect("mint");
    let v = verifier();
    assert!(v.verify(&token, NOW + 3600 + 29).is_ok(), "within leeway");
    assert_eq!(v.verify(&token, NOW + 3600 + 31), Err(AuthError::Expired));
    let mut c = claims();
    c.nbf = Some(NOW + 100);
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert_eq!(v.verify(&token, NOW), Err(AuthError::NotYetValid));
    assert!(v.verify(&token, NOW + 80).is_ok());
}

#[test]
fn wrong_signature_audience_issuer_are_refused() {
    let v = verifier();
    let forged = mint_hs256("another-secret-another-secret-12345", &claims()).expect("mint");
    assert_eq!(v.verify(&forged, NOW), Err(AuthError::BadSignature));

    let mut c = claims();
    c.aud = Some(claims::Audience::Many(vec!["other".into()]));
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert_eq!(
        v.verify(&token, NOW),
        Err(AuthError::WrongAudience("callbridge".into()))
    );

    let mut c = claims();
    c.aud = None;
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::WrongAudience(_))
    ));

    let mut c = claims();
    c.iss = Some("https://evil.test/".into());
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::WrongIssuer(_))
    ));
}

fn b64(json: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn alg_none_and_unconfigured_algorithms_are_refused() {
    let v = verifier();
    let payload = b64(&serde_json::to_string(&claims()).expect("json"));
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), payload);
    assert_eq!(v.verify(&none, NOW), Err(AuthError::Unsigned));
    let none_upper = format!("{}.{}.", b64(r#"{"alg":"NONE"}"#), payload);
    assert_eq!(v.verify(&none_upper, NOW), Err(AuthError::Unsigned));
    let rs = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), payload);
    assert_eq!(
        v.verify(&rs, NOW),
        Err(AuthError::AlgorithmNotAccepted("RS256".into()))
    );
    let hs512 = format!("{}.{}.c2ln", b64(r#"{"alg":"HS512"}"#), payload);
    assert_eq!(
        v.verify(&hs512, NOW),
        Err(AuthError::AlgorithmNotAccepted("HS512".into()))
    );
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let v = verifier();
    for bad in ["", "abc", "a.b", "a.b.c.d", "!!!.???.***", "e30.e30.e30"] {
        let err = v.verify(bad, NOW).expect_err(bad);
        assert!(
            matches!(err, AuthError::Malformed(_) | AuthError::BadSignature),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn missing_claims_are_named() {
    let v = verifier();
    let header = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64(r#"{"sub":"bob","aud":"callbridge"}"#);
    // Sign it properly so only the claim is wrong.
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{header}.{payload}").as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    let token = format!("{header}.{payload}.{sig}");
    assert_eq!(
        v.verify(&token, NOW),
        Err(AuthError::BadClaim("exp".into()))
    );
}

#[test]
fn scope_error_is_forbidden_others_are_not() {
    assert!(AuthError::MissingScope("admin".into()).is_forbidden());
    assert!(!AuthError::Expired.is_forbidden());
}

#[test]
fn errors_never_contain_the_token() {
    let token = mint_hs256("another-secret-another-secret-12345", &claims()).expect("mint");
    let err = verifier().verify(&token, NOW).expect_err("forged");
    assert!(!err.to_string().contains(&token));
    assert!(!format!("{:?}", verifier()).contains(SECRET));
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn sign_with(alg: jsonwebtoken::Algorithm, key: jsonwebtoken::EncodingKey) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims(), &key).expect("sign")
}

#[test]
fn public_keys_accept_their_algorithm_only() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let config = AuthConfig {
        hs256_secret: Default::default(),
        public_keys: vec![fixture("rsa.pub"), fixture("ec.pub"), fixture("ed.pub")],
        ..config()
    };
    let v = Verifier::from_config(&config).expect("keys load");
    assert_eq!(
        v.algorithms(),
        vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
    );
    let read = |n: &str| std::fs::read(fixture(n)).expect("fixture");
    let rs = sign_with(
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(&read("rsa.key")).expect("rsa"),
    );
    let es = sign_with(
        Algorithm::ES256,
        EncodingKey::from_ec_pem(&read("ec.key")).expect("ec"),
    );
    let ed = sign_with(
        Algorithm::EdDSA,
        EncodingKey::from_ed_pem(&read("ed.key")).expect("ed"),
    );
    for token in [&rs, &es, &ed] {
        assert_eq!(v.verify(token, NOW).expect("valid").user, "alice");
    }
    // HS256 is not configured here, even with the right secret.
    let hs = mint_hs256(SECRET, &claims()).expect("mint");
    assert_eq!(
        v.verify(&hs, NOW),
        Err(AuthError::AlgorithmNotAccepted("HS256".into()))
    );
    // An ES256 token is refused by a verifier that only has the RSA key.
    let other = Verifier::from_config(&AuthConfig {
        hs256_secret: Default::default(),
        public_keys: vec![fixture("rsa.pub")],
        ..config
    })
    .expect("rsa only");
    assert_eq!(
        other.verify(&es, NOW),
        Err(AuthError::AlgorithmNotAccepted("ES256".into()))
    );
}

#[test]
fn unusable_key_file_is_named() {
    let config = AuthConfig {
        public_keys: vec![fixture("README.md")],
        ..config()
    };
    let err = Verifier::from_config(&config).expect_err("not a key");
    assert!(err.to_string().contains("README.md"), "{err}");
}
