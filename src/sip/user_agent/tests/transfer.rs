//! REFER from the far end, with fake time: declined by default (603); on a trunk
//! with `refer = "dialplan"` accepted, handed to the call module, and carried out
//! through the trunk it chooses, never towards the Refer-To host.

use super::*;
use crate::sip::ReferPolicy;

/// The Refer-To host: an outside address that must never be called.
const OUTSIDE: &str = "10.0.0.9:5080";
/// The Refer-To URI (user part percent-encoded, as phones do for `+`).
const REFER_TO: &str = "sip:%2B15557654321@10.0.0.9:5080";
/// The trunk the call module routes the number to.
const CAROL_TRUNK: &str = "10.0.0.7:5060";

fn refer(invite: &str, seq: u32) -> String {
    in_dialog("REFER", invite, &format!("z9hG4bKrefer{seq}"), seq).replace(
        "Max-Forwards: 70\r\n",
        &format!(
            "Max-Forwards: 70\r\nRefer-To: <{REFER_TO}>\r\nReferred-By: <sip:bob@trunk.example>\r\n"
        ),
    )
}

/// A call on a trunk whose `refer` is `policy`, answered.
fn answered_on(policy: ReferPolicy) -> (Harness, String) {
    let mut request = InviteRequest {
        answerer: hold_answerer(),
        ..base_request()
    };
    request.trunk.refer = policy;
    answered_with(request, "")
}

/// What the call module sends for an allowed transfer: the dialed number through
/// trunk "carol" (with its own credentials).
fn carol_request() -> InviteRequest {
    let mut request = base_request();
    request.target = CAROL_TRUNK.parse().unwrap();
    request.target_host = "carol.example".into();
    request.to_user = "+15557654321".into();
    request.trunk.name = "carol".into();
    request.trunk.credentials = Some(crate::sip::Credentials {
        username: "carol-acct".into(),
        password: "pw".into(),
    });
    request.answerer = hold_answerer();
    request
}

/// Answered on a dialplan trunk, then REFERred: the 202 and NOTIFY 100 sent.
fn referred() -> (Harness, String, Vec<String>) {
    let (mut h, invite) = answered_on(ReferPolicy::Dialplan);
    h.peer_sends(&refer(&invite, 2));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::TransferRequested {
            target: REFER_TO.into(),
            user: Some("+15557654321".into()),
        }]
    );
    let sent = h.take_sent();
    (h, invite, sent)
}

/// `referred`, then the call module allows it: the INVITE to carol's trunk.
fn transferring() -> (Harness, String, String) {
    let (mut h, invite, _) = referred();
    let local = Peer::udp(LOCAL.parse().unwrap());
    let target = Peer::udp(CAROL_TRUNK.parse().unwrap());
    h.ua.transfer(h.now, "cid-1", carol_request(), local, target)
        .unwrap();
    h.drain();
    assert_eq!(h.sent.len(), 1, "one INVITE");
    assert_eq!(
        h.sent[0].dest, target,
        "the INVITE goes to the route's trunk"
    );
    let new_invite = h.take_sent().remove(0);
    (h, invite, new_invite)
}

#[test]
fn refer_is_declined_with_603_by_default_and_the_call_goes_on() {
    let (mut h, invite) = answered_on(ReferPolicy::Reject);
    h.peer_sends(&refer(&invite, 2));
    let sent = h.take_sent();
    assert_eq!(
        sent.len(),
        1,
        "only the answer: no NOTIFY, no INVITE: {sent:?}"
    );
    assert!(
        sent[0].starts_with("SIP/2.0 603 Decline\r\n"),
        "{}",
        sent[0]
    );
    assert!(
        header(&sent[0], "Warning").contains("not allowed"),
        "{}",
        sent[0]
    );
    assert!(h.take_events().is_empty(), "the call module hears nothing");
    // The dialog is intact: the transferor's BYE still ends the call.
    h.peer_sends(&in_dialog("BYE", &invite, "z9hG4bKbye", 3));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert_eq!(h.take_events(), vec![SipCallEvent::RemoteHangup]);
}

#[test]
fn refer_with_no_or_two_refer_to_is_400() {
    let (mut h, invite) = answered_on(ReferPolicy::Dialplan);
    let none = in_dialog("REFER", &invite, "z9hG4bKr1", 2);
    h.peer_sends(&none);
    assert!(h.take_sent()[0].starts_with("SIP/2.0 400 "));
    let two = refer(&invite, 3).replace(
        "Referred-By:",
        "Refer-To: <sip:+15550000000@10.0.0.9>\r\nReferred-By:",
    );
    h.peer_sends(&two);
    assert!(h.take_sent()[0].starts_with("SIP/2.0 400 "));
    assert!(h.take_events().is_empty());
}

