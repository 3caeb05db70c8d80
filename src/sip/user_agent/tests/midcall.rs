//! Mid-call behaviour with fake time: the INVITE server transaction under a peer's
//! re-INVITE (Timer G resends the 2xx, the ACK stops it, Timer H ends the call),
//! glare, 422, challenges of in-dialog requests, reliable transports, PRACK, UPDATE in
//! an early dialog and a 2xx without SDP after an early answer.

use super::*;
use crate::sip::transport::Transport;
use crate::sip::{Credentials, RelPolicy, SessionTimerSettings};

fn hold_request() -> InviteRequest {
    InviteRequest {
        answerer: hold_answerer(),
        ..base_request()
    }
}

fn reinvite(invite: &str, branch: &str, seq: u32, direction: &str) -> String {
    with_body(
        &in_dialog("INVITE", invite, branch, seq),
        "application/sdp",
        &sdp(direction),
    )
}

#[test]
fn peer_reinvite_is_answered_and_the_2xx_resent_until_the_ack() {
    let (mut h, invite) = answered_with(hold_request(), "");
    h.peer_sends(&reinvite(&invite, "z9hG4bKre1", 2, "sendonly"));
    let ok = h.take_sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert!(ok.contains("a=recvonly"), "the answerer's SDP: {ok}");
    assert!(header(&ok, "Contact").contains("sip:alice@127.0.0.1:5070"));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::RemoteSdp {
            sdp: sdp("sendonly")
        }]
    );
    // Timer G: the 2xx again at T1 and 3*T1.
    h.advance(Duration::from_millis(1600));
    let again = h.take_sent();
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().all(|m| *m == ok));
    // A retransmitted re-INVITE gets the same 2xx, not a second answer.
    h.peer_sends(&reinvite(&invite, "z9hG4bKre1", 2, "sendonly"));
    assert_eq!(h.take_sent(), vec![ok]);
    assert!(h.take_events().is_empty());
    // The ACK (own branch) stops Timer G.
    h.peer_sends(&in_dialog("ACK", &invite, "z9hG4bKack1", 2));
    h.advance(Duration::from_secs(40));
    assert!(h.take_sent().is_empty());
    assert!(h.take_events().is_empty(), "the call goes on");
}

#[test]
fn no_ack_for_our_2xx_ends_the_call_at_timer_h() {
    let (mut h, invite) = answered_with(hold_request(), "");
    h.peer_sends(&reinvite(&invite, "z9hG4bKre1", 2, "sendonly"));
    h.take_events();
    h.advance(Duration::from_millis(31_900));
    assert!(h.take_events().is_empty());
    h.take_sent();
    h.advance(Duration::from_millis(200));
    let sent = h.take_sent();
    assert_eq!(starting(&sent, "BYE ").len(), 1, "{sent:?}");
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Failed {
            status: 408,
            reason: "no ACK for 2xx to re-INVITE".into()
        }]
    );
}

#[test]
fn offerless_reinvite_gets_our_sdp_and_the_answer_comes_in_the_ack() {
    let (mut h, invite) = answered_with(hold_request(), "");
    h.peer_sends(&in_dialog("INVITE", &invite, "z9hG4bKre2", 2));
    let ok = h.take_sent().remove(0);
    assert!(
        ok.ends_with("v=0\r\n"),
        "our current SDP is the offer: {ok}"
    );
    let ack = with_body(
        &in_dialog("ACK", &invite, "z9hG4bKack2", 2),
        "application/sdp",
        &sdp("inactive"),
    );
    h.peer_sends(&ack);
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::RemoteSdp {
            sdp: sdp("inactive")
        }]
    );
}

#[test]
fn refused_offer_gets_488_and_a_small_session_interval_422() {
    let (mut h, invite) = answered_with(hold_request(), "");
    h.peer_sends(&reinvite(&invite, "z9hG4bKre3", 2, "refuse"));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 488 "));
    h.peer_sends(&in_dialog("ACK", &invite, "z9hG4bKre3", 2));
    let small = reinvite(&invite, "z9hG4bKre4", 3, "sendrecv").replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nSession-Expires: 30\r\n",
    );
    h.peer_sends(&small);
    let answer = h.take_sent().remove(0);
    assert!(answer.starts_with("SIP/2.0 422 "), "{answer}");
    assert_eq!(header(&answer, "Min-SE"), "90");
    assert!(h.take_events().is_empty());
}

