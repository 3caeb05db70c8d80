//! A trunk's digest credentials reach the trunk only, with fake time: a challenge
//! to a request that went elsewhere (a far end's Contact) or naming another realm
//! is not answered, and the ACK does not copy them off the trunk.

use super::*;
use crate::sip::Credentials;

/// A request on a trunk at PEER with credentials (and `realm`, if any).
fn with_credentials(realm: Option<&str>) -> InviteRequest {
    let mut request = base_request();
    request.trunk.credentials = Some(Credentials {
        username: "acct".into(),
        password: "pw".into(),
    });
    request.trunk.realm = realm.map(str::to_string);
    request
}

fn challenge(realm: &str) -> String {
    format!("WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"n1\", qop=\"auth\"\r\n")
}

/// True if any message sent so far carries credentials.
fn any_credentials(sent: &[String]) -> bool {
    sent.iter().any(|m| {
        m.lines()
            .any(|l| l.starts_with("Authorization:") || l.starts_with("Proxy-Authorization:"))
    })
}

#[test]
fn a_challenge_from_a_contact_off_the_trunk_is_not_answered() {
    let mut h = Harness::new();
    h.call_with(with_credentials(None));
    let invite = h.take_sent().remove(0);
    // The far end's 2xx points its Contact at another host (no Record-Route).
    h.peer_sends(&reply(
        &invite,
        200,
        "OK",
        "Contact: <sip:far@10.0.4.4:5060>\r\n",
    ));
    let outside: std::net::SocketAddr = "10.0.4.4:5060".parse().unwrap();
    assert_eq!(h.sent[0].dest.addr, outside, "the ACK goes to the Contact");
    h.take_sent();
    h.take_events();
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    assert_eq!(h.sent[0].dest.addr, outside);
    let bye = h.take_sent().remove(0);
    h.sends_from(
        "10.0.4.4:5060",
        &reply(&bye, 401, "Unauthorized", &challenge("x")),
    );
    let sent = h.take_sent();
    assert!(!any_credentials(&sent), "{sent:?}");
    assert!(
        starting(&sent, "BYE ").is_empty(),
        "no retried BYE: {sent:?}"
    );
    assert_eq!(h.take_events(), vec![SipCallEvent::Terminated]);
}

#[test]
fn the_ack_copies_the_invites_credentials_to_the_trunk_only() {
    for (contact, to_trunk) in [
        ("Contact: <sip:gw@10.0.0.2:5060>\r\n", true),
        ("Contact: <sip:far@10.0.4.4:5060>\r\n", false),
    ] {
        let mut h = Harness::new();
        h.call_with(with_credentials(None));
        let invite = h.take_sent().remove(0);
        h.peer_sends(&reply(&invite, 401, "Unauthorized", &challenge("carrier")));
        let sent = h.take_sent();
        let retried = starting(&sent, "INVITE ")[0].clone();
        assert!(header(&retried, "Authorization").contains("username=\"acct\""));
        h.peer_sends(&reply(&retried, 200, "OK", contact));
        let ack = h.take_sent().remove(0);
        assert!(ack.starts_with("ACK "), "{ack}");
        assert_eq!(
            any_credentials(std::slice::from_ref(&ack)),
            to_trunk,
            "{ack}"
        );
    }
}

#[test]
fn a_challenge_naming_another_realm_than_the_trunks_is_not_answered() {
    let mut h = Harness::new();
    h.call_with(with_credentials(Some("carrier")));
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(&invite, 401, "Unauthorized", &challenge("evil")));
    let sent = h.take_sent();
    assert!(!any_credentials(&sent), "{sent:?}");
    assert!(starting(&sent, "INVITE ").is_empty(), "not retried");
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Failed {
            status: 401,
            reason: "Unauthorized".into()
        }]
    );
    // The configured realm is answered.
    let mut h = Harness::new();
    h.call_with(with_credentials(Some("carrier")));
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(&invite, 401, "Unauthorized", &challenge("carrier")));
    assert!(any_credentials(&h.take_sent()));
}
