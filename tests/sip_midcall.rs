//! Mid-call SIP against real SIPp peers: early media (183 with SDP), reliable
//! provisionals (PRACK), an UPDATE in the early dialog, hold/unhold from the far end (re-INVITE, UPDATE) answered
//! by our answerer, our own re-INVITE, session timers (we refresh; the far end does
//! not and we BYE), a blind transfer by REFER to a second SIPp (on a trunk that takes
//! transfers; declined with 603 on one that does not), and DTMF as INFO.

mod common;
use common::sipp;

use std::sync::Arc;
use std::time::Duration;

use callbridge::sip::{
    DtmfMode, InviteRequest, ReferPolicy, SdpAnswerer, SessionTimerSettings, SipCallEvent,
    TrunkSettings,
};
use sipp::{Sipp, endpoint, invite_request, next_event, next_final_or_answer};

const WAIT: Duration = Duration::from_secs(20);

/// Answers an offer the way the media module would for hold: sendonly → recvonly.
fn answerer() -> SdpAnswerer {
    Arc::new(|offer: &str| {
        let direction = if offer.contains("a=sendonly") {
            "recvonly"
        } else if offer.contains("a=inactive") {
            "inactive"
        } else {
            "sendrecv"
        };
        Ok(format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na={direction}\r\n"
        ))
    })
}

fn request(sipp: &Sipp) -> InviteRequest {
    InviteRequest {
        answerer: answerer(),
        ..invite_request(sipp.addr)
    }
}

async fn answered(events: &mut tokio::sync::mpsc::UnboundedReceiver<SipCallEvent>) -> String {
    match next_final_or_answer(events).await {
        SipCallEvent::Answered { sdp } => sdp,
        other => panic!("expected Answered, got {other:?}"),
    }
}

#[tokio::test]
async fn early_media_183_with_sdp_then_200() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_183_sdp.xml")), &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(&sipp)).await.unwrap();
    match next_event(&mut events).await {
        SipCallEvent::Progress { sdp: Some(sdp) } => assert!(sdp.contains("m=audio"), "{sdp}"),
        other => panic!("expected Progress with SDP, got {other:?}"),
    }
    answered(&mut events).await;
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    sipp.wait(WAIT).await.assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn reliable_183_is_pracked() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_100rel.xml")), &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(&sipp)).await.unwrap();
    match next_event(&mut events).await {
        SipCallEvent::Progress { sdp: Some(_) } => {}
        other => panic!("expected Progress with SDP, got {other:?}"),
    }
    answered(&mut events).await;
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    let outcome = sipp.wait(WAIT).await;
    outcome.assert_one_success();
    assert!(outcome.messages.contains("PRACK sip:"), "no PRACK");
    assert!(
        outcome.messages.contains("CSeq: 3 BYE"),
        "the PRACK (CSeq 2) numbers on into the dialog: {}",
        outcome.messages
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn early_update_changes_the_session_and_a_2xx_without_sdp_keeps_it() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_early_update.xml")), &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(&sipp)).await.unwrap();
    match next_event(&mut events).await {
        SipCallEvent::Progress { sdp: Some(sdp) } => assert!(sdp.contains("a=sendrecv"), "{sdp}"),
        other => panic!("expected Progress with SDP, got {other:?}"),
    }
    match next_event(&mut events).await {
        SipCallEvent::RemoteSdp { sdp } => assert!(sdp.contains("a=sendonly"), "{sdp}"),
        other => panic!("expected RemoteSdp from the early UPDATE, got {other:?}"),
    }
    // The 200 carries no SDP: the session is the one the early UPDATE settled.
    let sdp = answered(&mut events).await;
    assert!(sdp.contains("a=sendonly"), "answered with {sdp:?}");
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    let outcome = sipp.wait(WAIT).await;
    outcome.assert_one_success();
    assert!(
        outcome.messages.contains("CSeq: 1 UPDATE") && outcome.messages.contains("a=recvonly"),
        "our 200 to the UPDATE answered recvonly: {}",
        outcome.messages
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn far_end_hold_by_reinvite_and_unhold_by_update_are_answered() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_hold_update.xml")), &[]);
    let ep = endpoint().await;
    let (_call, mut events) = ep.invite(request(&sipp)).await.unwrap();
    answered(&mut events).await;
    match next_event(&mut events).await {
        SipCallEvent::RemoteSdp { sdp } => assert!(sdp.contains("a=sendonly"), "{sdp}"),
        other => panic!("expected RemoteSdp (hold), got {other:?}"),
    }
    match next_event(&mut events).await {
        SipCallEvent::RemoteSdp { sdp } => assert!(sdp.contains("a=sendrecv"), "{sdp}"),
        other => panic!("expected RemoteSdp (unhold), got {other:?}"),
    }
    assert_eq!(next_event(&mut events).await, SipCallEvent::RemoteHangup);
    sipp.wait(WAIT).await.assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn our_reinvite_puts_the_far_end_on_hold() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_answers_reinvite.xml")), &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(&sipp)).await.unwrap();
    answered(&mut events).await;
    call.reinvite(sipp::OFFER.replace("a=sendrecv", "a=sendonly"));
    match next_event(&mut events).await {
        SipCallEvent::ReinviteResult {
            ok: true,
            status: 200,
            sdp: Some(sdp),
        } => assert!(sdp.contains("a=recvonly"), "{sdp}"),
        other => panic!("expected a successful ReinviteResult, got {other:?}"),
    }
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    sipp.wait(WAIT).await.assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn session_timer_refreshes_with_update() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_session_refresh.xml")), &[]);
    let ep = endpoint().await;
    let (_call, mut events) = ep.invite(request(&sipp)).await.unwrap();
    answered(&mut events).await;
    // SIPp hangs up only after two refreshes (Session-Expires: 2, refreshed every ~1 s).
    assert_eq!(next_event(&mut events).await, SipCallEvent::RemoteHangup);
    let outcome = sipp.wait(WAIT).await;
    outcome.assert_one_success();
    assert!(outcome.messages.contains("Supported: 100rel, timer"));
    ep.shutdown().await;
}

#[tokio::test]
async fn an_unrefreshed_session_expires_with_bye() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_session_expiry.xml")), &[]);
    let ep = endpoint().await;
    let (_call, mut events) = ep.invite(request(&sipp)).await.unwrap();
    answered(&mut events).await;
    assert_eq!(
        next_event(&mut events).await,
        SipCallEvent::Failed {
            status: 408,
            reason: "session timer expired".into()
        }
    );
    sipp.wait(WAIT).await.assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn refer_transfers_the_call_to_a_second_sipp() {
    // The test plays the call module: it routes the Refer-To user part to carol.
    let mut carol = Sipp::uas(None, &[]);
    // The Refer-To host is not carol's: the transfer goes where the call module says.
    let refer_to = "sip:carol@127.0.0.2:9";
    let mut transferor = Sipp::uas(
        Some(&Sipp::scenario("uas_refer.xml")),
        &["-key", "refer_to", refer_to],
    );
    let ep = endpoint().await;
    let mut first = request(&transferor);
    first.trunk.refer = ReferPolicy::Dialplan;
    let (call, mut events) = ep.invite(first).await.unwrap();
    answered(&mut events).await;
    assert_eq!(
        next_event(&mut events).await,
        SipCallEvent::TransferRequested {
            target: refer_to.into(),
            user: Some("carol".into())
        }
    );
    ep.transfer(
        &call,
        InviteRequest {
            to_user: "carol".into(),
            answerer: answerer(),
            ..invite_request(carol.addr)
        },
    )
    .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        SipCallEvent::Transferred {
            target: refer_to.into()
        }
    );
    match next_event(&mut events).await {
        SipCallEvent::RemoteSdp { sdp } => assert!(sdp.contains("m=audio"), "{sdp}"),
        other => panic!("expected the new party's SDP, got {other:?}"),
    }
    // The transferor ends its own dialog; the call goes on with carol.
    let outcome = transferor.wait(WAIT).await;
    outcome.assert_one_success();
    assert!(outcome.messages.contains("Event: refer"));
    assert!(outcome.messages.contains("message/sipfrag"));
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    let outcome = carol.wait(WAIT).await;
    outcome.assert_one_success();
    assert!(
        outcome
            .messages
            .contains("INVITE sip:carol@127.0.0.1 SIP/2.0"),
        "{}",
        outcome.messages
    );
    assert!(outcome.messages.contains("Referred-By: <sip:sipp@"));
    ep.shutdown().await;
}