#[test]
fn our_reinvite_glare_491_is_retried_after_2_to_4_seconds() {
    let (mut h, _) = answered_with(hold_request(), "");
    h.ua.reinvite(h.now, "cid-1", sdp("sendonly"));
    h.drain();
    let first = h.take_sent().remove(0);
    assert!(
        first.starts_with("INVITE sip:gw@10.0.0.2:5060 SIP/2.0"),
        "{first}"
    );
    assert_eq!(header(&first, "CSeq"), "2 INVITE");
    h.peer_sends(&reply(&first, 491, "Request Pending", ""));
    assert!(starting(&h.take_sent(), "ACK ").len() == 1, "non-2xx ACKed");
    h.advance(Duration::from_millis(2050));
    assert!(
        starting(&h.take_sent(), "INVITE ").is_empty(),
        "not before 2.1 s"
    );
    h.advance(Duration::from_millis(2000));
    let retry = h.take_sent();
    let retry = starting(&retry, "INVITE ")[0].clone();
    assert_eq!(header(&retry, "CSeq"), "3 INVITE");
    h.peer_sends(&with_body(
        &reply(&retry, 200, "OK", CONTACT),
        "application/sdp",
        &sdp("recvonly"),
    ));
    let ack = h.take_sent().remove(0);
    assert!(
        ack.starts_with("ACK ") && header(&ack, "CSeq") == "3 ACK",
        "{ack}"
    );
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::ReinviteResult {
            ok: true,
            status: 200,
            sdp: Some(sdp("recvonly"))
        }]
    );
}

#[test]
fn peer_reinvite_during_ours_gets_491_and_ours_queue_behind_each_other() {
    let (mut h, invite) = answered_with(hold_request(), "");
    h.ua.reinvite(h.now, "cid-1", sdp("sendonly"));
    h.ua.reinvite(h.now, "cid-1", sdp("sendrecv"));
    h.drain();
    let sent = h.take_sent();
    assert_eq!(starting(&sent, "INVITE ").len(), 1, "one at a time");
    h.peer_sends(&reinvite(&invite, "z9hG4bKre5", 2, "sendonly"));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 491 "));
    h.peer_sends(&reply(&sent[0], 500, "Server Internal Error", ""));
    let next = h.take_sent();
    let next = starting(&next, "INVITE ");
    assert_eq!(next.len(), 1, "the queued re-INVITE goes next");
    assert!(next[0].contains("a=sendrecv"));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::ReinviteResult {
            ok: false,
            status: 500,
            sdp: None
        }]
    );
}

#[test]
fn a_422_resends_the_invite_with_the_peers_min_se() {
    let mut request = base_request();
    request.trunk.session_timer = SessionTimerSettings {
        session_expires: 90,
        min_se: 90,
    };
    let mut h = Harness::new();
    h.call_with(request);
    let invite = h.take_sent().remove(0);
    assert_eq!(header(&invite, "Session-Expires"), "90");
    assert_eq!(header(&invite, "Supported"), "timer");
    h.peer_sends(&reply(
        &invite,
        422,
        "Session Interval Too Small",
        "Min-SE: 300\r\n",
    ));
    let sent = h.take_sent();
    let resent = starting(&sent, "INVITE ")[0];
    assert_eq!(header(resent, "CSeq"), "2 INVITE");
    assert_eq!(header(resent, "Session-Expires"), "300");
    assert_eq!(header(resent, "Min-SE"), "300");
    assert!(h.take_events().is_empty());
}

#[test]
fn a_bye_challenged_by_a_proxy_is_resent_with_credentials() {
    let mut request = base_request();
    request.trunk.credentials = Some(Credentials {
        username: "alice".into(),
        password: "pw".into(),
    });
    let (mut h, _) = answered_with(request, "");
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    let bye = h.take_sent().remove(0);
    h.peer_sends(&reply(
        &bye,
        407,
        "Proxy Authentication Required",
        "Proxy-Authenticate: Digest realm=\"p\", nonce=\"n\", qop=\"auth\"\r\n",
    ));
    let again = h.take_sent().remove(0);
    assert!(again.starts_with("BYE "), "{again}");
    assert_eq!(header(&again, "CSeq"), "3 BYE");
    assert!(header(&again, "Proxy-Authorization").starts_with("Digest username=\"alice\""));
    assert!(h.take_events().is_empty());
    h.peer_sends(&reply(&again, 200, "OK", ""));
    assert_eq!(h.take_events(), vec![SipCallEvent::Terminated]);
}

