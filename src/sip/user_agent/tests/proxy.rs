//! Stateless forwarding of inbound INVITEs to another instance, and admission of
//! INVITEs forwarded by a trusted proxy, with fake time.

use super::inbound::{OFFER, inbound_harness, inbound_invite};
use super::*;

const OTHER: &str = "10.0.0.8:5060";

fn carrier() -> TrunkSettings {
    TrunkSettings {
        name: "carrier".into(),
        host: "10.0.0.2".into(),
        ..TrunkSettings::default()
    }
}

#[test]
fn forwards_invite_cancel_and_relays_responses() {
    let mut h = inbound_harness(carrier());
    h.peer_sends(&with_body(
        &inbound_invite("z9hG4bKi1", ""),
        "application/sdp",
        OFFER,
    ));
    let id = h.incoming[0].id.clone();
    h.ua.proxy(h.now, &id, OTHER.parse().unwrap()).unwrap();
    h.drain();
    let sent = std::mem::take(&mut h.sent);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].dest, Peer::udp(OTHER.parse().unwrap()));
    let fwd = String::from_utf8(sent[0].payload.clone()).unwrap();
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via:")).collect();
    assert!(
        vias[0].starts_with("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcbpx"),
        "{fwd}"
    );
    assert_eq!(vias.len(), 2);
    assert_eq!(header(&fwd, "Max-Forwards"), "69");
    assert!(fwd.ends_with(OFFER));
    assert_eq!(h.ua.call_count(), 0, "the call is the other instance's now");
    assert_eq!(h.ua.server_count(), 0);
    // A retransmission goes the same way with the same branch; no 100 from us.
    h.peer_sends(&with_body(
        &inbound_invite("z9hG4bKi1", ""),
        "application/sdp",
        OFFER,
    ));
    let again = std::mem::take(&mut h.sent);
    assert_eq!(String::from_utf8(again[0].payload.clone()).unwrap(), fwd);
    h.advance(Duration::from_secs(1));
    assert!(h.sent.is_empty(), "no 100 Trying of ours");
    // The other instance's 180 comes back through us to the trunk's Via.
    let ringing = format!(
        "SIP/2.0 180 Ringing\r\n{}\r\n{}\r\nFrom: \"Bob\" <sip:+15552223333@trunk.example>;tag=peer1\r\nTo: <sip:+15550001111@gw.example>;tag=b1\r\nCall-ID: in-1\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550001111@10.0.0.8:5060>\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    h.ua.handle_message(h.now, Peer::udp(OTHER.parse().unwrap()), ringing.as_bytes());
    h.drain();
    let relayed = std::mem::take(&mut h.sent);
    assert_eq!(relayed[0].dest, Peer::udp(PEER.parse().unwrap()));
    let text = String::from_utf8(relayed[0].payload.clone()).unwrap();
    assert!(text.starts_with("SIP/2.0 180 Ringing\r\n"));
    assert_eq!(text.matches("Via:").count(), 1, "{text}");
    // The trunk's CANCEL follows the INVITE with the same branch.
    let cancel = inbound_invite("z9hG4bKi1", "")
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    h.peer_sends(&cancel);
    let sent = std::mem::take(&mut h.sent);
    let fwd_cancel = String::from_utf8(sent[0].payload.clone()).unwrap();
    assert!(fwd_cancel.starts_with("CANCEL "));
    assert_eq!(header(&fwd_cancel, "Via"), &vias[0]["Via: ".len()..]);
    assert!(h.incoming.len() == 1 && h.inbound_events.is_empty());
}

#[test]
fn proxy_refuses_answered_calls_and_exhausted_max_forwards() {
    let mut h = inbound_harness(carrier());
    h.peer_sends(&inbound_invite("z9hG4bKi1", ""));
    let id = h.incoming[0].id.clone();
    h.ua.respond(h.now, &id, InboundAction::Reject(486, String::new()));
    assert!(h.ua.proxy(h.now, &id, OTHER.parse().unwrap()).is_err());
    let mut h = inbound_harness(carrier());
    h.peer_sends(&inbound_invite("z9hG4bKi1", "").replace("Max-Forwards: 70", "Max-Forwards: 0"));
    let id = h.incoming[0].id.clone();
    h.take_sent();
    h.ua.proxy(h.now, &id, OTHER.parse().unwrap()).unwrap();
    h.drain();
    assert!(h.take_sent()[0].starts_with("SIP/2.0 483 Too Many Hops\r\n"));
}

#[test]
fn a_trusted_proxy_is_judged_by_the_hop_before_it() {
    let mut h = Harness::new();
    let mut config = UaConfig::fixed(TimerConfig::default(), "b", LOCAL.parse().unwrap());
    config.trusted_proxies = vec![crate::sip::parse_net("10.0.0.5").unwrap()];
    h.ua = UserAgent::new(config);
    h.ua.set_accept_inbound(true);
    h.ua.set_inbound_trunk(
        TrunkSettings {
            inbound_auth: true,
            credentials: Some(crate::sip::Credentials {
                username: "u".into(),
                password: "p".into(),
            }),
            ..carrier()
        },
        vec![PEER.parse().unwrap()],
    );
    let forwarded = inbound_invite("z9hG4bKi1", "").replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcbpx1;rport\r\nVia: ",
        1,
    );
    let proxy = Peer::udp("10.0.0.5:5060".parse().unwrap());
    h.ua.handle_message(h.now, proxy, forwarded.as_bytes());
    h.drain();
    assert_eq!(h.incoming.len(), 1, "{:?}", h.take_sent());
    assert_eq!(
        h.incoming[0].source,
        PEER.parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(h.incoming[0].trunk, "carrier");
    // The same from an untrusted address is refused.
    let stranger = Peer::udp("10.0.0.6:5060".parse().unwrap());
    let other = forwarded
        .replace("in-1", "in-2")
        .replace("z9hG4bKcbpx1", "z9hG4bKcbpx2");
    h.ua.handle_message(h.now, stranger, other.as_bytes());
    h.drain();
    assert!(h.take_sent().iter().any(|m| m.starts_with("SIP/2.0 403 ")));
}
