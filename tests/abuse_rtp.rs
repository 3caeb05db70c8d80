//! Attack: RTP from strangers ("RTP bleed", media injection) against a running gateway
//! with a real SIPp far end and the webrtc-crate browser.
//!
//! An attacker who can reach the gateway's UDP ports sprays plausible RTP (the
//! negotiated payload type, one SSRC, a running sequence, a payload no one else sends)
//! and RTCP at the SIP-side media ports: while the call rings (before the far end
//! answered), right after the answer (before the far end's first packet), and in the
//! middle of the conversation. Safe outcome: none of it reaches the browser, our RTP
//! keeps going to the SDP address (SIPp's `-rtp_echo` still echoes every tone frame),
//! nothing is ever sent to the attacker, and every injected datagram is counted in
//! `callbridge_rtp_dropped_total{reason="foreign_source"}`. The browser-facing side is
//! attacked the same way: RTP at the gateway's ICE port from an address ICE never
//! validated must not reach the SIP side.
//!
//! The gateway's SIP-side RTP range is one even/odd pair from the tests' port allocator,
//! so the attacker knows the port as a real one would after a few calls.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use callbridge::config::Config;
use common::browser::{Browser, BrowserOptions, PeerOptions, RtpEchoPeer, frame_number};
use common::call::TestCall;
use common::gateway::{TestGateway, http_get, test_config};
use common::sipp::{Sipp, eventually};
use rtc::rtp;
use rtc::shared::marshal::Marshal;
use tokio::net::UdpSocket;

/// Payload of every injected RTP packet: no codec frame of the test looks like it.
const PATTERN: [u8; 160] = [0x5A; 160];
/// SSRC the attacker uses.
const ATTACK_SSRC: u32 = 0x0BAD_F00D;
/// Tone frames the browser sends (3 s).
const FRAMES: u32 = 150;
/// How many of them must come back byte-identical through SIPp's echo.
const ECHOED: usize = 135;

/// The attacker: one UDP socket that sprays packets and counts what the gateway sends
/// back to it (it must be nothing).
struct Attacker {
    socket: Arc<UdpSocket>,
    received: Arc<AtomicUsize>,
    seq: u16,
    ts: u32,
    sent: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Attacker {
    async fn start() -> Attacker {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind attacker"));
        let received = Arc::new(AtomicUsize::new(0));
        let (s, r) = (socket.clone(), received.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while s.recv_from(&mut buf).await.is_ok() {
                r.fetch_add(1, Ordering::SeqCst);
            }
        });
        Attacker {
            socket,
            received,
            seq: 1000,
            ts: 160_000,
            sent: 0,
            task,
        }
    }

    /// Sends `n` PCMU packets (payload type `pt`) with the pattern to `to`.
    async fn spray_rtp(&mut self, to: SocketAddr, n: usize, pt: u8) {
        for _ in 0..n {
            let packet = rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: self.seq,
                    timestamp: self.ts,
                    ssrc: ATTACK_SSRC,
                    ..Default::default()
                },
                payload: Bytes::from_static(&PATTERN),
            };
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
            let bytes = packet.marshal().expect("marshal");
            self.socket.send_to(&bytes, to).await.expect("send");
            self.sent += 1;
        }
    }

    /// Sends `n` RTCP BYE packets (RFC 3550 §6.6) to `to`.
    async fn spray_rtcp_bye(&mut self, to: SocketAddr, n: usize) {
        let mut bye = vec![0x81, 203, 0, 1];
        bye.extend_from_slice(&ATTACK_SSRC.to_be_bytes());
        for _ in 0..n {
            self.socket.send_to(&bye, to).await.expect("send");
            self.sent += 1;
        }
    }

    /// Datagrams the gateway sent to the attacker.
    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of the metric line starting with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// `callbridge_rtp_dropped_total{reason="foreign_source"}` now.
async fn foreign_drops(gw: &TestGateway) -> u64 {
    let text = http_get(gw.admin_addr(), "/metrics").await;
    metric(
        &text,
        r#"callbridge_rtp_dropped_total{reason="foreign_source"}"#,
    )
    .unwrap_or(0)
}

