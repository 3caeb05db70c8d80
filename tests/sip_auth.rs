//! Digest authentication against real SIPp peers: a UAS that challenges the INVITE
//! with 401 and checks our answer with `verifyauth` (right and wrong password); a UAS
//! behind a 407-challenging proxy (SIPp 3.6's `verifyauth` only reads
//! `Authorization:`, so the test recomputes that digest independently from SIPp's
//! message log); and a registrar that answers 401 then 200 and checks the refresh's
//! credentials too.

mod common;
use common::sipp;

use std::time::Duration;

use callbridge::sip::{Credentials, InviteRequest, SipCallEvent, TrunkSettings};
use sipp::{Sipp, endpoint, eventually, invite_request, next_event, next_final_or_answer};

fn trunk(password: &str) -> TrunkSettings {
    TrunkSettings {
        name: "auth-trunk".into(),
        credentials: Some(Credentials {
            username: "alice".into(),
            password: password.into(),
        }),
        ..TrunkSettings::default()
    }
}

fn request(sipp: &Sipp, password: &str) -> InviteRequest {
    InviteRequest {
        trunk: trunk(password),
        ..invite_request(sipp.addr)
    }
}

#[tokio::test]
async fn invite_401_is_answered_with_a_digest_sipp_verifies() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_auth_401.xml")), &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(&sipp, "s3cret")).await.unwrap();
    match next_final_or_answer(&mut events).await {
        SipCallEvent::Answered { sdp } => assert!(sdp.contains("m=audio"), "{sdp}"),
        other => panic!("expected Answered after the 401 round, got {other:?}"),
    }
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let m = &outcome.messages;
    assert!(
        m.contains("CSeq: 2 INVITE"),
        "the resent INVITE has CSeq + 1"
    );
    assert!(
        m.contains("Authorization: Digest username=\"alice\""),
        "{m}"
    );
    assert!(m.contains("qop=auth") && m.contains("nc=00000001") && m.contains("opaque=\"op4que\""));
    assert!(!m.contains("s3cret"), "the password never goes on the wire");
    ep.shutdown().await;
}

/// The `key="value"` or `key=value` parameters of a Digest header value.
fn digest_params(value: &str) -> std::collections::HashMap<String, String> {
    value
        .trim_start_matches("Digest")
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

fn md5_hex(text: &str) -> String {
    use md5::Digest;
    md5::Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn proxy_407_is_answered_with_proxy_authorization() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_auth_407.xml")), &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(&sipp, "s3cret")).await.unwrap();
    match next_final_or_answer(&mut events).await {
        SipCallEvent::Answered { sdp } => assert!(sdp.contains("m=audio"), "{sdp}"),
        other => panic!("expected Answered after the 407 round, got {other:?}"),
    }
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let m = &outcome.messages;
    assert!(
        m.contains("CSeq: 2 INVITE"),
        "the resent INVITE has CSeq + 1"
    );
    let line = m
        .lines()
        .find_map(|l| l.strip_prefix("Proxy-Authorization: "))
        .unwrap_or_else(|| panic!("no Proxy-Authorization in {m}"));
    let p = digest_params(line);
    assert_eq!(p["username"], "alice");
    assert_eq!(p["realm"], "callbridge-test");
    assert_eq!(p["opaque"], "op4que");
    assert_eq!(p["qop"], "auth");
    assert_eq!(p["nc"], "00000001");
    // RFC 2617 §3.2.2.1, recomputed here (independently of the endpoint's code).
    let ha1 = md5_hex("alice:callbridge-test:s3cret");
    let ha2 = md5_hex(&format!("INVITE:{}", p["uri"]));
    let expected = md5_hex(&format!(
        "{ha1}:{}:{}:{}:auth:{ha2}",
        p["nonce"], p["nc"], p["cnonce"]
    ));
    assert_eq!(p["response"], expected, "{line}");
    assert!(!m.contains("s3cret"), "the password never goes on the wire");
    ep.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_ends_with_the_peers_refusal() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_auth_401.xml")), &[]);
    let ep = endpoint().await;
    let (_call, mut events) = ep.invite(request(&sipp, "wrong")).await.unwrap();
    assert_eq!(
        next_final_or_answer(&mut events).await,
        SipCallEvent::Failed {
            status: 403,
            reason: "Forbidden".into()
        }
    );
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn registrar_401_then_200_registers_and_refreshes() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("registrar_401.xml")), &[]);
    let ep = endpoint().await;
    let settings = TrunkSettings {
        name: "registrar".into(),
        host: "127.0.0.1".into(),
        port: sipp.addr.port(),
        register: true,
        register_expires: Duration::from_secs(300),
        ..trunk("s3cret")
    };
    ep.start_trunks(vec![settings]).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || ep
            .trunk_status("registrar")
            .is_some_and(|s| s.registered == Some(true)))
        .await,
        "not registered: {:?}",
        ep.trunk_status("registrar")
    );
    // The registrar granted 2 s: the refresh comes about 1 s later.
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let m = &outcome.messages;
    assert!(
        m.contains("Authorization: Digest username=\"alice\""),
        "{m}"
    );
    assert!(
        m.contains("nc=00000002"),
        "the refresh reuses the challenge: {m}"
    );
    assert!(m.contains("Expires: 300"), "{m}");
    let status = ep.trunk_status("registrar").unwrap();
    assert_eq!(status.registered, Some(true), "{status:?}");
    assert!(status.reachable);
    ep.shutdown().await;
}
