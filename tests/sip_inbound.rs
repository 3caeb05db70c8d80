//! Inbound calls on the SIP endpoint alone (no call module), with a real SIPp as the
//! trunk's UAC on loopback: answer and either side hangs up, CANCEL while ringing,
//! reject, redirect, admission by source address and by digest, stateless
//! forwarding to a second endpoint; and the built-in echo UAS answering an
//! outbound call and echoing RTP.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callbridge::sip::echo::EchoUas;
use callbridge::sip::{
    Credentials, ForwardAuth, InboundSipEvent, IncomingCall, SdpAnswerer, SipCallEvent,
    SipEndpoint, SipEndpointConfig, TrunkSettings, parse_net,
};
use common::sipp::{
    EVENT_WAIT, OFFER, Sipp, endpoint, eventually, init_tracing, invite_request, next_event,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;

const DID: &str = "+15550001111";
const SIPP_WAIT: Duration = Duration::from_secs(30);

/// Our SDP answer in these tests.
const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=sendrecv\r\n";

/// The trunk SIPp plays: admitted from 127.0.0.1 (its resolved address).
fn sipp_trunk() -> TrunkSettings {
    TrunkSettings {
        name: "sipp".into(),
        host: "127.0.0.1".into(),
        port: 5060,
        ..TrunkSettings::default()
    }
}

fn answerer() -> SdpAnswerer {
    Arc::new(|_offer: &str| Ok(ANSWER.to_string()))
}

/// An endpoint taking inbound calls from `trunk`.
async fn inbound_endpoint(
    trunk: TrunkSettings,
) -> (Arc<SipEndpoint>, UnboundedReceiver<IncomingCall>) {
    let ep = endpoint().await;
    let calls = ep.take_incoming().expect("first take");
    assert!(ep.take_incoming().is_none(), "taken once");
    ep.start_trunks(vec![trunk]).await.expect("trunks");
    (ep, calls)
}

async fn next_call(calls: &mut UnboundedReceiver<IncomingCall>) -> IncomingCall {
    tokio::time::timeout(EVENT_WAIT, calls.recv())
        .await
        .expect("timed out waiting for an inbound call")
        .expect("incoming stream ended")
}

async fn next_inbound(events: &mut UnboundedReceiver<InboundSipEvent>) -> InboundSipEvent {
    tokio::time::timeout(EVENT_WAIT, events.recv())
        .await
        .expect("timed out waiting for an inbound event")
        .expect("event stream ended")
}

/// The start lines SIPp logged (sent and received).
fn start_lines(messages: &str) -> Vec<String> {
    messages
        .lines()
        .filter(|l| l.starts_with("SIP/2.0 ") || l.contains(" sip:") && l.ends_with("SIP/2.0"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_answered_call_hung_up_by_the_caller() {
    let (ep, mut calls) = inbound_endpoint(sipp_trunk()).await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_answer_bye.xml"),
        ep.local_addr(),
        DID,
        &[],
    );
    let mut call = next_call(&mut calls).await;
    assert_eq!(call.to_user, DID);
    assert_eq!(call.from_user, "+15552223333");
    assert_eq!(call.from_display.as_deref(), Some("SIPp Caller"));
    assert_eq!(call.trunk.as_deref(), Some("sipp"));
    assert_eq!(call.source, sipp.addr);
    assert_eq!(call.correlation_id, "sipp-corr-1");
    assert!(call.sdp.as_deref().is_some_and(|s| s.contains("m=audio")));
    assert_eq!(call.handle.sip_call_id(), call.sip_call_id);
    call.handle.ringing();
    call.handle.answer(ANSWER.into(), answerer());
    assert_eq!(next_inbound(&mut call.events).await, InboundSipEvent::Acked);
    assert_eq!(
        next_inbound(&mut call.events).await,
        InboundSipEvent::RemoteHangup
    );
    let outcome = sipp.wait(SIPP_WAIT).await;
    outcome.assert_one_success();
    assert!(
        outcome.messages.contains("SIP/2.0 180 Ringing"),
        "{}",
        outcome.messages
    );
    assert!(
        outcome.messages.contains("m=audio 41000 RTP/AVP 0"),
        "our SDP in the 200"
    );
    assert!(outcome.messages.contains(&format!(
        "Contact: <sip:{DID}@127.0.0.1:{}>",
        ep.local_addr().port()
    )));
    assert!(
        tokio::time::timeout(EVENT_WAIT, call.events.recv())
            .await
            .is_ok_and(|e| e.is_none()),
        "nothing after the final event"
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn b_answered_call_hung_up_by_us() {
    let (ep, mut calls) = inbound_endpoint(sipp_trunk()).await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_answer_wait_bye.xml"),
        ep.local_addr(),
        DID,
        &[],
    );
    let mut call = next_call(&mut calls).await;
    call.handle.answer(ANSWER.into(), answerer());
    assert_eq!(next_inbound(&mut call.events).await, InboundSipEvent::Acked);
    call.handle.hangup();
    call.handle.hangup();
    assert_eq!(
        next_inbound(&mut call.events).await,
        InboundSipEvent::Terminated
    );
    let outcome = sipp.wait(SIPP_WAIT).await;
    outcome.assert_one_success();
    assert!(
        outcome
            .messages
            .contains(&format!("BYE sip:sipp@127.0.0.1:{}", sipp.addr.port()))
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn c_caller_cancels_while_ringing() {
    let (ep, mut calls) = inbound_endpoint(sipp_trunk()).await;
    let mut sipp = Sipp::uac(&Sipp::scenario("uac_cancel.xml"), ep.local_addr(), DID, &[]);
    let mut call = next_call(&mut calls).await;
    call.handle.ringing();
    assert_eq!(
        next_inbound(&mut call.events).await,
        InboundSipEvent::Cancelled
    );
    call.handle.answer(ANSWER.into(), answerer());
    let outcome = sipp.wait(SIPP_WAIT).await;
    outcome.assert_one_success();
    let lines = start_lines(&outcome.messages);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("SIP/2.0 487 Request Terminated")),
        "{lines:?}"
    );
    ep.shutdown().await;
}

/// SIPp's refused call: the final status line it saw.
async fn refused(
    ep: &SipEndpoint,
    act: impl FnOnce(&IncomingCall),
    calls: Option<&mut UnboundedReceiver<IncomingCall>>,
) -> (String, String) {
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_refused.xml"),
        ep.local_addr(),
        DID,
        &[],
    );
    if let Some(calls) = calls {
        let mut call = next_call(calls).await;
        act(&call);
        assert_eq!(
            next_inbound(&mut call.events).await,
            InboundSipEvent::Terminated
        );
    }
    let outcome = sipp.wait(SIPP_WAIT).await;
    outcome.assert_one_success();
    let status = start_lines(&outcome.messages)
        .into_iter()
        .find(|l| l.starts_with("SIP/2.0 ") && !l.starts_with("SIP/2.0 1"))
        .unwrap_or_default();
    (status, outcome.messages)
}

#[tokio::test]
async fn d_reject_603_and_redirect_302() {
    let (ep, mut calls) = inbound_endpoint(sipp_trunk()).await;
    let (status, _) = refused(&ep, |c| c.handle.reject(603, "").unwrap(), Some(&mut calls)).await;
    assert_eq!(status, "SIP/2.0 603 Decline");
    let target = "sip:+15550001111@127.0.0.1:5999";
    let (status, messages) = refused(
        &ep,
        |c| c.handle.redirect(target).unwrap(),
        Some(&mut calls),
    )
    .await;
    assert_eq!(status, "SIP/2.0 302 Moved Temporarily");
    assert!(
        messages.contains(&format!("Contact: <{target}>")),
        "{messages}"
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn e_sources_outside_inbound_from_get_403_and_nobody_taking_calls_480() {
    let trunk = TrunkSettings {
        inbound_from: vec![parse_net("192.0.2.0/24").expect("net")],
        ..sipp_trunk()
    };
    let (ep, _calls) = inbound_endpoint(trunk).await;
    let (status, _) = refused(&ep, |_| {}, None).await;
    assert_eq!(status, "SIP/2.0 403 Forbidden");
    ep.shutdown().await;
    let ep = endpoint().await;
    ep.start_trunks(vec![sipp_trunk()]).await.expect("trunks");
    let (status, _) = refused(&ep, |_| {}, None).await;
    assert_eq!(status, "SIP/2.0 480 Temporarily Unavailable");
    ep.shutdown().await;
}

#[tokio::test]
async fn f_inbound_auth_challenges_then_admits_sipp() {
    let trunk = TrunkSettings {
        inbound_auth: true,
        credentials: Some(Credentials {
            username: "acct".into(),
            password: "s3cret".into(),
        }),
        ..sipp_trunk()
    };
    let (ep, mut calls) = inbound_endpoint(trunk).await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_auth.xml"),
        ep.local_addr(),
        DID,
        &["-au", "acct", "-ap", "s3cret"],
    );
    let mut call = next_call(&mut calls).await;
    call.handle.answer(ANSWER.into(), answerer());
    assert_eq!(next_inbound(&mut call.events).await, InboundSipEvent::Acked);
    assert_eq!(
        next_inbound(&mut call.events).await,
        InboundSipEvent::RemoteHangup
    );
    let outcome = sipp.wait(SIPP_WAIT).await;
    outcome.assert_one_success();
    assert!(
        outcome
            .messages
            .contains("SIP/2.0 407 Proxy Authentication Required")
    );
    assert!(outcome.messages.contains("Proxy-Authorization: Digest"));
    ep.shutdown().await;
}

#[tokio::test]
async fn g_wrong_password_is_never_admitted() {
    let trunk = TrunkSettings {
        inbound_auth: true,
        credentials: Some(Credentials {
            username: "acct".into(),
            password: "s3cret".into(),
        }),
        ..sipp_trunk()
    };
    let (ep, mut calls) = inbound_endpoint(trunk).await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_auth.xml"),
        ep.local_addr(),
        DID,
        &["-au", "acct", "-ap", "guess"],
    );
    // SIPp keeps waiting for a 200 after the second 407: watch its log, then stop it.
    let challenged_twice = eventually(Duration::from_secs(10), || {
        sipp.read("messages.log").matches("SIP/2.0 407").count() >= 2
    })
    .await;
    let log = sipp.read("messages.log");
    sipp.kill();
    assert!(challenged_twice, "{log}");
    assert!(calls.try_recv().is_err(), "no call reached the call module");
    ep.shutdown().await;
}

/// An endpoint on `ip` (another loopback address), trusting `trusted` to forward.
async fn endpoint_on(
    ip: &str,
    trusted: &[&str],
) -> (Arc<SipEndpoint>, UnboundedReceiver<IncomingCall>) {
    init_tracing();
    let ep = SipEndpoint::bind(SipEndpointConfig {
        listen: format!("{ip}:0").parse().expect("addr"),
        user_agent: format!("callbridge-{ip}"),
        trusted_proxies: trusted.iter().map(|t| parse_net(t).expect("net")).collect(),
        forward: Some(ForwardAuth {
            secret: b"cluster-forward-secret-0123456789abcdef".to_vec(),
            max_age: Duration::from_secs(30),
        }),
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind");
    let calls = ep.take_incoming().expect("take");
    let trunk = TrunkSettings {
        inbound_from: vec![parse_net("127.0.0.1").expect("net")],
        ..sipp_trunk()
    };
    ep.start_trunks(vec![trunk]).await.expect("trunks");
    (ep, calls)
}

#[tokio::test]
async fn h_proxied_to_the_instance_holding_the_user() {
    let (a, mut a_calls) = endpoint_on("127.0.0.2", &[]).await;
    let (b, mut b_calls) = endpoint_on("127.0.0.3", &["127.0.0.2"]).await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_via_proxy.xml"),
        a.local_addr(),
        DID,
        &[],
    );
    let at_a = next_call(&mut a_calls).await;
    a.proxy(at_a, b.local_addr()).await.expect("forwarded");
    let mut call = next_call(&mut b_calls).await;
    assert_eq!(
        call.source, sipp.addr,
        "admitted by the trunk's address behind A"
    );
    assert_eq!(call.trunk.as_deref(), Some("sipp"));
    call.handle.ringing();
    call.handle.answer(ANSWER.into(), answerer());
    assert_eq!(next_inbound(&mut call.events).await, InboundSipEvent::Acked);
    assert_eq!(
        next_inbound(&mut call.events).await,
        InboundSipEvent::RemoteHangup
    );
    let outcome = sipp.wait(SIPP_WAIT).await;
    outcome.assert_one_success();
    let b_contact = format!("Contact: <sip:{DID}@{}>", b.local_addr());
    assert!(
        outcome.messages.contains(&b_contact),
        "{}",
        outcome.messages
    );
    assert!(
        outcome
            .messages
            .contains(&format!("BYE sip:{DID}@{}", b.local_addr()))
    );
    let relayed = a
        .message_counts()
        .into_iter()
        .filter(|c| c.method == "INVITE" && c.status == "200")
        .map(|c| c.count)
        .sum::<u64>();
    assert!(relayed >= 1, "the 200 went through A");
    assert!(
        !a.message_counts().iter().any(|c| c.method == "BYE"),
        "the dialog is B's alone"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn j_redirected_caller_reaches_the_instance_holding_the_user() {
    let (a, mut a_calls) = endpoint_on("127.0.0.2", &[]).await;
    let (b, mut b_calls) = endpoint_on("127.0.0.3", &[]).await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_follow_redirect.xml"),
        a.local_addr(),
        DID,
        &["-d", "300"],
    );
    let mut at_a = next_call(&mut a_calls).await;
    let contact = format!("sip:{DID}@{}", b.local_addr());
    at_a.handle.redirect(&contact).expect("redirect");
    assert_eq!(
        next_inbound(&mut at_a.events).await,
        InboundSipEvent::Terminated
    );
    let mut call = next_call(&mut b_calls).await;
    assert_eq!(
        call.sip_call_id, at_a.sip_call_id,
        "the caller keeps its Call-ID"
    );
    call.handle.answer(ANSWER.into(), answerer());
    assert_eq!(next_inbound(&mut call.events).await, InboundSipEvent::Acked);
    assert_eq!(
        next_inbound(&mut call.events).await,
        InboundSipEvent::RemoteHangup
    );
    sipp.wait(SIPP_WAIT).await.assert_one_success();
    a.shutdown().await;
    b.shutdown().await;
}

/// `c=` address and `m=audio` port of an SDP.
fn media_addr(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line");
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next())
        .expect("m= line");
    format!("{}:{port}", ip.trim())
        .parse()
        .expect("media address")
}

#[tokio::test]
async fn i_echo_uas_answers_and_echoes_rtp() {
    init_tracing();
    let echo = EchoUas::start(
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1".parse().expect("ip"),
    )
    .await
    .expect("echo");
    let ep = endpoint().await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("rtp");
    let offer = OFFER.replace("40000", &rtp.local_addr().expect("addr").port().to_string());
    let (call, mut events) = ep
        .invite(callbridge::sip::InviteRequest {
            sdp: offer.replace("RTP/AVP 0", "RTP/AVP 8 0 101")
                + "a=rtpmap:101 telephone-event/8000\r\n",
            to_user: "echo".into(),
            ..invite_request(echo.addr())
        })
        .await
        .expect("invite");
    let answer = match next_event(&mut events).await {
        SipCallEvent::Answered { sdp } => sdp,
        other => panic!("expected Answered, got {other:?}"),
    };
    assert!(
        answer.contains("m=audio ") && answer.contains(" RTP/AVP 0 101\r\n"),
        "PCMU first, then telephone-event: {answer}"
    );
    let to = media_addr(&answer);
    let mut buf = [0u8; 1500];
    for seq in 0u16..3 {
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 1, 2, 3, 4];
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet.extend(std::iter::repeat_n(0xffu8, 160));
        rtp.send_to(&packet, to).await.expect("send");
        let (n, from) = tokio::time::timeout(EVENT_WAIT, rtp.recv_from(&mut buf))
            .await
            .expect("echo within the wait")
            .expect("recv");
        assert_eq!(from, to);
        assert_eq!(&buf[..n], &packet[..], "byte-identical echo");
    }
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    echo.shutdown().await;
    ep.shutdown().await;
}