/// Waits until the metric reaches `expected`; the last value seen.
async fn wait_foreign_drops(gw: &TestGateway, expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = foreign_drops(gw).await;
        if n >= expected || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway config whose SIP-side RTP is the one pair `rtp_port`, `rtp_port + 1`.
fn config_with_rtp_at(trunk: SocketAddr, rtp_port: u16) -> Config {
    let mut config = test_config(Some(trunk));
    config.sip.rtp_ports = format!("{rtp_port}-{}", rtp_port + 1);
    config
}

/// Tone frames that came back byte-identical to what the browser sent.
fn echoed_frames(browser: &Browser, sent: &[Bytes]) -> usize {
    let received = browser.received();
    sent.iter()
        .filter(|payload| {
            let n = frame_number(payload);
            received
                .iter()
                .any(|p| frame_number(&p.payload) == n && p.payload == **payload)
        })
        .count()
}

/// Packets the browser received that carry the attacker's payload.
fn injected_at_browser(browser: &Browser) -> usize {
    browser
        .received()
        .iter()
        .filter(|p| p.payload.as_ref() == PATTERN)
        .count()
}

/// Runs the SIP-side attack on a call through a gateway with `symmetric_rtp`; with it
/// on, the phase right after the answer is skipped (see the test below).
async fn sip_side_attack(symmetric_rtp: bool) {
    let rtp_port = common::ports::block(2);
    let mut sipp = Sipp::uas(
        Some(&Sipp::scenario("uas_ring_then_answer.xml")),
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let mut config = config_with_rtp_at(sipp.addr, rtp_port);
    config.media.symmetric_rtp = symmetric_rtp;
    let gw = TestGateway::start(config).await;
    assert_eq!(foreign_drops(&gw).await, 0);
    let rtp_at = SocketAddr::from(([127, 0, 0, 1], rtp_port));
    let rtcp_at = SocketAddr::from(([127, 0, 0, 1], rtp_port + 1));
    let mut attacker = Attacker::start().await;

    let (mut ws, _) = gw.connect_as("alice", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "r1", "+15551234567").await;

    // (a) The call rings: the far end has not answered yet (SIPp answers 2 s after
    // its 180; the spray below takes microseconds after `ringing` arrives).
    call.until(&mut ws, &["ringing"]).await;
    attacker.spray_rtp(rtp_at, 20, 0).await;
    attacker.spray_rtcp_bye(rtcp_at, 5).await;
    call.until(&mut ws, &["answered"]).await;
    if !symmetric_rtp {
        // Answered, but the far end sent nothing yet (it only echoes, and the browser
        // has not started talking). With symmetric RTP this is the latching window the
        // operator accepted (`media.symmetric_rtp_window`), so it is left out there.
        attacker.spray_rtp(rtp_at, 20, 0).await;
        attacker.spray_rtcp_bye(rtcp_at, 5).await;
    }
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );

    // (b) Conversation under way: the far end's media is confirmed.
    let sender = browser.start_sending_tone(FRAMES);
    assert!(
        browser.wait_received(30, Duration::from_secs(10)).await,
        "echo flows before the attack"
    );
    attacker.spray_rtp(rtp_at, 20, 0).await;
    attacker.spray_rtcp_bye(rtcp_at, 5).await;

    let sent = sender.await.expect("tone task");
    assert_eq!(sent.len(), FRAMES as usize);
    let all_back = eventually(Duration::from_secs(10), || {
        echoed_frames(&browser, &sent) >= ECHOED
    })
    .await;
    let drops = wait_foreign_drops(&gw, attacker.sent as u64).await;

    assert_eq!(
        injected_at_browser(&browser),
        0,
        "injected RTP reached the browser"
    );
    assert!(
        all_back,
        "audio both ways: only {}/{FRAMES} tone frames came back through SIPp",
        echoed_frames(&browser, &sent)
    );
    assert_eq!(
        attacker.received(),
        0,
        "the gateway sent media to the attacker (send address moved)"
    );
    assert_eq!(
        drops, attacker.sent as u64,
        "every injected datagram is counted as foreign_source"
    );

    call.hangup(&mut ws).await;
    assert_eq!(call.until(&mut ws, &["ended"]).await["reason"], "hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_side_rtp_from_a_stranger_is_dropped_before_and_after_the_answer() {
    sip_side_attack(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_symmetric_rtp_a_stranger_can_neither_latch_early_nor_take_over() {
    sip_side_attack(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_side_rtp_from_an_unvalidated_source_is_not_relayed_to_sip() {
    // SIPp signals; the SIP side's media is a raw RTP peer of the test (an echo that
    // records everything the gateway sends it), so what reaches the far end is visible.
    let peer = RtpEchoPeer::start(PeerOptions::default()).await;
    let mut sipp = Sipp::uas(
        Some(&Sipp::scenario("uas_media_at.xml")),
        &[
            "-key",
            "rtp_port",
            &peer.addr.port().to_string(),
            "-key",
            "ptime",
            "20",
        ],
    );
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let mut attacker = Attacker::start().await;
    let (mut ws, _) = gw.connect_as("bob", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "b1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    // Bounded by the helper's wait: panics if the gateway never trickles a candidate.
    call.wait_gateway_candidate(&mut ws).await;
    // Before ICE has validated anyone (or just after): plain RTP at every candidate.
    for to in call.gateway_candidates.clone() {
        attacker.spray_rtp(to, 20, 0).await;
    }
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let sender = browser.start_sending_tone(FRAMES);
    assert!(browser.wait_received(30, Duration::from_secs(10)).await);
    // While the browser's media flows.
    for to in call.gateway_candidates.clone() {
        attacker.spray_rtp(to, 20, 0).await;
    }
    let sent = sender.await.expect("tone task");
    let all_back = eventually(Duration::from_secs(10), || {
        echoed_frames(&browser, &sent) >= ECHOED
    })
    .await;

    let seen = peer.seen();
    let injected = seen
        .iter()
        .filter(|p| p.payload.as_ref() == PATTERN)
        .count();
    assert_eq!(injected, 0, "injected RTP was relayed to the SIP side");
    let tone_at_sip = seen
        .iter()
        .filter(|p| frame_number(&p.payload).is_some())
        .count();
    assert!(
        tone_at_sip >= ECHOED,
        "the browser's own audio reached the SIP side ({tone_at_sip}/{FRAMES})"
    );
    assert!(all_back, "and came back");
    assert_eq!(injected_at_browser(&browser), 0);
    assert_eq!(attacker.received(), 0);

    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}
