//! Stateless forwarding of inbound INVITEs to another instance, and admission of
//! INVITEs forwarded by a trusted proxy, with fake time.

use super::inbound::{OFFER, inbound_harness, inbound_invite};
use super::*;
use crate::sip::user_agent::forwarded::{ForwardKey, Origin};

const OTHER: &str = "10.0.0.8:5060";
const SECRET: &[u8] = b"cluster-forward-secret-0123456789";
const UNIX: u64 = 1_700_000_000;

fn forward_key() -> ForwardKey {
    ForwardKey::new(SECRET, Duration::from_secs(30))
}

/// An inbound harness whose core can forward (has the cluster key).
fn forwarding_harness() -> Harness {
    let mut h = Harness::new();
    let mut config = UaConfig::fixed(TimerConfig::default(), "a", LOCAL.parse().unwrap());
    config.forward = Some(forward_key());
    h.ua = UserAgent::new(config);
    h.ua.set_unix_time(UNIX);
    h.ua.set_accept_inbound(true);
    h.ua.set_inbound_trunk(carrier(), vec![PEER.parse().unwrap()]);
    h
}

fn carrier() -> TrunkSettings {
    TrunkSettings {
        name: "carrier".into(),
        host: "10.0.0.2".into(),
        ..TrunkSettings::default()
    }
}

#[test]
fn forwards_invite_cancel_and_relays_responses() {
    let mut h = forwarding_harness();
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
    assert!(
        header(&fwd, "X-Callbridge-Forwarded")
            .starts_with(&format!("v1;ts={UNIX};src=udp:{PEER};auth=0;mac=")),
        "signed with the trunk's address: {fwd}"
    );
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
    let mut h = forwarding_harness();
    h.peer_sends(&inbound_invite("z9hG4bKi1", ""));
    let id = h.incoming[0].id.clone();
    h.ua.respond(h.now, &id, InboundAction::Reject(486, String::new()));
    assert!(h.ua.proxy(h.now, &id, OTHER.parse().unwrap()).is_err());
    let mut h = inbound_harness(carrier());
    h.peer_sends(&inbound_invite("z9hG4bKi1", ""));
    let id = h.incoming[0].id.clone();
    let err = h.ua.proxy(h.now, &id, OTHER.parse().unwrap()).unwrap_err();
    assert!(err.to_string().contains("cluster.forward_secret"), "{err}");
    let mut h = forwarding_harness();
    h.peer_sends(&inbound_invite("z9hG4bKi1", "").replace("Max-Forwards: 70", "Max-Forwards: 0"));
    let id = h.incoming[0].id.clone();
    h.take_sent();
    h.ua.proxy(h.now, &id, OTHER.parse().unwrap()).unwrap();
    h.drain();
    assert!(h.take_sent()[0].starts_with("SIP/2.0 483 Too Many Hops\r\n"));
}

/// A receiving instance: trusts 10.0.0.5 to forward, trunk `carrier` at PEER
/// with digest, and (when `proxy_is_trunk`) the proxy's own address a trunk too.
fn receiving(proxy_is_trunk: bool) -> Harness {
    let mut h = Harness::new();
    let mut config = UaConfig::fixed(TimerConfig::default(), "b", LOCAL.parse().unwrap());
    config.trusted_proxies = vec![crate::sip::parse_net("10.0.0.5").unwrap()];
    config.forward = Some(forward_key());
    h.ua = UserAgent::new(config);
    h.ua.set_unix_time(UNIX);
    h.ua.set_accept_inbound(true);
    let mut inbound_from = vec![crate::sip::parse_net("10.0.0.2").unwrap()];
    if proxy_is_trunk {
        inbound_from.push(crate::sip::parse_net("10.0.0.5").unwrap());
    }
    h.ua.set_inbound_trunk(
        TrunkSettings {
            inbound_auth: true,
            inbound_from,
            credentials: Some(crate::sip::Credentials {
                username: "u".into(),
                password: "p".into(),
            }),
            ..carrier()
        },
        vec![PEER.parse().unwrap()],
    );
    h
}

