//! In-dialog requests are taken only from the dialog's peer (the trunk's addresses,
//! its `inbound_from` networks, the dialog's next hop and remote target), with fake
//! time: a stranger who knows the Call-ID and both tags gets 403 and changes nothing.

use super::inbound::{established, inbound_events, trunk_request};
use super::*;

/// An address that is none of the trunk's.
const STRANGER: &str = "10.6.6.6:5060";

#[test]
fn bye_from_a_stranger_is_refused_and_changes_nothing() {
    let (mut h, invite) = answered();
    h.take_sent(); // the ACK
    // A high CSeq: had it been recorded, the trunk's next request would get 500.
    h.sends_from(STRANGER, &in_dialog("BYE", &invite, "z9hG4bKevil", 50));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].starts_with("SIP/2.0 403 Forbidden\r\n"),
        "{}",
        sent[0]
    );
    assert!(h.take_events().is_empty(), "the call goes on");
    // Its retransmission is absorbed by the same transaction, still 403.
    h.sends_from(STRANGER, &in_dialog("BYE", &invite, "z9hG4bKevil", 50));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 403 "));
    // Half a minute on, the trunk's own BYE (lower CSeq) ends the call normally.
    h.advance(Duration::from_secs(30));
    h.take_sent();
    h.peer_sends(&in_dialog("BYE", &invite, "z9hG4bKbye", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert_eq!(h.take_events(), vec![SipCallEvent::RemoteHangup]);
}

#[test]
fn refer_reinvite_update_and_info_from_a_stranger_are_refused() {
    let mut request = InviteRequest {
        answerer: hold_answerer(),
        ..base_request()
    };
    request.trunk.refer = crate::sip::ReferPolicy::Dialplan;
    let (mut h, invite) = answered_with(request, "");
    let refer = in_dialog("REFER", &invite, "z9hG4bKr", 2).replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRefer-To: <sip:+15550000000@10.6.6.6>\r\n",
    );
    let hold = with_body(
        &in_dialog("INVITE", &invite, "z9hG4bKri", 3),
        "application/sdp",
        &sdp("sendonly"),
    );
    let update = with_body(
        &in_dialog("UPDATE", &invite, "z9hG4bKup", 4),
        "application/sdp",
        &sdp("sendonly"),
    );
    let info = in_dialog("INFO", &invite, "z9hG4bKinfo", 5);
    for request in [&refer, &hold, &update, &info] {
        h.sends_from(STRANGER, request);
        let sent = h.take_sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].starts_with("SIP/2.0 403 "), "{}", sent[0]);
    }
    assert!(
        h.take_events().is_empty(),
        "no transfer asked, no media change"
    );
    // The trunk's own re-INVITE is still answered.
    h.peer_sends(&hold.replace("z9hG4bKri", "z9hG4bKri2"));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::RemoteSdp {
            sdp: sdp("sendonly")
        }]
    );
}

#[test]
fn the_trunks_other_addresses_and_networks_are_the_peer() {
    let mut request = base_request();
    request.trunk.inbound_from = vec![crate::sip::parse_net("10.0.1.0/24").unwrap()];
    request.trunk_addresses = vec!["10.0.2.2:5060".parse().unwrap()];
    let (mut h, invite) = answered_with(request, "");
    // An SRV sibling of the trunk, on another port.
    h.sends_from("10.0.2.2:5070", &in_dialog("INFO", &invite, "z9hG4bKi1", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    // An address of its inbound_from network.
    h.sends_from("10.0.1.77:5060", &in_dialog("BYE", &invite, "z9hG4bKb", 3));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert_eq!(h.take_events(), vec![SipCallEvent::RemoteHangup]);
}

#[test]
fn the_dialogs_record_route_and_remote_target_are_the_peer() {
    let record_route = "Record-Route: <sip:10.0.3.3;lr>\r\n";
    let (mut h, invite) = answered_with(base_request(), record_route);
    h.sends_from("10.0.3.3:5060", &in_dialog("INFO", &invite, "z9hG4bKi1", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    // The remote target (Contact of the 2xx) is 10.0.0.2 here; a far end whose
    // Contact names another host is reached and heard there.
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(
        &invite,
        200,
        "OK",
        "Contact: <sip:far@10.0.4.4:5062>\r\n",
    ));
    h.take_events();
    h.take_sent();
    h.sends_from("10.0.4.4:5062", &in_dialog("BYE", &invite, "z9hG4bKb", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert_eq!(h.take_events(), vec![SipCallEvent::RemoteHangup]);
}

#[test]
fn an_ack_from_a_stranger_does_not_complete_an_offerless_reinvite() {
    let (mut h, invite) = answered_with(
        InviteRequest {
            answerer: hold_answerer(),
            ..base_request()
        },
        "",
    );
    // The trunk's offerless re-INVITE: our 200 carries the offer, the answer comes
    // in its ACK.
    h.peer_sends(&in_dialog("INVITE", &invite, "z9hG4bKri", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    let ack = |branch: &str| {
        with_body(
            &in_dialog("ACK", &invite, branch, 2),
            "application/sdp",
            &sdp("sendonly"),
        )
    };
    h.sends_from(STRANGER, &ack("z9hG4bKack-evil"));
    assert!(
        h.take_events().is_empty(),
        "a stranger's SDP is not applied"
    );
    h.peer_sends(&ack("z9hG4bKack"));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::RemoteSdp {
            sdp: sdp("sendonly")
        }]
    );
}

#[test]
fn a_tls_dialog_takes_requests_over_tls_only() {
    let mut request = base_request();
    request.trunk.transport = crate::sip::Transport::Tls;
    let mut h = Harness::new();
    h.call_with(request);
    let invite = h.take_sent().remove(0);
    let tls_peer = Peer {
        transport: crate::sip::Transport::Tls,
        addr: PEER.parse().unwrap(),
    };
    let ok = reply(&invite, 200, "OK", CONTACT);
    h.ua.handle_message(h.now, tls_peer, ok.as_bytes());
    h.drain();
    h.take_sent();
    h.take_events();
    // The trunk's IP, but over UDP (spoofable): refused.
    h.peer_sends(&in_dialog("BYE", &invite, "z9hG4bKb1", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 403 "));
    assert!(h.take_events().is_empty());
    let bye = in_dialog("BYE", &invite, "z9hG4bKb2", 3);
    h.ua.handle_message(h.now, tls_peer, bye.as_bytes());
    h.drain();
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert_eq!(h.take_events(), vec![SipCallEvent::RemoteHangup]);
}

#[test]
fn inbound_call_bye_from_a_stranger_is_refused() {
    let (mut h, _id, tag) = established();
    h.sends_from(STRANGER, &trunk_request("BYE", &tag, "z9hG4bKevil", 9));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 403 "));
    assert!(inbound_events(&mut h).is_empty(), "the call goes on");
    h.peer_sends(&trunk_request("BYE", &tag, "z9hG4bKbye", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::RemoteHangup]);
}

#[test]
fn refer_on_an_inbound_call_is_declined_with_603() {
    let (mut h, _id, tag) = established();
    let refer = trunk_request("REFER", &tag, "z9hG4bKr", 2).replace(
        "Content-Length: 0\r\n",
        "Refer-To: <sip:+15550000000@10.6.6.6>\r\nContent-Length: 0\r\n",
    );
    h.peer_sends(&refer);
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].starts_with("SIP/2.0 603 Decline\r\n"),
        "{}",
        sent[0]
    );
    assert!(inbound_events(&mut h).is_empty());
}
