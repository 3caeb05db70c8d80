use super::*;
use crate::sip::message::{Incoming, parse};

fn invite() -> Request {
    let raw = "INVITE sip:+15551234567@trunk.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv;rport\r\nFrom: <sip:alice@127.0.0.1>;tag=local1\r\nTo: <sip:+15551234567@trunk.example>\r\nCall-ID: cid-9\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
    match parse(raw.as_bytes()) {
        Ok(Incoming::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn ok(extra: &str) -> Response {
    let raw = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv;rport=5070\r\nFrom: <sip:alice@127.0.0.1>;tag=local1\r\nTo: <sip:+15551234567@trunk.example>;tag=remote1\r\nCall-ID: cid-9\r\nCSeq: 7 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    match parse(raw.as_bytes()) {
        Ok(Incoming::Response(r, _)) => r,
        other => panic!("{other:?}"),
    }
}

fn peer_request(method: &str, seq: u32, to_tag: &str) -> Request {
    let raw = format!(
        "{method} sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKp{seq}\r\nFrom: <sip:+15551234567@trunk.example>;tag=remote1\r\nTo: <sip:alice@127.0.0.1>;tag={to_tag}\r\nCall-ID: cid-9\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    );
    match parse(raw.as_bytes()) {
        Ok(Incoming::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn text(r: &Request) -> String {
    r.to_string()
}

#[test]
fn created_from_2xx_with_contact_and_tags() {
    let d = Dialog::from_uac_2xx(
        &invite(),
        &ok("Contact: <sip:gw@10.0.0.2:5062;transport=udp>\r\n"),
    )
    .unwrap();
    assert_eq!(d.call_id, "cid-9");
    assert_eq!(d.local_tag, "local1");
    assert_eq!(d.remote_tag, "remote1");
    assert_eq!(d.next_hop(), Some("10.0.0.2:5062".parse().unwrap()));
    let ack = text(
        &d.ack("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack;rport".into())
            .unwrap(),
    );
    // rsip re-serialises the Request-URI and upper-cases the transport parameter.
    assert!(
        ack.starts_with("ACK sip:gw@10.0.0.2:5062;transport=UDP SIP/2.0\r\n"),
        "{ack}"
    );
    assert!(ack.contains("CSeq: 7 ACK\r\n"), "{ack}");
    assert!(ack.contains("To: <sip:+15551234567@trunk.example>;tag=remote1\r\n"));
    assert!(ack.contains("From: <sip:alice@127.0.0.1>;tag=local1\r\n"));
}

#[test]
fn bye_increments_cseq_and_uses_reversed_record_route() {
    let mut d = Dialog::from_uac_2xx(
        &invite(),
        &ok("Record-Route: <sip:p2.example;lr>, <sip:10.0.0.7:5080;lr>\r\nContact: <sip:gw@10.0.0.2>\r\n"),
    )
    .unwrap();
    assert_eq!(d.next_hop(), Some("10.0.0.7:5080".parse().unwrap()));
    let bye = text(
        &d.request(Method::Bye, "SIP/2.0/UDP x;branch=z9hG4bKb".into(), vec![])
            .unwrap(),
    );
    assert!(bye.starts_with("BYE sip:gw@10.0.0.2 SIP/2.0\r\n"), "{bye}");
    assert!(bye.contains("CSeq: 8 BYE\r\n"), "{bye}");
    let r1 = bye.find("Route: <sip:10.0.0.7:5080;lr>").unwrap();
    let r2 = bye.find("Route: <sip:p2.example;lr>").unwrap();
    assert!(r1 < r2, "route set is the reversed Record-Route: {bye}");
    let again = text(
        &d.request(Method::Bye, "SIP/2.0/UDP x;branch=z9hG4bKc".into(), vec![])
            .unwrap(),
    );
    assert!(again.contains("CSeq: 9 BYE\r\n"));
}

#[test]
fn strict_route_goes_into_request_uri() {
    let mut d = Dialog::from_uac_2xx(
        &invite(),
        &ok("Record-Route: <sip:10.0.0.8:5060>\r\nContact: <sip:gw@10.0.0.2>\r\n"),
    )
    .unwrap();
    let bye = text(
        &d.request(Method::Bye, "SIP/2.0/UDP x;branch=z9hG4bKb".into(), vec![])
            .unwrap(),
    );
    assert!(
        bye.starts_with("BYE sip:10.0.0.8:5060 SIP/2.0\r\n"),
        "{bye}"
    );
    assert!(bye.contains("Route: <sip:gw@10.0.0.2>\r\n"), "{bye}");
}

#[test]
fn without_contact_the_request_uri_is_the_target() {
    let d = Dialog::from_uac_2xx(&invite(), &ok("")).unwrap();
    assert_eq!(
        d.next_hop(),
        None,
        "a host name needs the configured target"
    );
    let ack = text(&d.ack("SIP/2.0/UDP x;branch=z9hG4bKa".into()).unwrap());
    assert!(
        ack.starts_with("ACK sip:+15551234567@trunk.example SIP/2.0"),
        "{ack}"
    );
}

#[test]
fn matches_peer_requests_and_orders_cseq() {
    let mut d = Dialog::from_uac_2xx(&invite(), &ok("Contact: <sip:gw@10.0.0.2>\r\n")).unwrap();
    assert!(d.matches(&peer_request("BYE", 3, "local1")));
    assert!(!d.matches(&peer_request("BYE", 3, "other")));
    d.check_remote_cseq(&peer_request("INFO", 5, "local1"))
        .unwrap();
    assert_eq!(
        d.check_remote_cseq(&peer_request("BYE", 4, "local1")),
        Err(DialogError::CSeqOutOfOrder { got: 4, last: 5 })
    );
}

#[test]
fn uri_socket_addr_forms() {
    assert_eq!(
        uri_socket_addr("sip:1.2.3.4"),
        Some("1.2.3.4:5060".parse().unwrap())
    );
    assert_eq!(
        uri_socket_addr("sip:u@[::1]:5070;lr"),
        Some("[::1]:5070".parse().unwrap())
    );
    assert_eq!(uri_socket_addr("sip:u@host.example:5070"), None);
}

fn inbound_invite(extra: &str) -> Request {
    let raw = format!(
        "INVITE sip:+15550001111@gw.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKin1\r\nFrom: \"Bob\" <sip:+15552223333@trunk.example>;tag=peer7\r\nTo: <sip:+15550001111@gw.example>\r\nCall-ID: in-1\r\nCSeq: 42 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    match parse(raw.as_bytes()) {
        Ok(Incoming::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn uas_dialog_from_invite_routes_in_order_and_tags_to() {
    let invite = inbound_invite(
        "Contact: <sip:bob@10.0.0.9:5080>\r\nRecord-Route: <sip:p1.example;lr>, <sip:10.0.0.7;lr>\r\n",
    );
    let mut d = Dialog::from_uas_invite(&invite, "ours1").unwrap();
    assert_eq!(d.local_tag, "ours1");
    assert_eq!(d.remote_tag, "peer7");
    assert_eq!(d.next_hop(), None, "first route is a host name");
    let bye = text(
        &d.request(
            Method::Bye,
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb".into(),
            vec![],
        )
        .unwrap(),
    );
    assert!(
        bye.starts_with("BYE sip:bob@10.0.0.9:5080 SIP/2.0\r\n"),
        "{bye}"
    );
    assert!(bye.contains("CSeq: 1 BYE\r\n"), "{bye}");
    assert!(
        bye.contains("From: <sip:+15550001111@gw.example>;tag=ours1\r\n"),
        "{bye}"
    );
    assert!(bye.contains("To: \"Bob\" <sip:+15552223333@trunk.example>;tag=peer7\r\n"));
    let routes: Vec<&str> = bye.lines().filter(|l| l.starts_with("Route:")).collect();
    assert_eq!(
        routes,
        ["Route: <sip:p1.example;lr>", "Route: <sip:10.0.0.7;lr>"]
    );
    // The peer's requests carry our tag in To and theirs in From.
    let mut peer_bye = peer_request("BYE", 43, "ours1");
    peer_bye
        .headers
        .retain(|h| !matches!(h, Header::From(_) | Header::CallId(_)));
    peer_bye
        .headers
        .push(Header::From("<sip:b@h>;tag=peer7".into()));
    peer_bye.headers.push(Header::CallId("in-1".into()));
    assert!(d.matches(&peer_bye));
    assert!(d.check_remote_cseq(&peer_bye).is_ok());
    let old = peer_request("BYE", 41, "ours1");
    assert!(
        d.check_remote_cseq(&old).is_err(),
        "below the INVITE's CSeq"
    );
}

#[test]
fn uas_dialog_needs_a_contact() {
    assert_eq!(
        Dialog::from_uas_invite(&inbound_invite(""), "t"),
        Err(DialogError::Missing("Contact"))
    );
    let d =
        Dialog::from_uas_invite(&inbound_invite("Contact: <sip:bob@10.0.0.9>\r\n"), "t").unwrap();
    assert_eq!(d.next_hop(), Some("10.0.0.9:5060".parse().unwrap()));
}

#[test]
fn cseq_numbers_at_u32_max_are_checked_not_wrapped() {
    let mut d = Dialog::from_uac_2xx(&invite(), &ok("Contact: <sip:gw@10.0.0.2>\r\n")).unwrap();
    d.bump_local_cseq(u32::MAX - 1);
    let via = || "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx".to_string();
    let last = text(&d.request(Method::Bye, via(), Vec::new()).unwrap());
    assert!(last.contains("CSeq: 4294967295 BYE\r\n"), "{last}");
    assert_eq!(
        d.request(Method::Bye, via(), Vec::new()),
        Err(DialogError::CSeqExhausted)
    );
    assert_eq!(d.next_cseq(), None);
    assert_eq!(d.local_cseq(), u32::MAX, "not wrapped to 0");
    // The peer's numbers: u32::MAX is accepted and stays the floor.
    d.check_remote_cseq(&peer_request("INFO", u32::MAX, "local1"))
        .unwrap();
    d.check_remote_cseq(&peer_request("INFO", u32::MAX, "local1"))
        .unwrap();
    assert!(
        d.check_remote_cseq(&peer_request("INFO", 1, "local1"))
            .is_err()
    );
    // One past u32::MAX is no CSeq at all.
    let raw = "BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKp\r\nFrom: <sip:+15551234567@trunk.example>;tag=remote1\r\nTo: <sip:alice@127.0.0.1>;tag=local1\r\nCall-ID: cid-9\r\nCSeq: 4294967296 BYE\r\nContent-Length: 0\r\n\r\n";
    assert!(
        !matches!(parse(raw.as_bytes()), Ok(Incoming::Request(_))),
        "refused by the parser (answered 400)"
    );
}