#[test]
fn refer_on_a_dialplan_trunk_is_accepted_and_waits_for_the_call_module() {
    let (h, _, sent) = referred();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].starts_with("SIP/2.0 202 Accepted\r\n"), "{sent:?}");
    let notify = &sent[1];
    assert!(
        notify.starts_with("NOTIFY sip:gw@10.0.0.2:5060 SIP/2.0"),
        "{notify}"
    );
    assert_eq!(header(notify, "Event"), "refer;id=2");
    assert_eq!(header(notify, "Subscription-State"), "active;expires=60");
    assert_eq!(
        header(notify, "Content-Type"),
        "message/sipfrag;version=2.0"
    );
    assert!(notify.ends_with("\r\n\r\nSIP/2.0 100 Trying\r\n"));
    let outside: std::net::SocketAddr = OUTSIDE.parse().unwrap();
    assert!(h.sent.iter().all(|t| t.dest.addr != outside));
}

#[test]
fn allowed_transfer_calls_the_chosen_trunk_never_the_refer_to_host() {
    let (_, _, invite) = transferring();
    assert!(
        invite.starts_with("INVITE sip:+15557654321@carol.example SIP/2.0"),
        "{invite}"
    );
    assert!(!invite.contains("10.0.0.9"), "{invite}");
    assert_eq!(header(&invite, "Referred-By"), "<sip:bob@trunk.example>");
    assert_ne!(header(&invite, "Call-ID"), "cid-1", "a new dialog");
    assert!(invite.ends_with("v=0\r\n"), "our same SDP");
}

#[test]
fn transfer_leg_answers_challenges_with_its_own_trunks_credentials() {
    let (mut h, _, invite) = transferring();
    h.sends_from(
        CAROL_TRUNK,
        &reply(
            &invite,
            401,
            "Unauthorized",
            "WWW-Authenticate: Digest realm=\"carol\", nonce=\"n1\"\r\n",
        ),
    );
    let sent = h.take_sent();
    let retried = starting(&sent, "INVITE ")[0];
    assert!(
        header(retried, "Authorization").contains("username=\"carol-acct\""),
        "{retried}"
    );
}

#[test]
fn successful_transfer_replaces_the_dialog_and_byes_the_old_one_later() {
    let (mut h, _, new_invite) = transferring();
    h.sends_from(
        CAROL_TRUNK,
        &with_body(
            &reply(
                &new_invite,
                200,
                "OK",
                "Contact: <sip:carol@10.0.0.7:5060>\r\n",
            ),
            "application/sdp",
            &sdp("sendrecv"),
        ),
    );
    let sent = h.take_sent();
    assert!(
        sent[0].starts_with("ACK sip:carol@10.0.0.7:5060"),
        "{sent:?}"
    );
    let notify = starting(&sent, "NOTIFY ")[0];
    assert_eq!(
        header(notify, "Subscription-State"),
        "terminated;reason=noresource"
    );
    assert!(notify.ends_with("SIP/2.0 200 OK\r\n"));
    assert_eq!(
        h.take_events(),
        vec![
            SipCallEvent::Transferred {
                target: REFER_TO.into()
            },
            SipCallEvent::RemoteSdp {
                sdp: sdp("sendrecv")
            }
        ]
    );
    // The transferor does not hang up: we BYE its dialog after the grace period.
    h.advance(Duration::from_millis(3900));
    assert!(starting(&h.take_sent(), "BYE ").is_empty());
    h.advance(Duration::from_millis(200));
    let bye = h.take_sent();
    let bye = starting(&bye, "BYE ")[0].clone();
    assert_eq!(header(&bye, "Call-ID"), "cid-1");
    h.peer_sends(&reply(&bye, 200, "OK", ""));
    assert!(h.take_events().is_empty(), "the old dialog ends silently");
    // Our hangup now goes to the transfer target.
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    let bye = h.take_sent().remove(0);
    assert!(bye.starts_with("BYE sip:carol@10.0.0.7:5060"), "{bye}");
    h.sends_from(CAROL_TRUNK, &reply(&bye, 200, "OK", ""));
    assert_eq!(h.take_events(), vec![SipCallEvent::Terminated]);
}

