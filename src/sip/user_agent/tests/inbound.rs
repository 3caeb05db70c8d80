//! Inbound calls (we are the UAS) with fake time: admission, ringing, answer and
//! ACK, CANCEL, reject/redirect, hangups, Timer H, digest challenges.

use super::*;
use crate::sip::auth::{Credentials, DigestInput, answer_header, parse_challenge};

/// The trunk's SDP offer.
pub(super) const OFFER: &str = "v=0\r\nm=audio 4000 RTP/AVP 0\r\n";

/// An inbound INVITE from the trunk at PEER.
pub(super) fn inbound_invite(branch: &str, extra: &str) -> String {
    format!(
        "INVITE sip:+15550001111@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch={branch};rport\r\nFrom: \"Bob\" <sip:+15552223333@trunk.example>;tag=peer1\r\nTo: <sip:+15550001111@gw.example>\r\nCall-ID: in-1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@10.0.0.2:5060>\r\nMax-Forwards: 70\r\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// A harness taking inbound calls from a trunk at PEER.
pub(super) fn inbound_harness(settings: TrunkSettings) -> Harness {
    let mut h = Harness::new();
    h.ua.set_accept_inbound(true);
    h.ua.set_inbound_trunk(settings, vec![PEER.parse().unwrap()]);
    h
}

fn carrier() -> TrunkSettings {
    TrunkSettings {
        name: "carrier".into(),
        host: "10.0.0.2".into(),
        dtmf_mode: crate::sip::DtmfMode::Info,
        ..TrunkSettings::default()
    }
}

/// A ringing inbound call (INVITE with OFFER admitted); returns its handle id.
fn ringing(h: &mut Harness) -> String {
    h.peer_sends(&with_body(
        &inbound_invite("z9hG4bKi1", ""),
        "application/sdp",
        OFFER,
    ));
    assert_eq!(h.incoming.len(), 1, "{:?}", h.take_sent());
    h.incoming[0].id.clone()
}

pub(super) fn inbound_events(h: &mut Harness) -> Vec<InboundSipEvent> {
    h.inbound_events.drain(..).map(|(_, e)| e).collect()
}

fn answerer() -> crate::sip::SdpAnswerer {
    hold_answerer()
}

/// Our To tag in a response.
fn tag_of(response: &str) -> String {
    header(response, "To")
        .split("tag=")
        .nth(1)
        .unwrap()
        .to_string()
}

/// The trunk's ACK for our 2xx.
fn ack(tag: &str, body: Option<&str>) -> String {
    let ack = format!(
        "ACK sip:+15550001111@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKa1;rport\r\nFrom: <sip:+15552223333@trunk.example>;tag=peer1\r\nTo: <sip:+15550001111@gw.example>;tag={tag}\r\nCall-ID: in-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    match body {
        Some(b) => with_body(&ack, "application/sdp", b),
        None => ack,
    }
}

/// A request of the trunk in the inbound dialog.
pub(super) fn trunk_request(method: &str, tag: &str, branch: &str, seq: u32) -> String {
    format!(
        "{method} sip:+15550001111@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch={branch};rport\r\nFrom: <sip:+15552223333@trunk.example>;tag=peer1\r\nTo: <sip:+15550001111@gw.example>;tag={tag}\r\nCall-ID: in-1\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An answered and ACKed inbound call: (harness, handle id, our tag).
pub(super) fn established() -> (Harness, String, String) {
    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Answer(sdp("sendrecv"), answerer()),
    );
    h.drain();
    let ok = h.take_sent().remove(0);
    let tag = tag_of(&ok);
    h.peer_sends(&ack(&tag, None));
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::Acked]);
    (h, id, tag)
}

#[test]
fn nobody_taking_calls_gets_480_and_strangers_403_statelessly() {
    let mut h = Harness::new();
    h.peer_sends(&inbound_invite("z9hG4bKi1", ""));
    let sent = h.take_sent();
    assert!(
        sent[0].starts_with("SIP/2.0 480 Temporarily Unavailable\r\n"),
        "{}",
        sent[0]
    );
    assert_eq!(h.ua.server_count(), 0);
    h.ua.set_accept_inbound(true);
    h.peer_sends(&inbound_invite("z9hG4bKi2", ""));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 403 Forbidden\r\n"));
    assert_eq!(h.ua.server_count(), 0, "no state for strangers");
    // A trunk listing networks admits its own (other port too) and only those.
    let nets = TrunkSettings {
        inbound_from: vec![crate::sip::parse_net("10.0.0.0/30").unwrap()],
        ..carrier()
    };
    h.ua.set_inbound_trunk(nets, Vec::new());
    h.peer_sends(&inbound_invite("z9hG4bKi3", ""));
    assert_eq!(h.incoming.len(), 1);
    assert!(h.incoming.iter().all(|i| i.trunk == "carrier"));
}

#[test]
fn admitted_invite_is_reported_with_its_parties_and_gets_100() {
    let mut h = inbound_harness(carrier());
    h.peer_sends(&with_body(
        &inbound_invite(
            "z9hG4bKi1",
            "X-Correlation-ID: corr-in\r\nP-Asserted-Identity: <sip:+15559998888@trunk.example>\r\n",
        ),
        "application/sdp",
        OFFER,
    ));
    let info = h.incoming[0].clone();
    assert_eq!(info.from_user, "+15552223333");
    assert_eq!(info.from_display.as_deref(), Some("Bob"));
    assert_eq!(info.asserted_user.as_deref(), Some("+15559998888"));
    assert_eq!(info.to_user, "+15550001111");
    assert_eq!(info.sip_call_id, "in-1");
    assert_eq!(info.correlation_id, "corr-in");
    assert_eq!(info.sdp.as_deref(), Some(OFFER));
    assert_eq!(info.source, PEER.parse::<std::net::SocketAddr>().unwrap());
    assert!(
        h.take_sent().is_empty(),
        "100 only if we stay silent 200 ms"
    );
    h.advance(Duration::from_millis(200));
    let sent = h.take_sent();
    assert!(sent[0].starts_with("SIP/2.0 100 Trying\r\n"), "{}", sent[0]);
    h.peer_sends(&with_body(
        &inbound_invite("z9hG4bKi1", ""),
        "application/sdp",
        OFFER,
    ));
    assert_eq!(h.incoming.len(), 1, "a retransmission is no new call");
    assert!(h.take_sent()[0].starts_with("SIP/2.0 100 Trying\r\n"));
}

#[test]
fn ringing_answer_ack_then_remote_bye() {
    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(h.now, &id, InboundAction::Ringing);
    h.drain();
    let ring = h.take_sent().remove(0);
    assert!(ring.starts_with("SIP/2.0 180 Ringing\r\n"), "{ring}");
    assert_eq!(
        header(&ring, "Contact"),
        "<sip:+15550001111@127.0.0.1:5070>"
    );
    let tag = tag_of(&ring);
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Answer(sdp("sendrecv"), answerer()),
    );
    h.drain();
    let ok = h.take_sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert_eq!(tag_of(&ok), tag, "same To tag as the 180");
    assert!(ok.ends_with(&sdp("sendrecv")));
    assert_eq!(
        header(&ok, "Via"),
        "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKi1;received=10.0.0.2;rport=5060"
    );
    // Timer G resends the 200 until the ACK.
    h.advance(Duration::from_millis(500));
    assert_eq!(h.take_sent(), vec![ok.clone()]);
    h.peer_sends(&ack(&tag, None));
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::Acked]);
    h.advance(Duration::from_secs(2));
    assert!(h.take_sent().is_empty(), "ACKed: no more resends");
    h.peer_sends(&trunk_request("BYE", &tag, "z9hG4bKb1", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK\r\n"));
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::RemoteHangup]);
    h.advance(Duration::from_secs(40));
    assert_eq!(h.ua.call_count(), 0);
    assert!(h.inbound_events.iter().all(|(i, _)| *i == id));
}

