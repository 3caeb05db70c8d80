use super::*;
use crate::sip::message::{Incoming, parse};

fn creds(user: &str, pass: &str) -> Credentials {
    Credentials {
        username: user.into(),
        password: pass.into(),
    }
}

fn input<'a>(method: &'a str, uri: &'a str, cnonce: &'a str, nc: u32) -> DigestInput<'a> {
    DigestInput {
        method,
        uri,
        body: b"",
        cnonce,
        nc,
    }
}

/// RFC 7616 §3.9.1: the same challenge answered with MD5 and with SHA-256.
#[test]
fn rfc7616_vectors() {
    let header = |alg: &str| {
        format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        )
    };
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    let who = creds("Mufasa", "Circle of Life");
    let md5 = parse_challenge(&header("MD5"), false).unwrap();
    assert_eq!(md5.qop, Some(Qop::Auth), "auth preferred over auth-int");
    assert_eq!(
        digest_response(&md5, &who, input("GET", "/dir/index.html", cnonce, 1)),
        "8ca523f5e9506fed4657c9700eebdbec"
    );
    let sha = parse_challenge(&header("SHA-256"), false).unwrap();
    assert_eq!(sha.algorithm, Algorithm::Sha256);
    assert_eq!(
        digest_response(&sha, &who, input("GET", "/dir/index.html", cnonce, 1)),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
}

/// RFC 2617 §3.5 (MD5, qop=auth).
#[test]
fn rfc2617_vector() {
    let c = parse_challenge(
        "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        false,
    )
    .unwrap();
    assert_eq!(
        digest_response(
            &c,
            &creds("Mufasa", "Circle Of Life"),
            input("GET", "/dir/index.html", "0a4f113b", 1)
        ),
        "6629fae49393a05397450978507c4ef1"
    );
}

/// Without qop (RFC 2069 style) and SHA-256-sess with a nonce count of 10 (values
/// computed independently with Python's hashlib).
#[test]
fn no_qop_and_sess_variants() {
    let c = parse_challenge("Digest realm=\"callbridge-test\", nonce=\"abc123\"", true).unwrap();
    assert!(c.proxy && c.qop.is_none() && c.algorithm == Algorithm::Md5);
    assert_eq!(
        digest_response(
            &c,
            &creds("alice", "s3cret"),
            input("INVITE", "sip:+15551234567@127.0.0.1", "", 1)
        ),
        "7965b79862d5e0e9cc4bf67510bfe243"
    );
    let c = parse_challenge(
        "Digest realm=\"r\", nonce=\"n1\", qop=\"auth\", algorithm=SHA-256-sess",
        false,
    )
    .unwrap();
    assert!(c.sess);
    assert_eq!(
        digest_response(
            &c,
            &creds("alice", "pw"),
            input("REGISTER", "sip:reg.example", "c1", 10)
        ),
        "fe0aafd06e7eaab424643bbd2f52808bce7fa149eb0dff6b93de6e8cd92edeb7"
    );
    assert!(
        parse_challenge("Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess", false).is_none()
    );
    assert!(parse_challenge("Basic realm=\"r\"", false).is_none());
    assert!(parse_challenge("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1", false).is_none());
}

fn challenge_response(code: u16, headers: &str) -> Response {
    let raw = format!(
        "SIP/2.0 {code} Auth\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{headers}Content-Length: 0\r\n\r\n"
    );
    match parse(raw.as_bytes()) {
        Ok(Incoming::Response(r, _)) => r,
        other => panic!("{other:?}"),
    }
}

/// The trunk's address in these tests.
const TRUNK: &str = "127.0.0.1:5060";

fn trunk() -> SocketAddr {
    TRUNK.parse().expect("addr")
}

/// A client for a trunk at [`TRUNK`] (no realm configured).
fn client(credentials: Option<Credentials>) -> DigestClient {
    let ip = trunk().ip();
    DigestClient::new(
        credentials,
        None,
        TrunkScope::new(&crate::sip::TrunkSettings::default(), [ip]),
    )
}