#[test]
fn refused_transfer_is_notified_and_the_call_goes_on() {
    let (mut h, _, _) = referred();
    h.ua.refuse_transfer(h.now, "cid-1", 403);
    h.drain();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1, "the final NOTIFY only: {sent:?}");
    assert_eq!(
        header(&sent[0], "Subscription-State"),
        "terminated;reason=noresource"
    );
    assert!(
        sent[0].ends_with("SIP/2.0 403 Forbidden\r\n"),
        "{}",
        sent[0]
    );
    assert!(h.take_events().is_empty(), "the call is still up");
    // A late decision changes nothing.
    let local = Peer::udp(LOCAL.parse().unwrap());
    let target = Peer::udp(CAROL_TRUNK.parse().unwrap());
    h.ua.transfer(h.now, "cid-1", carol_request(), local, target)
        .unwrap();
    h.drain();
    assert!(h.take_sent().is_empty());
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    let bye = h.take_sent().remove(0);
    assert!(bye.starts_with("BYE sip:gw@10.0.0.2:5060"), "{bye}");
}

#[test]
fn undecided_transfer_fails_with_408_after_64_t1() {
    let (mut h, _, _) = referred();
    // (The NOTIFY 100 is retransmitted meanwhile: the transferor never answers it.)
    let timeout = |sent: &[String]| {
        sent.iter()
            .filter(|m| m.starts_with("NOTIFY ") && m.ends_with("SIP/2.0 408 Request Timeout\r\n"))
            .count()
    };
    h.advance(Duration::from_millis(31_900));
    assert_eq!(timeout(&h.take_sent()), 0);
    h.advance(Duration::from_millis(200));
    assert_eq!(timeout(&h.take_sent()), 1);
    assert!(h.take_events().is_empty(), "the call is still up");
}

#[test]
fn failed_transfer_is_notified_reported_and_the_call_goes_on() {
    let (mut h, _, new_invite) = transferring();
    h.sends_from(CAROL_TRUNK, &reply(&new_invite, 486, "Busy Here", ""));
    let sent = h.take_sent();
    let notify = starting(&sent, "NOTIFY ")[0];
    assert!(notify.ends_with("SIP/2.0 486 Busy Here\r\n"), "{notify}");
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::TransferFailed {
            status: 486,
            reason: "Busy Here".into()
        }]
    );
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    let bye = h.take_sent().remove(0);
    assert!(bye.starts_with("BYE sip:gw@10.0.0.2:5060"), "{bye}");
}

#[test]
fn transferor_hanging_up_then_failed_transfer_is_a_remote_hangup() {
    let (mut h, invite, new_invite) = transferring();
    h.peer_sends(&in_dialog("BYE", &invite, "z9hG4bKbye9", 3));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert!(h.take_events().is_empty(), "the transfer goes on");
    h.sends_from(
        CAROL_TRUNK,
        &reply(&new_invite, 480, "Temporarily Unavailable", ""),
    );
    assert_eq!(
        h.take_events(),
        vec![
            SipCallEvent::TransferFailed {
                status: 480,
                reason: "Temporarily Unavailable".into()
            },
            SipCallEvent::RemoteHangup
        ]
    );
}

#[test]
fn transferor_hanging_up_then_refused_transfer_is_a_remote_hangup() {
    let (mut h, invite, _) = referred();
    h.peer_sends(&in_dialog("BYE", &invite, "z9hG4bKbye9", 3));
    assert!(h.take_events().is_empty(), "waiting for the decision");
    h.ua.refuse_transfer(h.now, "cid-1", 403);
    h.drain();
    assert_eq!(h.take_events(), vec![SipCallEvent::RemoteHangup]);
}

#[test]
fn refer_user_is_the_decoded_user_part() {
    use crate::sip::user_agent::call::refer_user;
    assert_eq!(
        refer_user("sip:%2B15551234567@10.0.0.9:5080").as_deref(),
        Some("+15551234567")
    );
    assert_eq!(
        refer_user("sips:5551234;phone-context=+1@h").as_deref(),
        Some("5551234")
    );
    assert_eq!(refer_user("sip:10.0.0.9:5080"), None, "no user part");
    assert_eq!(refer_user("sip:@h"), None);
    assert_eq!(refer_user("sip:%0d%0a@h"), None, "control characters");
    assert_eq!(refer_user("sip:%zz@h"), None, "bad escape");
    assert_eq!(refer_user("tel:+15551234567"), None);
}