#[test]
fn tcp_calls_are_not_retransmitted_and_go_on_the_trunk_connection() {
    let mut request = base_request();
    request.trunk.transport = Transport::Tcp;
    let mut h = Harness::new();
    h.call_with(request);
    h.advance(Duration::from_secs(10));
    assert_eq!(h.sent.len(), 1, "no Timer A on TCP");
    assert_eq!(h.sent[0].dest.transport, Transport::Tcp);
    let invite = h.take_sent().remove(0);
    assert!(header(&invite, "Via").starts_with("SIP/2.0/TCP 127.0.0.1:5070;"));
    assert_eq!(
        header(&invite, "Contact"),
        "<sip:alice@127.0.0.1:5070;transport=tcp>"
    );
    h.advance(Duration::from_secs(30));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Failed {
            status: 408,
            reason: "Request Timeout".into()
        }],
        "Timer B still runs on TCP"
    );
}

#[test]
fn an_rseq_at_u32_max_has_no_successor() {
    let mut request = base_request();
    request.trunk.reliable_provisional = RelPolicy::Required;
    let mut h = Harness::new();
    h.call_with(request);
    let invite = h.take_sent().remove(0);
    let p1 = reply(
        &invite,
        183,
        "Session Progress",
        "Require: 100rel\r\nRSeq: 4294967295\r\nContact: <sip:gw@10.0.0.2:5060>\r\n",
    );
    h.peer_sends(&p1);
    let prack = h.take_sent().remove(0);
    assert_eq!(header(&prack, "RAck"), "4294967295 1 INVITE");
    // Unchecked, `last + 1` panicked here in a debug build (and wrapped to 0 in
    // release, PRACKing an RSeq 0 as the successor).
    for next in ["0", "4294967295"] {
        h.peer_sends(&reply(
            &invite,
            180,
            "Ringing",
            &format!("Require: 100rel\r\nRSeq: {next}\r\n"),
        ));
        assert!(h.take_sent().is_empty(), "RSeq {next} is not PRACKed");
    }
    h.peer_sends(&reply(&invite, 200, "OK", CONTACT));
    assert!(
        h.take_events()
            .iter()
            .any(|e| matches!(e, SipCallEvent::Answered { .. })),
        "the call goes on"
    );
}

#[test]
fn reliable_provisionals_are_pracked_once_each_in_order() {
    let mut request = base_request();
    request.trunk.reliable_provisional = RelPolicy::Required;
    let mut h = Harness::new();
    h.call_with(request);
    let invite = h.take_sent().remove(0);
    assert_eq!(header(&invite, "Require"), "100rel");
    let p1 = reply(
        &invite,
        183,
        "Session Progress",
        "Require: 100rel\r\nRSeq: 7\r\nContact: <sip:gw@10.0.0.2:5060>\r\n",
    );
    h.peer_sends(&p1);
    let prack = h.take_sent().remove(0);
    assert!(
        prack.starts_with("PRACK sip:gw@10.0.0.2:5060 SIP/2.0"),
        "{prack}"
    );
    assert_eq!(header(&prack, "RAck"), "7 1 INVITE");
    assert_eq!(header(&prack, "CSeq"), "2 PRACK");
    h.peer_sends(&p1);
    assert!(
        h.take_sent().is_empty(),
        "a retransmission is not PRACKed again"
    );
    h.peer_sends(&reply(
        &invite,
        183,
        "Session Progress",
        "Require: 100rel\r\nRSeq: 9\r\n",
    ));
    assert!(h.take_sent().is_empty(), "out of order: ignored");
    h.peer_sends(&reply(
        &invite,
        180,
        "Ringing",
        "Require: 100rel\r\nRSeq: 8\r\n",
    ));
    let prack2 = h.take_sent().remove(0);
    assert_eq!(header(&prack2, "RAck"), "8 1 INVITE");
    assert_eq!(header(&prack2, "CSeq"), "3 PRACK");
    assert_eq!(
        h.take_events(),
        vec![
            SipCallEvent::Progress { sdp: None },
            SipCallEvent::Ringing { sdp: None }
        ]
    );
    h.peer_sends(&reply(&invite, 200, "OK", CONTACT));
    h.take_sent();
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    assert_eq!(
        header(&h.take_sent()[0], "CSeq"),
        "4 BYE",
        "CSeq continues after PRACKs"
    );
}

