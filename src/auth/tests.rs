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

#[test]
fn admin_scope_belongs_to_operator_tokens_only() {
    let v = verifier();
    // A browser token (aud callbridge) claiming `admin`.
    let mut c = claims();
    c.scope = "calls:outbound admin".into();
    let browser = mint_hs256(SECRET, &c).expect("mint");
    let id = v.verify(&browser, NOW).expect("a valid browser token");
    assert!(id.has(Scope::CallsOutbound));
    assert!(!id.has(Scope::Admin), "admin dropped from a browser token");
    assert!(
        !v.verify_any(&browser, NOW)
            .expect("valid")
            .has(Scope::Admin)
    );
    assert_eq!(
        v.verify_operator(&browser, NOW),
        Err(AuthError::WrongAudience("callbridge-admin".into()))
    );

    // An operator token (aud callbridge-admin).
    c.aud = Some(claims::Audience::One("callbridge-admin".into()));
    let operator = mint_hs256(SECRET, &c).expect("mint");
    assert!(
        v.verify_operator(&operator, NOW)
            .expect("ok")
            .has(Scope::Admin)
    );
    assert!(v.verify_any(&operator, NOW).expect("ok").has(Scope::Admin));
    assert_eq!(
        v.verify(&operator, NOW),
        Err(AuthError::WrongAudience("callbridge".into())),
        "an operator token does not open a browser session"
    );
    // Expiry and signature apply to operator tokens as to any other.
    assert_eq!(
        v.verify_operator(&operator, NOW + 7200),
        Err(AuthError::Expired)
    );
}

// ---- RFC 8725 suite: each refusal next to the correct token that is accepted. ----

/// Signs `header`/`payload` (JSON text) with HS256 and `key`, whatever they say.
fn sign_raw(header: &str, payload: &str, key: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    mac.update(signing_input.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

fn payload() -> String {
    serde_json::to_string(&claims()).expect("json")
}

fn assert_accepts(v: &Verifier) {
    let good = mint_hs256(SECRET, &claims()).expect("mint");
    assert_eq!(
        v.verify(&good, NOW).expect("the correct token").user,
        "alice"
    );
}

#[test]
fn rfc8725_hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the attacker signs HS256 with the PEM of the gateway's
    // RSA public key as the HMAC secret. Keys are bound to one algorithm, so the PEM is
    // never used as an HMAC key.
    let pem = std::fs::read(fixture("rsa.pub")).expect("fixture");
    let forged = sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &payload(), &pem);
    let both = Verifier::from_config(&AuthConfig {
        public_keys: vec![fixture("rsa.pub")],
        ..config()
    })
    .expect("rsa + hs256");
    assert_eq!(both.verify(&forged, NOW), Err(AuthError::BadSignature));
    assert_accepts(&both);
    let rsa_only = Verifier::from_config(&AuthConfig {
        hs256_secret: Default::default(),
        public_keys: vec![fixture("rsa.pub")],
        ..config()
    })
    .expect("rsa only");
    assert_eq!(
        rsa_only.verify(&forged, NOW),
        Err(AuthError::AlgorithmNotAccepted("HS256".into()))
    );
    let key = std::fs::read(fixture("rsa.key")).expect("fixture");
    let rs = sign_with(
        jsonwebtoken::Algorithm::RS256,
        jsonwebtoken::EncodingKey::from_rsa_pem(&key).expect("rsa"),
    );
    assert_eq!(
        rsa_only.verify(&rs, NOW).expect("RS256 accepted").user,
        "alice"
    );
}

#[test]
fn rfc8725_alg_none_in_any_spelling_is_refused() {
    let v = verifier();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let unsigned = format!("{}.{}.", b64(&header), b64(&payload()));
        assert_eq!(v.verify(&unsigned, NOW), Err(AuthError::Unsigned), "{alg}");
        // Even with a valid HMAC appended.
        let signed = sign_raw(&header, &payload(), SECRET.as_bytes());
        assert_eq!(v.verify(&signed, NOW), Err(AuthError::Unsigned), "{alg}");
    }
    assert_accepts(&v);
}

#[test]
fn rfc8725_missing_and_expired_exp_are_refused() {
    let v = verifier();
    let mut no_exp: serde_json::Value = serde_json::from_str(&payload()).expect("json");
    no_exp.as_object_mut().expect("object").remove("exp");
    let token = sign_raw(r#"{"alg":"HS256"}"#, &no_exp.to_string(), SECRET.as_bytes());
    assert_eq!(
        v.verify(&token, NOW),
        Err(AuthError::BadClaim("exp".into()))
    );
    let token = mint_hs256(SECRET, &claims()).expect("mint");
    // exp = NOW + 3600, leeway 30 s.
    assert_eq!(v.verify(&token, NOW + 3600 + 30), Err(AuthError::Expired));
    assert_eq!(
        v.verify(&token, NOW + 86_400 * 365),
        Err(AuthError::Expired)
    );
    assert_accepts(&v);
}

#[test]
fn rfc8725_exp_beyond_the_max_token_lifetime_is_refused() {
    let v = verifier();
    let mut c = claims();
    c.exp = NOW + 24 * 3600 + 30 + 1;
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert_eq!(
        v.verify(&token, NOW),
        Err(AuthError::TooLongLived(24 * 3600))
    );
    c.exp = u64::MAX;
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert_eq!(
        v.verify(&token, NOW),
        Err(AuthError::TooLongLived(24 * 3600))
    );
    c.exp = NOW + 24 * 3600;
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert!(v.verify(&token, NOW).is_ok(), "exactly the maximum is fine");
    assert_accepts(&v);
}

#[test]
fn rfc8725_nbf_in_the_future_wrong_aud_and_wrong_iss_are_refused() {
    let v = verifier();
    let mut c = claims();
    c.nbf = Some(NOW + 31);
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert_eq!(v.verify(&token, NOW), Err(AuthError::NotYetValid));
    let mut c = claims();
    c.aud = Some(claims::Audience::One("callbridge-admin".into()));
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::WrongAudience(_))
    ));
    let mut c = claims();
    c.iss = None;
    let token = mint_hs256(SECRET, &c).expect("mint");
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::WrongIssuer(_))
    ));
    assert_accepts(&v);
}