#[tokio::test]
async fn refer_is_declined_with_603_on_a_trunk_that_does_not_take_transfers() {
    let mut transferor = Sipp::uas(
        Some(&Sipp::scenario("uas_refer_declined.xml")),
        &["-key", "refer_to", "sip:carol@127.0.0.2:9"],
    );
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(&transferor)).await.unwrap();
    answered(&mut events).await;
    // The scenario waits for our BYE after its 603; the call module heard nothing.
    let declined = sipp::eventually(WAIT, || {
        transferor
            .read("messages.log")
            .contains("SIP/2.0 603 Decline")
    })
    .await;
    assert!(declined, "{}", transferor.read("messages.log"));
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    let outcome = transferor.wait(WAIT).await;
    outcome.assert_one_success();
    assert!(!outcome.messages.contains("NOTIFY sip:"), "no NOTIFY");
    ep.shutdown().await;
}

#[tokio::test]
async fn dtmf_as_info_on_an_info_trunk() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_info_dtmf.xml")), &[]);
    let ep = endpoint().await;
    let trunk = TrunkSettings {
        dtmf_mode: DtmfMode::Info,
        session_timer: SessionTimerSettings {
            session_expires: 0,
            min_se: 90,
        },
        ..TrunkSettings::default()
    };
    let (call, mut events) = ep
        .invite(InviteRequest {
            trunk,
            ..request(&sipp)
        })
        .await
        .unwrap();
    answered(&mut events).await;
    call.send_dtmf_info('5', 160).unwrap();
    call.send_dtmf_info('#', 160).unwrap();
    assert!(call.send_dtmf_info('x', 160).is_err(), "not a DTMF digit");
    // Both INFOs answered before the BYE (the scenario expects them in that order).
    assert!(
        sipp::eventually(WAIT, || {
            sipp::counted(&ep, callbridge::sip::Direction::Inbound, "INFO", "200") == 2
        })
        .await,
        "both INFOs answered 200"
    );
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    sipp.wait(WAIT).await.assert_one_success();

    // On an RFC 4733 trunk the handle refuses INFO DTMF.
    let mut other = Sipp::uas(None, &[]);
    let (call, mut events) = ep.invite(request(&other)).await.unwrap();
    answered(&mut events).await;
    assert!(call.send_dtmf_info('5', 160).is_err());
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    other.wait(WAIT).await.assert_one_success();
    ep.shutdown().await;
}