#[test]
fn our_hangup_sends_bye_to_the_contact() {
    let (mut h, id, tag) = established();
    h.ua.hangup(h.now, &id);
    h.drain();
    let sent = h.take_sent();
    let bye = &sent[0];
    assert!(
        bye.starts_with("BYE sip:bob@10.0.0.2:5060 SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(
        header(bye, "From"),
        format!("<sip:+15550001111@gw.example>;tag={tag}")
    );
    assert_eq!(
        header(bye, "To"),
        "\"Bob\" <sip:+15552223333@trunk.example>;tag=peer1"
    );
    assert_eq!(header(bye, "CSeq"), "1 BYE");
    h.peer_sends(&reply(bye, 200, "OK", ""));
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::Terminated]);
}

#[test]
fn hangup_before_the_ack_waits_for_it() {
    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Answer(sdp("sendrecv"), answerer()),
    );
    h.drain();
    let tag = tag_of(&h.take_sent().remove(0));
    h.ua.hangup(h.now, &id);
    h.drain();
    assert!(h.take_sent().is_empty(), "no BYE before the ACK");
    h.peer_sends(&ack(&tag, None));
    let sent = h.take_sent();
    assert!(sent[0].starts_with("BYE "), "{sent:?}");
    h.peer_sends(&reply(&sent[0], 200, "OK", ""));
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::Terminated]);
}