fn invite(extra: &str) -> rsip::Request {
    let raw = format!(
        "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    match parse(raw.as_bytes()) {
        Ok(Incoming::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_answers_then_detects_rejection_and_honours_stale() {
    let mut client = client(Some(creds("alice", "pw")));
    let r407 = challenge_response(
        407,
        "Proxy-Authenticate: Digest realm=\"sipp\", nonce=\"n1\", qop=\"auth\", algorithm=MD5\r\n",
    );
    let headers = client.on_challenge(&r407, &invite(""), 0, trunk()).unwrap();
    assert_eq!(headers.len(), 1);
    let text = headers[0].to_string();
    assert!(text.starts_with("Proxy-Authorization: Digest username=\"alice\", realm=\"sipp\", nonce=\"n1\", uri=\"sip:bob@127.0.0.1\", response=\""), "{text}");
    assert!(
        text.contains(", algorithm=MD5, cnonce=\"") && text.contains(", qop=auth, nc=00000001"),
        "{text}"
    );
    assert!(!text.contains("pw"), "no password on the wire");

    // The retried INVITE is challenged again for the same realm: wrong password.
    let retried = invite(&format!("{text}\r\n"));
    assert_eq!(
        client.on_challenge(&r407, &retried, 1, trunk()),
        Err(AuthError::Rejected("sipp".into()))
    );
    // ...unless the nonce was only stale.
    let stale = challenge_response(
        407,
        "Proxy-Authenticate: Digest realm=\"sipp\", nonce=\"n2\", qop=\"auth\", stale=true\r\n",
    );
    assert!(client.on_challenge(&stale, &retried, 1, trunk()).is_ok());
    assert_eq!(
        client.on_challenge(&stale, &retried, 3, trunk()),
        Err(AuthError::TooManyRounds)
    );
    // Later requests reuse the challenge with an incremented nonce count.
    let again = client.authorize("BYE", "sip:bob@127.0.0.1", b"", trunk());
    assert!(again[0].to_string().contains("nc=00000002"), "{}", again[0]);
}

#[test]
fn client_without_credentials_or_support_refuses() {
    let r401 = challenge_response(401, "WWW-Authenticate: Digest realm=\"x\", nonce=\"n\"\r\n");
    assert_eq!(
        client(None).on_challenge(&r401, &invite(""), 0, trunk()),
        Err(AuthError::NoCredentials)
    );
    let weird = challenge_response(
        401,
        "WWW-Authenticate: Digest realm=\"x\", nonce=\"n\", algorithm=FOO\r\n",
    );
    assert_eq!(
        client(Some(creds("a", "b"))).on_challenge(&weird, &invite(""), 0, trunk()),
        Err(AuthError::Unsupported)
    );
    // The first supported challenge of a realm wins.
    let two = challenge_response(
        401,
        "WWW-Authenticate: Digest realm=\"x\", nonce=\"n\", algorithm=SHA-256\r\nWWW-Authenticate: Digest realm=\"x\", nonce=\"n\", algorithm=MD5\r\n",
    );
    let headers = client(Some(creds("a", "b")))
        .on_challenge(&two, &invite(""), 0, trunk())
        .unwrap();
    assert_eq!(headers.len(), 1);
    assert!(headers[0].to_string().starts_with("Authorization: Digest "));
    assert!(headers[0].to_string().contains("algorithm=SHA-256"));
}

#[test]
fn credentials_never_answer_a_challenge_from_off_the_trunk() {
    let r401 = challenge_response(
        401,
        "WWW-Authenticate: Digest realm=\"carrier\", nonce=\"n1\", qop=\"auth\"\r\n",
    );
    let mut c = client(Some(creds("acct", "pw")));
    let outside: SocketAddr = "127.0.0.2:5060".parse().expect("addr");
    assert_eq!(
        c.on_challenge(&r401, &invite(""), 0, outside),
        Err(AuthError::NotTrunk(outside)),
        "a REFER target or a far end's Contact gets no digest response"
    );
    assert!(!c.may_send_to(outside));
    // The same port on another IP of the trunk's host does not count either; another
    // port of the trunk's IP does (carriers answer from other ports).
    assert!(c.may_send_to("127.0.0.1:5080".parse().expect("addr")));
    let headers = c
        .on_challenge(&r401, &invite(""), 0, trunk())
        .expect("trunk");
    assert!(headers[0].to_string().contains("username=\"acct\""));
    // Preemptive credentials for later requests go to the trunk only.
    assert_eq!(
        c.authorize("BYE", "sip:x@127.0.0.2", b"", outside),
        Vec::new()
    );
    assert_eq!(c.authorize("BYE", "sip:x@127.0.0.1", b"", trunk()).len(), 1);
}

#[test]
fn only_the_trunks_realm_is_answered() {
    let challenge = |realm: &str| {
        challenge_response(
            407,
            &format!("Proxy-Authenticate: Digest realm=\"{realm}\", nonce=\"n-{realm}\"\r\n"),
        )
    };
    // Configured realm: another realm is refused even from the trunk's address.
    let scope = TrunkScope::new(&crate::sip::TrunkSettings::default(), [trunk().ip()]);
    let mut configured = DigestClient::new(
        Some(creds("acct", "pw")),
        Some("carrier".into()),
        scope.clone(),
    );
    assert_eq!(
        configured.on_challenge(&challenge("evil"), &invite(""), 0, trunk()),
        Err(AuthError::Realm {
            offered: vec!["evil".into()],
            expected: "carrier".into()
        })
    );
    assert!(
        configured
            .on_challenge(&challenge("carrier"), &invite(""), 0, trunk())
            .is_ok()
    );
    // Two realms in one 407: only the trunk's is answered.
    let both = challenge_response(
        407,
        "Proxy-Authenticate: Digest realm=\"evil\", nonce=\"e\"\r\nProxy-Authenticate: Digest realm=\"carrier\", nonce=\"c\"\r\n",
    );
    let headers = configured
        .on_challenge(&both, &invite(""), 0, trunk())
        .expect("the trunk's realm");
    assert_eq!(headers.len(), 1);
    assert!(headers[0].to_string().contains("realm=\"carrier\""));
    // No realm configured: the first realm from the trunk is pinned.
    let mut pinned = client(Some(creds("acct", "pw")));
    assert!(
        pinned
            .on_challenge(&challenge("first"), &invite(""), 0, trunk())
            .is_ok()
    );
    assert!(matches!(
        pinned.on_challenge(&challenge("second"), &invite(""), 0, trunk()),
        Err(AuthError::Realm { .. })
    ));
}

#[test]
fn debug_redacts_the_password() {
    let text = format!("{:?}", creds("alice", "hunter2"));
    assert!(
        text.contains("alice") && !text.contains("hunter2"),
        "{text}"
    );
}
