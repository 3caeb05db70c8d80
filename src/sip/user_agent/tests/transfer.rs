//! Blind transfer requested by the far end (REFER), with fake time.

use super::*;

const CAROL: &str = "sip:carol@10.0.0.9:5080";

fn refer(invite: &str, seq: u32) -> String {
    in_dialog("REFER", invite, &format!("z9hG4bKrefer{seq}"), seq).replace(
        "Max-Forwards: 70\r\n",
        &format!(
            "Max-Forwards: 70\r\nRefer-To: <{CAROL}>\r\nReferred-By: <sip:bob@trunk.example>\r\n"
        ),
    )
}

/// Answered, then REFERred: returns the 202/NOTIFY/INVITE sent.
fn referred() -> (Harness, String, Vec<String>) {
    let (mut h, invite) = answered_with(
        InviteRequest {
            answerer: hold_answerer(),
            ..base_request()
        },
        "",
    );
    h.peer_sends(&refer(&invite, 2));
    let carol: std::net::SocketAddr = "10.0.0.9:5080".parse().unwrap();
    assert_eq!(
        h.sent[2].dest,
        Peer::udp(carol),
        "the INVITE goes to the Refer-To host"
    );
    let sent = h.take_sent();
    (h, invite, sent)
}

#[test]
fn refer_is_accepted_notified_and_the_target_called() {
    let (h, _, sent) = referred();
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
    let invite = &sent[2];
    assert!(
        invite.starts_with(&format!("INVITE {CAROL} SIP/2.0")),
        "{invite}"
    );
    assert_eq!(header(invite, "Referred-By"), "<sip:bob@trunk.example>");
    assert_ne!(header(invite, "Call-ID"), "cid-1", "a new dialog");
    assert!(invite.ends_with("v=0\r\n"), "our same SDP");
    assert!(h.sent.is_empty());
}

#[test]
fn successful_transfer_replaces_the_dialog_and_byes_the_old_one_later() {
    let (mut h, _, sent) = referred();
    let new_invite = sent[2].clone();
    h.peer_sends(&with_body(
        &reply(
            &new_invite,
            200,
            "OK",
            "Contact: <sip:carol@10.0.0.9:5080>\r\n",
        ),
        "application/sdp",
        &sdp("sendrecv"),
    ));
    let sent = h.take_sent();
    assert!(sent[0].starts_with(&format!("ACK {CAROL}")), "{sent:?}");
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
                target: CAROL.into()
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
    assert!(bye.starts_with(&format!("BYE {CAROL}")), "{bye}");
    h.peer_sends(&reply(&bye, 200, "OK", ""));
    assert_eq!(h.take_events(), vec![SipCallEvent::Terminated]);
}

#[test]
fn failed_transfer_is_notified_and_the_call_goes_on() {
    let (mut h, _, sent) = referred();
    h.peer_sends(&reply(&sent[2], 486, "Busy Here", ""));
    let sent = h.take_sent();
    let notify = starting(&sent, "NOTIFY ")[0];
    assert!(notify.ends_with("SIP/2.0 486 Busy Here\r\n"), "{notify}");
    assert!(h.take_events().is_empty(), "the call is still up");
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    let bye = h.take_sent().remove(0);
    assert!(bye.starts_with("BYE sip:gw@10.0.0.2:5060"), "{bye}");
}

#[test]
fn transferor_hanging_up_then_failed_transfer_is_a_remote_hangup() {
    let (mut h, invite, sent) = referred();
    h.peer_sends(&in_dialog("BYE", &invite, "z9hG4bKbye9", 3));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    assert!(h.take_events().is_empty(), "the transfer goes on");
    h.peer_sends(&reply(&sent[2], 480, "Temporarily Unavailable", ""));
    assert_eq!(h.take_events(), vec![SipCallEvent::RemoteHangup]);
}
