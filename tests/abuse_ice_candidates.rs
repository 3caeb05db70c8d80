//! Browser ICE candidates as an SSRF vector, against a running gateway: a user names
//! loopback or internal addresses, or the gateway's own ports, as its candidates so
//! our ICE agent sends there. With the default (closed) `media.allow_candidate_networks`
//! a loopback-only browser gets no ICE connection (the call ends `media_failed`) and a
//! trickled loopback candidate never receives a STUN request; with loopback allowed
//! the same browser connects, yet a candidate on the gateway's SIP port still never
//! receives one (checked with a real socket on 127.0.0.3 at that port).
//!
//! The browser is the `webrtc`-crate client; the far end the built-in echo UAS.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callbridge::media::candidates::CandidatePolicy;
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, WsClient, test_config};
use serde_json::json;
use tokio::net::UdpSocket;

/// A gateway with the echo UAS, the RTP range `rtp_base..+3` and `allow` as
/// `media.allow_candidate_networks` (empty: the closed default).
async fn gateway(allow: &[&str], rtp_base: u16) -> TestGateway {
    let mut config = test_config(None);
    config.echo.enabled = true;
    config.sip.rtp_ports = format!("{rtp_base}-{}", rtp_base + 3);
    config.media.allow_candidate_networks = allow.iter().map(|s| s.to_string()).collect();
    TestGateway::start(config).await
}

fn policy(gw: &TestGateway) -> Arc<CandidatePolicy> {
    gw.server
        .as_ref()
        .expect("running")
        .gateway
        .calls
        .candidate_policy()
        .clone()
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_only_browser_connects_only_when_loopback_is_allowed() {
    // Closed default: the browser (candidates on 127.0.0.1 only) never connects.
    let closed = gateway(&[], common::ports::block(4)).await;
    let (mut ws, _) = closed.connect_as("eve", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "eve-1", "echo").await;
    // The gateway gives up on the media (ICE failure or its media timeout).
    let ended = call
        .until_within(&mut ws, &["ended"], Duration::from_secs(40))
        .await;
    assert_eq!(ended["reason"], "media_failed", "{ended}");
    assert!(
        !browser.wait_connected(Duration::ZERO).await,
        "no ICE connection to a loopback browser by default"
    );
    let p = policy(&closed);
    assert!(p.refused_candidates() >= 1, "its candidates were ignored");
    assert!(
        p.dropped_sends() >= 1,
        "answers to its peer-reflexive address were dropped"
    );
    browser.close().await;
    closed.stop().await;

    // Allowed: the same browser connects and audio flows.
    let open = gateway(&["127.0.0.0/8"], common::ports::block(4)).await;
    let (mut ws, _) = open.connect_as("eve", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "eve-2", "echo").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(
        browser.wait_connected(Duration::from_secs(15)).await,
        "ICE up"
    );
    let _tone = browser.start_sending_tone(50);
    assert!(
        browser.wait_received(20, Duration::from_secs(10)).await,
        "audio back from the echo"
    );
    assert_eq!(
        policy(&open).dropped_sends(),
        0,
        "nothing dropped on a legit call"
    );
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    browser.close().await;
    open.stop().await;
}

/// A UDP socket standing where a candidate points.
struct Trap {
    socket: UdpSocket,
    stun_requests: usize,
}

impl Trap {
    async fn at(addr: &str) -> Trap {
        Trap {
            socket: UdpSocket::bind(addr).await.expect("bind trap"),
            stun_requests: 0,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("addr")
    }

    fn candidate(&self, foundation: u32) -> serde_json::Value {
        let a = self.addr();
        json!({
            "candidate": format!("candidate:{foundation} 1 udp 2130706431 {} {} typ host", a.ip(), a.port()),
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        })
    }

    /// Counts the STUN Binding requests that arrived so far (without waiting).
    fn drain(&mut self) -> usize {
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = self.socket.try_recv_from(&mut buf) {
            if n >= 20 && buf[..2] == [0x00, 0x01] && buf[4..8] == [0x21, 0x12, 0xA4, 0x42] {
                self.stun_requests += 1;
            }
        }
        self.stun_requests
    }
}

/// Places a call with a browser's offer but never lets the browser connect (its
/// answer is not applied), so the gateway keeps checking every candidate it accepts.
async fn place_unconnected(ws: &mut WsClient, call_id: &str) -> Arc<Browser> {
    let browser = Browser::new(BrowserOptions::default()).await;
    ws.send(json!({"type": "call", "call_id": call_id, "to": "echo", "sdp": browser.offer_sdp()}))
        .await;
    ws.recv_type("answer", |_| {}).await;
    browser
}

/// Trickles `candidates` for `call_id`.
async fn trickle(ws: &mut WsClient, call_id: &str, candidates: &[serde_json::Value]) {
    for c in candidates {
        ws.send(json!({"type": "ice", "call_id": call_id, "candidate": c}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_to_the_gateway_or_loopback_never_get_a_stun_request() {
    // Loopback allowed (local use): a candidate at an ordinary port is checked, but
    // the gateway's SIP and HTTP ports are not, even on another loopback address.
    let open = gateway(&["127.0.0.0/8"], common::ports::block(4)).await;
    let sip = open.server.as_ref().expect("running").sip_addr;
    let mut at_sip = Trap::at(&format!("127.0.0.3:{}", sip.port())).await;
    let mut at_http = Trap::at(&format!("127.0.0.3:{}", open.http_addr().port())).await;
    let mut ordinary = Trap::at("127.0.0.3:0").await;
    let (mut ws, _) = open.connect_as("eve", "calls:outbound").await;
    let p = policy(&open);
    let _browser = place_unconnected(&mut ws, "eve-3").await;
    let before = p.refused_candidates();
    trickle(
        &mut ws,
        "eve-3",
        &[
            at_sip.candidate(1),
            at_http.candidate(2),
            ordinary.candidate(3),
        ],
    )
    .await;
    // The gateway checks the ordinary candidate again and again: by the third request
    // it has gone through its check list several times.
    until("STUN requests at the allowed candidate", || {
        ordinary.drain() >= 3
    })
    .await;
    assert_eq!(at_sip.drain(), 0, "our SIP port as a candidate");
    assert_eq!(at_http.drain(), 0, "our HTTP port as a candidate");
    assert_eq!(p.refused_candidates(), before + 2);
    open.stop().await;

    // Closed default: a loopback candidate is ignored (no request reaches it).
    let closed = gateway(&[], common::ports::block(4)).await;
    let sip = closed.server.as_ref().expect("running").sip_addr;
    let mut at_sip = Trap::at(&format!("127.0.0.3:{}", sip.port())).await;
    let mut ordinary = Trap::at("127.0.0.3:0").await;
    let (mut ws, _) = closed.connect_as("eve", "calls:outbound").await;
    let p = policy(&closed);
    let _browser = place_unconnected(&mut ws, "eve-4").await;
    let before = p.refused_candidates();
    trickle(
        &mut ws,
        "eve-4",
        &[at_sip.candidate(1), ordinary.candidate(2)],
    )
    .await;
    // Both were judged (and refused) when they arrived: they never reach the ICE
    // agent, and its socket would drop a datagram to them anyway.
    until("both candidates judged", || {
        p.refused_candidates() == before + 2
    })
    .await;
    // The open gateway checked its ordinary candidate three times well within this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ordinary.drain(),
        0,
        "a loopback candidate with the closed default"
    );
    assert_eq!(at_sip.drain(), 0);
    closed.stop().await;
}