#[test]
fn no_ack_within_64_t1_sends_bye_and_fails() {
    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Answer(sdp("sendrecv"), answerer()),
    );
    h.drain();
    h.take_sent();
    h.advance(Duration::from_secs(33));
    let sent = h.take_sent();
    assert!(
        starting(&sent, "SIP/2.0 200 OK").len() >= 6,
        "Timer G resends"
    );
    assert!(!starting(&sent, "BYE ").is_empty(), "{sent:?}");
    assert!(matches!(
        inbound_events(&mut h).as_slice(),
        [InboundSipEvent::Failed { status: 408, .. }]
    ));
}

#[test]
fn cancel_while_ringing_answers_200_then_487() {
    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(h.now, &id, InboundAction::Ringing);
    h.drain();
    let tag = tag_of(&h.take_sent().remove(0));
    let cancel = inbound_invite("z9hG4bKi1", "")
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    h.peer_sends(&cancel);
    let sent = h.take_sent();
    assert!(sent[0].starts_with("SIP/2.0 200 OK\r\n") && sent[0].contains("CSeq: 1 CANCEL"));
    assert!(
        sent[1].starts_with("SIP/2.0 487 Request Terminated\r\n"),
        "{}",
        sent[1]
    );
    assert_eq!(tag_of(&sent[1]), tag);
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::Cancelled]);
    // Answering afterwards does nothing; the 487 is resent until its ACK.
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Answer(sdp("sendrecv"), answerer()),
    );
    h.drain();
    assert!(h.take_sent().is_empty());
    h.advance(Duration::from_millis(500));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 487 "));
    let ack487 = inbound_invite("z9hG4bKi1", "")
        .replacen("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            "To: <sip:+15550001111@gw.example>",
            &format!("To: <sip:+15550001111@gw.example>;tag={tag}"),
        );
    h.peer_sends(&ack487);
    h.advance(Duration::from_secs(40));
    assert!(h.take_sent().is_empty());
    assert_eq!(h.ua.server_count(), 0);
    assert_eq!(h.ua.call_count(), 0);
}

#[test]
fn reject_and_redirect_are_final_and_terminate() {
    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(h.now, &id, InboundAction::Reject(603, String::new()));
    h.drain();
    assert!(h.take_sent()[0].starts_with("SIP/2.0 603 Decline\r\n"));
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::Terminated]);

    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Reject(486, "Busy Elsewhere".into()),
    );
    h.drain();
    assert!(h.take_sent()[0].starts_with("SIP/2.0 486 Busy Elsewhere\r\n"));

    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Redirect("sip:+15550001111@10.0.0.9:5080".into()),
    );
    h.drain();
    let sent = h.take_sent();
    assert!(
        sent[0].starts_with("SIP/2.0 302 Moved Temporarily\r\n"),
        "{}",
        sent[0]
    );
    assert_eq!(
        header(&sent[0], "Contact"),
        "<sip:+15550001111@10.0.0.9:5080>"
    );
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::Terminated]);

    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.hangup(h.now, &id);
    h.drain();
    assert!(h.take_sent()[0].starts_with("SIP/2.0 480 "));
    assert_eq!(inbound_events(&mut h), vec![InboundSipEvent::Terminated]);
}