#[test]
fn rfc8725_typ_must_be_jwt_or_absent() {
    // RFC 8725 §3.11: explicit typing keeps tokens of another kind from the same
    // issuer (OAuth access tokens "at+jwt", logout tokens, ...) from passing as ours.
    let v = verifier();
    for typ in [None, Some("JWT"), Some("jwt"), Some("application/jwt")] {
        let header = match typ {
            Some(t) => format!(r#"{{"alg":"HS256","typ":"{t}"}}"#),
            None => r#"{"alg":"HS256"}"#.to_string(),
        };
        let token = sign_raw(&header, &payload(), SECRET.as_bytes());
        assert!(v.verify(&token, NOW).is_ok(), "{typ:?} accepted");
    }
    for typ in [
        "at+jwt",
        "application/at+JWT",
        "logout+jwt",
        "secevent+jwt",
        "JOSE",
    ] {
        let header = format!(r#"{{"alg":"HS256","typ":"{typ}"}}"#);
        let token = sign_raw(&header, &payload(), SECRET.as_bytes());
        assert!(
            matches!(v.verify(&token, NOW), Err(AuthError::WrongType(_))),
            "{typ} refused"
        );
    }
    let token = sign_raw(r#"{"alg":"HS256","typ":7}"#, &payload(), SECRET.as_bytes());
    assert!(matches!(
        v.verify(&token, NOW),
        Err(AuthError::Malformed(_))
    ));
    // An operator whose issuer mints RFC 9068 access tokens lists that type.
    let at = Verifier::from_config(&AuthConfig {
        token_types: vec!["JWT".into(), "at+jwt".into()],
        ..config()
    })
    .expect("verifier");
    let token = sign_raw(
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        &payload(),
        SECRET.as_bytes(),
    );
    assert!(at.verify(&token, NOW).is_ok());
    assert_accepts(&v);
}

#[test]
fn rfc8725_critical_header_extensions_are_refused() {
    let v = verifier();
    let header = r#"{"alg":"HS256","typ":"JWT","crit":["exp"],"exp":1}"#;
    let token = sign_raw(header, &payload(), SECRET.as_bytes());
    assert_eq!(v.verify(&token, NOW), Err(AuthError::CriticalHeader));
    assert_accepts(&v);
}

#[test]
fn rfc8725_a_64k_token_is_refused_before_any_parsing_or_signature_work() {
    let v = verifier();
    // Correctly signed, but 64 KiB of claims.
    let mut big: serde_json::Value = serde_json::from_str(&payload()).expect("json");
    big["pad"] = serde_json::Value::String("x".repeat(64 * 1024));
    let token = sign_raw(r#"{"alg":"HS256"}"#, &big.to_string(), SECRET.as_bytes());
    assert!(token.len() > 64 * 1024);
    assert_eq!(v.verify(&token, NOW), Err(AuthError::TooLarge(8 * 1024)));
    // Garbage of that size is refused for its size, not parsed: the size check
    // comes first.
    let garbage = "!".repeat(64 * 1024);
    assert_eq!(v.verify(&garbage, NOW), Err(AuthError::TooLarge(8 * 1024)));
    assert!(matches!(
        v.verify("!!!.!!!.!!!", NOW),
        Err(AuthError::Malformed(_))
    ));
    // At the limit it is still verified.
    let mut c = claims();
    let fits = 8 * 1024 - mint_hs256(SECRET, &c).expect("mint").len();
    c.caller_id = Some(format!(
        "{}{}",
        c.caller_id.unwrap_or_default(),
        "1".repeat(fits * 3 / 4 - 4)
    ));
    let at_limit = mint_hs256(SECRET, &c).expect("mint");
    assert!(
        at_limit.len() <= 8 * 1024 && at_limit.len() > 8 * 1024 - 16,
        "{}",
        at_limit.len()
    );
    assert!(v.verify(&at_limit, NOW).is_ok());
}

#[test]
fn rfc8725_leeway_is_bounded_in_config() {
    let mut c = crate::config::Config::default();
    c.auth.hs256_secret = SECRET.into();
    c.auth.leeway = std::time::Duration::from_secs(300);
    crate::config::validate(&c).expect("5 minutes is the maximum");
    c.auth.leeway = std::time::Duration::from_secs(301);
    let err = crate::config::validate(&c)
        .expect_err("too long")
        .to_string();
    assert!(err.contains("auth.leeway"), "{err}");
    // And the verifier applies exactly the configured leeway.
    let v = Verifier::from_config(&AuthConfig {
        leeway: std::time::Duration::from_secs(300),
        ..config()
    })
    .expect("verifier");
    let token = mint_hs256(SECRET, &claims()).expect("mint");
    assert!(v.verify(&token, NOW + 3600 + 299).is_ok());
    assert_eq!(v.verify(&token, NOW + 3600 + 300), Err(AuthError::Expired));
}
