//! The SIP user agent against a real SIPp UAS on loopback (no media): answer and
//! local BYE, remote BYE, busy, CANCEL while ringing; plus a scripted UDP peer for
//! retransmission timing and OPTIONS, and a transport error.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::sip::{InviteRequest, SipCallEvent, SipEndpoint, SipEndpointConfig};
use common::sipp::Sipp;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(15);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn endpoint() -> Arc<SipEndpoint> {
    init_tracing();
    SipEndpoint::bind(SipEndpointConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        user_agent: "callbridge-test".into(),
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind endpoint")
}

fn request(target: SocketAddr) -> InviteRequest {
    InviteRequest {
        target,
        target_host: "127.0.0.1".into(),
        to_user: "+15551234567".into(),
        from_user: "alice".into(),
        sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n".into(),
        correlation_id: "test-corr-1".into(),
        ..InviteRequest::default()
    }
}

async fn next(events: &mut UnboundedReceiver<SipCallEvent>) -> SipCallEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("timed out waiting for a SIP event")
        .expect("event stream ended")
}

/// Skips provisional events and returns the first other one.
async fn next_non_provisional(events: &mut UnboundedReceiver<SipCallEvent>) -> SipCallEvent {
    loop {
        match next(events).await {
            SipCallEvent::Ringing { .. } | SipCallEvent::Progress { .. } => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_sipp_answers_and_we_hang_up_with_bye() {
    let mut sipp = Sipp::uas(None, &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(sipp.addr)).await.unwrap();
    assert_eq!(next(&mut events).await, SipCallEvent::Ringing { sdp: None });
    match next(&mut events).await {
        SipCallEvent::Answered { sdp } => assert!(sdp.contains("m=audio"), "{sdp}"),
        other => panic!("expected Answered, got {other:?}"),
    }
    call.hangup();
    assert_eq!(next(&mut events).await, SipCallEvent::Terminated);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    assert!(outcome.messages.contains("BYE sip:"), "SIPp saw no BYE");
    assert!(
        outcome
            .messages
            .contains(&format!("Call-ID: {}", call.sip_call_id())),
        "Call-ID of the handle is the one on the wire"
    );
    assert!(outcome.messages.contains("X-Correlation-ID: test-corr-1"));
    let counts = ep.message_counts();
    assert!(
        counts
            .iter()
            .any(|c| c.method == "BYE" && c.status == "200" && c.count == 1),
        "{counts:?}"
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn b_sipp_sends_bye_and_we_report_remote_hangup() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_remote_bye.xml")), &[]);
    let ep = endpoint().await;
    let (_call, mut events) = ep.invite(request(sipp.addr)).await.unwrap();
    assert!(matches!(
        next(&mut events).await,
        SipCallEvent::Answered { .. }
    ));
    let started = Instant::now();
    assert_eq!(next(&mut events).await, SipCallEvent::RemoteHangup);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "BYE came after ~1 s"
    );
    assert!(next_end(&mut events).await, "no event after RemoteHangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    ep.shutdown().await;
}

/// True if the stream ends (sender dropped) without further events.
async fn next_end(events: &mut UnboundedReceiver<SipCallEvent>) -> bool {
    matches!(tokio::time::timeout(WAIT, events.recv()).await, Ok(None))
}

#[tokio::test]
async fn c_sipp_busy_is_reported_as_failed_486() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_busy.xml")), &[]);
    let ep = endpoint().await;
    let (_call, mut events) = ep.invite(request(sipp.addr)).await.unwrap();
    assert_eq!(
        next_non_provisional(&mut events).await,
        SipCallEvent::Failed {
            status: 486,
            reason: "Busy Here".into()
        }
    );
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn d_hangup_while_ringing_cancels() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_ring_cancel.xml")), &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(sipp.addr)).await.unwrap();
    assert_eq!(next(&mut events).await, SipCallEvent::Ringing { sdp: None });
    call.hangup();
    call.hangup();
    assert_eq!(next(&mut events).await, SipCallEvent::Terminated);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    assert!(
        outcome.messages.contains("CANCEL sip:"),
        "SIPp saw no CANCEL"
    );
    ep.shutdown().await;
}

/// SIPp cannot drop the first INVITE and answer a retransmission (it treats a
/// retransmitted request as the one its `recv` already consumed), so this peer is a
/// plain UDP socket that records when each INVITE copy arrives.
#[tokio::test]
async fn e_invite_is_retransmitted_at_t1_then_2t1() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ep = endpoint().await;
    let (_call, mut events) = ep
        .invite(request(peer.local_addr().unwrap()))
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let mut arrivals = Vec::new();
    let mut first = Vec::new();
    let mut from = None;
    while arrivals.len() < 3 {
        let (n, src) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .expect("INVITE copy")
            .unwrap();
        arrivals.push(Instant::now());
        if first.is_empty() {
            first = buf[..n].to_vec();
            from = Some(src);
        } else {
            assert_eq!(&buf[..n], &first[..], "a retransmission is byte-identical");
        }
    }
    let gap1 = arrivals[1] - arrivals[0];
    let gap2 = arrivals[2] - arrivals[1];
    let near = |d: Duration, ms: u64| d.as_millis().abs_diff(ms as u128) < 200;
    assert!(
        near(gap1, 500),
        "first retransmission after T1, got {gap1:?}"
    );
    assert!(near(gap2, 1000), "second after 2*T1, got {gap2:?}");

    // End the call with a 503: ACKed, reported, and INVITEs stop.
    let invite = String::from_utf8(first).unwrap();
    peer.send_to(
        reply(&invite, "503 Service Unavailable").as_bytes(),
        from.unwrap(),
    )
    .await
    .unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
        .await
        .expect("ACK")
        .unwrap();
    assert!(buf[..n].starts_with(b"ACK "));
    assert_eq!(
        next(&mut events).await,
        SipCallEvent::Failed {
            status: 503,
            reason: "Service Unavailable".into()
        }
    );
    ep.shutdown().await;
}

/// The peer retransmits its 200 (as a UAS does until the ACK arrives): each copy
/// gets the same ACK again, and `Answered` is reported once.
#[tokio::test]
async fn retransmitted_200_gets_the_ack_again() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ep = endpoint().await;
    let (_call, mut events) = ep
        .invite(request(peer.local_addr().unwrap()))
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, from) = peer.recv_from(&mut buf).await.unwrap();
    let invite = String::from_utf8_lossy(&buf[..n]).to_string();
    let ok = reply(&invite, "200 OK").replace(
        "Content-Length: 0\r\n",
        &format!(
            "Contact: <sip:peer@{}>\r\nContent-Length: 0\r\n",
            peer.local_addr().unwrap()
        ),
    );
    let mut acks = Vec::new();
    for _ in 0..2 {
        peer.send_to(ok.as_bytes(), from).await.unwrap();
        loop {
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
                .await
                .expect("ACK")
                .unwrap();
            if buf[..n].starts_with(b"ACK ") {
                acks.push(buf[..n].to_vec());
                break;
            }
        }
    }
    assert_eq!(acks[0], acks[1], "the same ACK for the retransmitted 200");
    assert!(matches!(
        next(&mut events).await,
        SipCallEvent::Answered { .. }
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err(),
        "Answered is reported once"
    );
    ep.shutdown().await;
}

/// A response built from one of our requests (Via, From, To + tag, Call-ID, CSeq).
fn reply(request: &str, status: &str) -> String {
    let header = |name: &str| {
        request
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name}"))
            .to_string()
    };
    format!(
        "SIP/2.0 {status}\r\n{}\r\n{}\r\n{};tag=peer\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        header("Via"),
        header("From"),
        header("To"),
        header("Call-ID"),
        header("CSeq")
    )
}