/// The trunk's INVITE `n` as a proxy at 10.0.0.5 forwards it (its Via on top),
/// with `extra` header lines.
fn via_proxy(n: u32, extra: &str) -> String {
    inbound_invite(&format!("z9hG4bKt{n}"), extra)
        .replace("in-1", &format!("in-{n}"))
        .replacen(
            "Via: ",
            &format!("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcbpx{n};rport\r\nVia: "),
            1,
        )
}

/// The header the forwarding instance adds to `text` (claiming PEER, `auth`).
fn signed(text: &str, at: u64, auth: bool) -> String {
    let Ok(crate::sip::message::Incoming::Request(request)) =
        crate::sip::message::parse(text.as_bytes())
    else {
        panic!("{text}");
    };
    let origin = Origin {
        source: Peer::udp(PEER.parse().unwrap()),
        digest_checked: auth,
    };
    let stamp = forward_key().stamp(at, origin, &request).unwrap();
    format!("{stamp}\r\n")
}

/// Sends `text` from `from` and returns the status line of the answer (or
/// `incoming` when the call was admitted).
fn outcome(h: &mut Harness, from: &str, text: &str) -> String {
    let before = h.incoming.len();
    h.ua.handle_message(h.now, Peer::udp(from.parse().unwrap()), text.as_bytes());
    h.drain();
    if h.incoming.len() > before {
        return "incoming".into();
    }
    let sent = h.take_sent();
    sent.iter()
        .find(|m| m.starts_with("SIP/2.0 4"))
        .map(|m| m.lines().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("{sent:?}"))
}

#[test]
fn a_forged_via_from_a_trusted_proxy_decides_nothing() {
    let mut h = receiving(false);
    // Before: the second Via (the trunk's address) admitted it, digest skipped.
    assert_eq!(
        outcome(&mut h, "10.0.0.5:5060", &via_proxy(1, "")),
        "SIP/2.0 403 Forbidden",
        "without a header it is the proxy's own, and the proxy is no trunk"
    );
    let forged = format!(
        "X-Callbridge-Forwarded: v1;ts={UNIX};src=udp:{PEER};auth=1;mac={}\r\n",
        "ab".repeat(32)
    );
    assert_eq!(
        outcome(&mut h, "10.0.0.5:5060", &via_proxy(2, &forged)),
        "SIP/2.0 403 Forbidden",
        "a header with a made-up signature is not believed"
    );
    // Where the proxy's own address belongs to a digest trunk, it is challenged.
    let mut h = receiving(true);
    assert_eq!(
        outcome(&mut h, "10.0.0.5:5060", &via_proxy(3, &forged)),
        "SIP/2.0 407 Proxy Authentication Required",
        "digest is never skipped because of a Via"
    );
    assert!(h.incoming.is_empty());
}

#[test]
fn a_signed_forward_is_admitted_as_the_trunk_and_only_within_its_window() {
    let mut h = receiving(false);
    let text = via_proxy(1, "");
    let admitted = via_proxy(1, &signed(&text, UNIX, true));
    assert_eq!(outcome(&mut h, "10.0.0.5:5060", &admitted), "incoming");
    assert_eq!(
        h.incoming[0].source,
        PEER.parse::<std::net::SocketAddr>().unwrap(),
        "the vouched trunk address"
    );
    assert_eq!(h.incoming[0].trunk, "carrier");
    // The forwarding instance did not check the digest: we challenge.
    let text = via_proxy(2, "");
    assert_eq!(
        outcome(
            &mut h,
            "10.0.0.5:5060",
            &via_proxy(2, &signed(&text, UNIX, false))
        ),
        "SIP/2.0 407 Proxy Authentication Required"
    );
    // Too old (a captured header replayed), or from an address not trusted.
    let text = via_proxy(3, "");
    let stale = via_proxy(3, &signed(&text, UNIX - 31, true));
    assert_eq!(
        outcome(&mut h, "10.0.0.5:5060", &stale),
        "SIP/2.0 403 Forbidden"
    );
    let text = via_proxy(4, "");
    let valid = via_proxy(4, &signed(&text, UNIX, true));
    assert_eq!(
        outcome(&mut h, "10.0.0.6:5060", &valid),
        "SIP/2.0 403 Forbidden",
        "only trusted proxies' headers count"
    );
    assert_eq!(h.incoming.len(), 1);
}