#[test]
fn unanswered_calls_end_after_max_ringing() {
    let mut h = inbound_harness(carrier());
    ringing(&mut h);
    h.advance(super::super::uas_call::MAX_RINGING);
    let sent = h.take_sent();
    assert!(starting(&sent, "SIP/2.0 480 ").len() == 1, "{sent:?}");
    assert!(matches!(
        inbound_events(&mut h).as_slice(),
        [InboundSipEvent::Failed { status: 480, .. }]
    ));
}

#[test]
fn late_offer_answer_comes_in_the_ack() {
    let mut h = inbound_harness(carrier());
    h.peer_sends(&inbound_invite("z9hG4bKi1", ""));
    let id = h.incoming[0].id.clone();
    assert_eq!(h.incoming[0].sdp, None);
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Answer(sdp("sendrecv"), answerer()),
    );
    h.drain();
    let tag = tag_of(&h.take_sent().remove(0));
    h.peer_sends(&ack(&tag, Some(OFFER)));
    assert_eq!(
        inbound_events(&mut h),
        vec![
            InboundSipEvent::RemoteSdp { sdp: OFFER.into() },
            InboundSipEvent::Acked
        ]
    );
}

#[test]
fn reinvite_from_the_trunk_is_answered_and_ours_waits_for_the_ack() {
    let mut h = inbound_harness(carrier());
    let id = ringing(&mut h);
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Answer(sdp("sendrecv"), answerer()),
    );
    h.drain();
    let tag = tag_of(&h.take_sent().remove(0));
    h.ua.reinvite(h.now, &id, sdp("sendonly"));
    h.drain();
    assert!(h.take_sent().is_empty(), "our re-INVITE waits for the ACK");
    h.peer_sends(&ack(&tag, None));
    let sent = h.take_sent();
    assert!(
        sent[0].starts_with("INVITE sip:bob@10.0.0.2:5060 SIP/2.0\r\n"),
        "{sent:?}"
    );
    h.peer_sends(&reply(&sent[0], 200, "OK", CONTACT));
    let events = inbound_events(&mut h);
    assert_eq!(events[0], InboundSipEvent::Acked);
    assert!(matches!(
        events[1],
        InboundSipEvent::ReinviteResult {
            ok: true,
            status: 200,
            ..
        }
    ));
    h.take_sent();
    let hold = with_body(
        &trunk_request("INVITE", &tag, "z9hG4bKr2", 2),
        "application/sdp",
        &sdp("sendonly"),
    );
    h.peer_sends(&hold);
    let sent = h.take_sent();
    assert!(
        sent[0].starts_with("SIP/2.0 200 OK\r\n") && sent[0].ends_with(&sdp("recvonly")),
        "{sent:?}"
    );
    assert_eq!(
        inbound_events(&mut h),
        vec![InboundSipEvent::RemoteSdp {
            sdp: sdp("sendonly")
        }]
    );
    h.ua.send_dtmf_info(h.now, &id, '5', 100);
    h.drain();
    assert!(h.take_sent().iter().any(|m| m.starts_with("INFO ")));
}

#[test]
fn refusals_extensions_session_interval_and_call_id_reuse() {
    let mut h = inbound_harness(carrier());
    h.peer_sends(&inbound_invite("z9hG4bKi5", "Require: 100rel\r\n"));
    let sent = h.take_sent();
    assert!(
        sent[0].starts_with("SIP/2.0 420 Bad Extension\r\n"),
        "{}",
        sent[0]
    );
    assert_eq!(header(&sent[0], "Unsupported"), "100rel");
    h.peer_sends(&inbound_invite("z9hG4bKi6", "Session-Expires: 30\r\n"));
    let sent = h.take_sent();
    assert!(sent[0].starts_with("SIP/2.0 422 "), "{}", sent[0]);
    assert_eq!(header(&sent[0], "Min-SE"), "90");
    h.peer_sends(
        &inbound_invite("z9hG4bKi7", "").replace("Contact: <sip:bob@10.0.0.2:5060>\r\n", ""),
    );
    assert!(h.take_sent()[0].starts_with("SIP/2.0 400 "));
    assert!(h.incoming.is_empty());
    ringing(&mut h);
    h.peer_sends(&inbound_invite("z9hG4bKi9", ""));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 482 Loop Detected\r\n"));
    assert_eq!(h.incoming.len(), 1);
}