#[tokio::test]
async fn options_keepalive_and_malformed_requests_are_answered() {
    let ep = endpoint().await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = peer.local_addr().unwrap().port();
    let options = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKopt1;rport\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ep.local_addr()
    );
    let mut buf = vec![0u8; 65_535];
    for (datagram, expected) in [
        (options.clone(), "SIP/2.0 200 OK\r\n"),
        (
            options.replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS"),
            "SIP/2.0 400 Bad Request\r\n",
        ),
        (
            options
                .replace("OPTIONS sip", "FROB sip")
                .replace("z9hG4bKopt1", "z9hG4bKfrob"),
            "SIP/2.0 501 Not Implemented\r\n",
        ),
    ] {
        peer.send_to(datagram.as_bytes(), ep.local_addr())
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .expect("answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with(expected), "{answer}");
    }
    ep.shutdown().await;
}

#[tokio::test]
async fn send_failure_is_reported_as_503_transport_error() {
    let ep = endpoint().await;
    // An IPv6 destination from an IPv4 socket fails in send_to: nothing leaves the host.
    let (_call, mut events) = ep
        .invite(request("[::1]:5060".parse().unwrap()))
        .await
        .unwrap();
    match next(&mut events).await {
        SipCallEvent::Failed {
            status: 503,
            reason,
        } => {
            assert!(reason.starts_with("transport error: "), "{reason}")
        }
        other => panic!("expected Failed 503, got {other:?}"),
    }
    ep.shutdown().await;
}