#[test]
fn session_refresh_by_reinvite_and_expiry_without_refresh() {
    let mut request = hold_request();
    request.trunk.session_timer = SessionTimerSettings {
        session_expires: 90,
        min_se: 90,
    };
    let (mut h, _) = answered_with(request, "Session-Expires: 90;refresher=uac\r\n");
    h.advance(Duration::from_millis(44_900));
    assert!(h.take_sent().is_empty());
    h.advance(Duration::from_millis(200));
    let sent = h.take_sent();
    let refresh = starting(&sent, "INVITE ")[0].clone();
    assert_eq!(header(&refresh, "Session-Expires"), "90;refresher=uac");
    assert!(refresh.ends_with("v=0\r\n"), "same SDP: {refresh}");
    // No answer to the refresh: the session expires at 90 - 30 = 60 s, before the
    // refresh's Timer B (45 + 32 s).
    h.advance(Duration::from_millis(14_800));
    assert!(h.take_events().is_empty());
    h.advance(Duration::from_millis(200));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Failed {
            status: 408,
            reason: "session timer expired".into()
        }]
    );
    assert_eq!(starting(&h.take_sent(), "BYE ").len(), 1);
}

/// A peer's request in the early dialog of `invite` (To tag ours, From tag peer1).
fn early_update(invite: &str, seq: u32, direction: Option<&str>) -> String {
    let update = in_dialog("UPDATE", invite, &format!("z9hG4bKeu{seq}"), seq);
    match direction {
        Some(d) => with_body(&update, "application/sdp", &sdp(d)),
        None => update,
    }
}

#[test]
fn early_update_needs_a_settled_offer_and_then_changes_the_session() {
    let mut h = Harness::new();
    h.call_with(hold_request());
    let invite = h.take_sent().remove(0);
    // An unreliable 183 opens the early dialog but settles nothing.
    h.peer_sends(&reply(&invite, 183, "Session Progress", CONTACT));
    h.peer_sends(&early_update(&invite, 1, Some("sendonly")));
    assert!(
        h.take_sent()[0].starts_with("SIP/2.0 491 "),
        "our offer is open"
    );
    h.peer_sends(&in_dialog("BYE", &invite, "z9hG4bKeb", 2));
    assert!(
        h.take_sent()[0].starts_with("SIP/2.0 481 "),
        "no BYE in early"
    );
    h.peer_sends(&early_update(&invite, 3, None));
    assert!(
        h.take_sent()[0].starts_with("SIP/2.0 200 "),
        "offerless UPDATE"
    );
    // The reliable 183 carries the answer: now an offer in UPDATE is answered.
    let reliable = reply(
        &invite,
        183,
        "Session Progress",
        &format!("Require: 100rel\r\nRSeq: 1\r\n{CONTACT}"),
    );
    h.peer_sends(&with_body(&reliable, "application/sdp", &sdp("sendrecv")));
    assert!(h.take_sent()[0].starts_with("PRACK "));
    h.peer_sends(&early_update(&invite, 4, Some("sendonly")));
    let ok = h.take_sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    assert!(ok.contains("a=recvonly"), "the answerer's SDP: {ok}");
    assert_eq!(
        h.take_events(),
        vec![
            SipCallEvent::Progress { sdp: None },
            SipCallEvent::Progress {
                sdp: Some(sdp("sendrecv"))
            },
            SipCallEvent::RemoteSdp {
                sdp: sdp("sendonly")
            },
        ]
    );
    // The 2xx repeats the 183's answer: the UPDATE's session stands.
    let ok = reply(&invite, 200, "OK", CONTACT);
    h.peer_sends(&with_body(&ok, "application/sdp", &sdp("sendrecv")));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Answered {
            sdp: sdp("sendonly")
        }]
    );
}

#[test]
fn a_2xx_without_sdp_takes_the_early_answer() {
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    let early = reply(&invite, 183, "Session Progress", CONTACT);
    h.peer_sends(&with_body(&early, "application/sdp", &sdp("sendrecv")));
    h.peer_sends(&reply(&invite, 200, "OK", CONTACT));
    assert_eq!(
        h.take_events().last(),
        Some(&SipCallEvent::Answered {
            sdp: sdp("sendrecv")
        })
    );
}