#[test]
fn session_timer_of_the_invite_is_honoured_in_the_200() {
    let mut h = inbound_harness(carrier());
    h.peer_sends(&inbound_invite(
        "z9hG4bKi1",
        "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
    ));
    let id = h.incoming[0].id.clone();
    h.ua.respond(
        h.now,
        &id,
        InboundAction::Answer(sdp("sendrecv"), answerer()),
    );
    h.drain();
    let ok = h.take_sent().remove(0);
    assert_eq!(header(&ok, "Session-Expires"), "120;refresher=uac");
    assert_eq!(header(&ok, "Require"), "timer");
    let tag = tag_of(&ok);
    h.peer_sends(&ack(&tag, None));
    inbound_events(&mut h);
    // The trunk refreshes; without a refresh the session expires (BYE, Failed 408).
    h.advance(Duration::from_secs(87));
    assert!(h.take_sent().is_empty(), "expires at 120 - 32 s");
    h.advance(Duration::from_secs(1));
    let sent = h.take_sent();
    assert_eq!(starting(&sent, "BYE ").len(), 1, "{sent:?}");
    assert!(matches!(
        inbound_events(&mut h).as_slice(),
        [InboundSipEvent::Failed { status: 408, .. }]
    ));
}

/// The INVITE answering a 407 `challenge` with `password`.
fn authorized_invite(challenge_response: &str, password: &str) -> String {
    let value = header(challenge_response, "Proxy-Authenticate");
    let challenge = parse_challenge(value, true).unwrap();
    let creds = Credentials {
        username: "acct".into(),
        password: password.into(),
    };
    let input = DigestInput {
        method: "INVITE",
        uri: "sip:+15550001111@127.0.0.1:5070",
        body: b"",
        cnonce: "c1",
        nc: 1,
    };
    let auth = answer_header(&challenge, &creds, input);
    inbound_invite("z9hG4bKi2", &format!("{auth}\r\n")).replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
}

#[test]
fn inbound_auth_challenges_then_admits_the_right_answer() {
    let mut h = inbound_harness(TrunkSettings {
        inbound_auth: true,
        credentials: Some(Credentials {
            username: "acct".into(),
            password: "pw".into(),
        }),
        ..carrier()
    });
    h.peer_sends(&inbound_invite("z9hG4bKi1", ""));
    let challenge = h.take_sent().remove(0);
    assert!(challenge.starts_with("SIP/2.0 407 "), "{challenge}");
    assert!(header(&challenge, "Proxy-Authenticate").contains("realm=\"callbridge\""));
    assert!(h.incoming.is_empty());
    h.peer_sends(&authorized_invite(&challenge, "wrong"));
    let again = h.take_sent().remove(0);
    assert!(
        again.starts_with("SIP/2.0 407 "),
        "wrong password: challenged again"
    );
    h.peer_sends(&authorized_invite(&challenge, "pw").replace("z9hG4bKi2", "z9hG4bKi3"));
    assert_eq!(h.incoming.len(), 1, "{:?}", h.take_sent());
}

#[test]
fn the_trunk_at_the_exact_address_wins_over_a_network() {
    let mut h = Harness::new();
    h.ua.set_accept_inbound(true);
    let wide = TrunkSettings {
        name: "wide".into(),
        inbound_from: vec![crate::sip::parse_net("10.0.0.0/8").unwrap()],
        ..carrier()
    };
    h.ua.set_inbound_trunk(wide, Vec::new());
    h.ua.set_inbound_trunk(carrier(), vec![PEER.parse().unwrap()]);
    h.peer_sends(&inbound_invite("z9hG4bKi1", ""));
    assert_eq!(h.incoming[0].trunk, "carrier");
    // Replacing a trunk's rule by name: the carrier now only admits another network.
    let moved = TrunkSettings {
        inbound_from: vec![crate::sip::parse_net("192.0.2.0/24").unwrap()],
        ..carrier()
    };
    h.ua.set_inbound_trunk(moved, vec![PEER.parse().unwrap()]);
    h.peer_sends(&inbound_invite("z9hG4bKi2", "").replace("in-1", "in-2"));
    assert_eq!(h.incoming[1].trunk, "wide");
}
